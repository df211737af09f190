"""The workspace's Docker fixtures (an engine that fails in CI when missing,
the local base image) for the provision test on a real container."""

from tests.conftest import base_image, docker_client  # noqa: F401
