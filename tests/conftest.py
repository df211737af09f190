"""Shared fixtures for the cross-package tests.

Docker: tests that need an engine use the ``docker_client`` fixture. In CI
(``CI`` set) a missing engine is a *failure*: .ci/run installs and starts one,
so its absence means the setup broke. Elsewhere the test is skipped with the
reason, so a laptop without Docker can still run the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import docker

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("BOT_BOTTLE_BASE_IMAGE", "bot-bottle/base:trixie")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        msg = f"Docker engine not reachable ({exc}); start dockerd or run .ci/run"
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {BASE_IMAGE} missing: run scripts/base-image.sh")
    return BASE_IMAGE


@pytest.fixture
def unique() -> str:
    """A short unique suffix for names of resources a test creates."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def uv() -> str:
    path = Path(sys.executable).parent / "uv"
    if not path.exists():
        pytest.fail("uv is not installed in the test environment: run 'uv sync'")
    return str(path)


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
