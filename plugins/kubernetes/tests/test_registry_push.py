"""``BOT_BOTTLE_K8S_REGISTRY``: images pushed to a real registry (Debian's
``docker-registry``, distribution 2.8, started here on loopback) and named by
digest, the digest being the one the registry serves for that manifest."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot_bottle.errors import BotBottleError
from bot_bottle_kubernetes.images import check_registry, push_images
from tests.conftest import base_image, docker_client  # noqa: F401

REGISTRY_BIN = "/usr/bin/docker-registry"
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
])  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    if not Path(REGISTRY_BIN).exists():
        pytest.fail("docker-registry is not installed: apt-get install docker-registry")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    proc = subprocess.Popen(
        [REGISTRY_BIN, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(f"127.0.0.1:{port}", "/v2/").status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"docker-registry did not start: {err[-500:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(registry: str, path: str, headers: dict[str, str] | None = None) -> Any:
    host, port = registry.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def _served_digest(registry: str, repo: str, tag: str) -> str:
    resp = _get(registry, f"/v2/{repo}/manifests/{tag}", {"Accept": MANIFEST_TYPES})
    assert resp.status == 200
    return resp.headers["Docker-Content-Digest"]


@pytest.mark.docker
def test_images_are_pushed_and_named_by_the_served_digest(
    registry: str,
    docker_client: Any,  # noqa: F811
    base_image: str,  # noqa: F811
) -> None:
    refs = push_images({"bundle": base_image}, registry)
    repo, tag = base_image.rsplit(":", 1)
    assert refs["bundle"] == f"{registry}/{repo}@{_served_digest(registry, repo, tag)}"
    # The registry tag was only for the push: the local engine keeps no trace.
    local = [t for i in docker_client.images.list() for t in i.tags if t.startswith(registry)]
    assert local == []
    # A node pulls exactly that (here: the same engine, by digest).
    inspect = subprocess.run(
        ["docker", "manifest", "inspect", "--insecure", refs["bundle"]],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["schemaVersion"] == 2
    # Unchanged image, same reference.
    assert push_images({"bundle": base_image}, registry) == refs


@pytest.mark.docker
def test_an_unreachable_registry_is_a_clear_error(docker_client: Any, base_image: str) -> None:  # noqa: F811
    port = _free_port()  # nothing listens there
    with pytest.raises(BotBottleError) as err:
        push_images({"bundle": base_image}, f"127.0.0.1:{port}")
    assert "cannot push" in str(err.value) and err.value.hint


@pytest.mark.parametrize("bad", ["https://registry.test", "registry test", "", "reg/UPPER"])
def test_a_bad_registry_reference_is_refused(bad: str) -> None:
    with pytest.raises(BotBottleError, match="not a registry reference"):
        check_registry(bad)
