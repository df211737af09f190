"""The Docker image builder's checks that need no engine (builds themselves
are exercised by tests/test_bundle_image.py and tests/test_provider_images.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.provider import ImageSpec
from bot_bottle.imagebuild import ImageBuildError
from bot_bottle_docker.images import ensure_agent_image


def test_a_missing_dockerfile_is_a_clear_error(tmp_path: Path) -> None:
    spec = kit.agent_image_spec("mine", ImageSpec(dockerfile=tmp_path / "nope"))
    with pytest.raises(ImageBuildError, match="does not exist") as info:
        ensure_agent_image(spec)
    assert "'mine'" in info.value.message
    assert info.value.hint and "agent_provider.dockerfile" in info.value.hint
