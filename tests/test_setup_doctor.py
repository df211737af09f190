"""``bot-bottle setup`` and ``doctor`` against the real engine: the base image
check, its hint, and making the base image from an image the engine has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bot_bottle_docker.baseimage import Host, engine_hint, setup_hint

if TYPE_CHECKING:
    import docker

BB = [sys.executable, "-m", "bot_bottle"]


def _bb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BB, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "BOT_BOTTLE_HOME": str(tmp_path / "home")}


@pytest.mark.docker
def test_doctor_fails_on_a_missing_base_image_and_setup_makes_it(
    env: dict[str, str], docker_client: docker.DockerClient, base_image: str
) -> None:
    tag = f"bot-bottle/base:test-{uuid.uuid4().hex[:8]}"
    env = {**env, "BOT_BOTTLE_BASE_IMAGE": tag}
    doc = _bb(env, "doctor", "--json")
    checks = {c["what"]: c for c in json.loads(doc.stdout)["checks"]}
    assert doc.returncode == 1
    assert checks["base image"]["level"] == "FAIL" and tag in checks["base image"]["detail"]
    assert "bot-bottle setup" in checks["base image"]["hint"]
    try:
        made = _bb(env, "setup", "--from-image", base_image)
        assert made.returncode == 0, made.stderr
        assert f"base image {tag} created" in made.stdout
        assert docker_client.images.get(tag).id == docker_client.images.get(base_image).id
        again = _bb(env, "setup", "--from-image", base_image)
        assert again.returncode == 0 and "already present" in again.stdout
        doc = _bb(env, "doctor", "--json")
        checks = {c["what"]: c for c in json.loads(doc.stdout)["checks"]}
        assert checks["base image"]["level"] == "OK"
    finally:
        # Only the tag this test made; the image stays (it is the shared base).
        subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)


@pytest.mark.docker
def test_setup_with_a_missing_rootfs_is_a_clear_error(
    env: dict[str, str], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    env = {**env, "BOT_BOTTLE_BASE_IMAGE": f"bot-bottle/base:test-{uuid.uuid4().hex[:8]}"}
    out = _bb(env, "setup", "--rootfs", str(tmp_path / "nope.tar"))
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "hint: " in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("os_release", "system", "engine", "base"),
    [
        ("ID=debian\n", "Linux", "apt-get install docker.io", "apt-get install debootstrap"),
        ("ID=ubuntu\nID_LIKE=debian\n", "Linux", "apt-get install docker.io", "debootstrap"),
        ('ID="fedora"\n', "Linux", "dnf install moby-engine", "dnf install debootstrap"),
        ('ID=rocky\nID_LIKE="rhel centos fedora"\n', "Linux", "dnf install", "debootstrap"),
        ("ID=arch\n", "Linux", "pacman -S docker", "pacman -S debootstrap"),
        ("", "Darwin", "Docker Desktop", "--from-image debian:trixie-slim"),
    ],
)
def test_hints_name_the_hosts_own_package_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, os_release: str, system: str, engine: str,
    base: str,
) -> None:  # fmt: skip
    (tmp_path / "os-release").write_text(os_release)
    host = Host.detect(tmp_path / "os-release")
    host = Host(system, host.distro, host.like)
    monkeypatch.setattr("shutil.which", lambda _name: None)  # no debootstrap here
    assert engine in engine_hint(host)
    assert base in setup_hint(host)
