"""A real bottle (Docker backend, shell provider) and the outside world it is attacked from."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from bot_bottle_sidecars.egress.testing import make_test_pki
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.escape.outside import Outside

if TYPE_CHECKING:
    import docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
ROUTE_TOKEN = "escape-route-token-7f3a9c2e1d"
#: A bottle env value from the host (``${VAR}``): the agent can read it, it
#: matches no token pattern, and it must not leave by push or request.
BOTTLE_SECRET = "plain-words-" + "the-agent-can-read-81c4"
SECRETS = {
    "github": "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",
    "aws": "AKIAC2GKUKXJ54644TYI",
    "gitlab": "glpat-ZYsSJoj8E27-8wdGmYdi",
}


@dataclass
class Bottle:
    running: Any
    outside: Outside
    slug: str

    def sh(self, script: str, user: str = "agent", timeout: int = 60) -> tuple[int, str]:
        r = self.running.exec(["timeout", str(timeout), "bash", "-c", script], user=user)
        return r.exit_code, (r.stdout + r.stderr).decode("utf-8", "replace")


def _bottle_md(gw: str, ca: Path, key: Path, host_key: str, port: int) -> str:
    return f"""\
---
agent_provider:
  template: shell
env:
  PROJECT_PASSPHRASE: ${{ESCAPE_BOTTLE_SECRET}}
git_user:
  name: Escape Test
  email: escape@example.test
git_gate:
  repos:
    - name: proj
      url: ssh://git@{gw}:{port}/proj.git
      host_key: {host_key}
      key: {{provider: static, path: {key}}}
egress:
  log: full
  upstream_ca: {ca}
  routes:
    - host: allowed.test
      auth: {{scheme: Bearer, token_ref: ESCAPE_ROUTE_TOKEN}}
extra_hosts:
  allowed.test: {gw}
  other.test: {gw}
---
"""


@pytest.fixture(scope="module")
def bottle(
    docker_client: docker.DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bottle]:
    from bot_bottle.launcher import provision_bottle, provision_context
    from bot_bottle.manifest.store import Manifest
    from bot_bottle.plan import make_plan
    from bot_bottle.plugins import PluginHost
    from bot_bottle.state import StateDir
    from bot_bottle_docker.backend import DockerBackend
    from bot_bottle_shell.provider import ShellProvider

    tmp = tmp_path_factory.mktemp("escape")
    unique = uuid.uuid4().hex[:8]
    net = docker_client.networks.create(
        f"bbtest-outside-{unique}", driver="bridge", labels={"bot-bottle.test": unique}
    )
    mp = pytest.MonkeyPatch()
    outside: Outside | None = None
    try:
        net.reload()
        gw = net.attrs["IPAM"]["Config"][0]["Gateway"]
        pki = make_test_pki(tmp / "pki", ["allowed.test", "other.test"])
        outside = Outside(gw, pki).start()
        home = tmp / "home"
        (home / "bottles").mkdir(parents=True)
        (home / "agents").mkdir()
        key = ed25519.Ed25519PrivateKey.generate()
        key_path = tmp / "deploy_key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        host_key = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        (home / "bottles/esc.md").write_text(
            _bottle_md(gw, pki.ca_cert, key_path, host_key, outside.listener_port)
        )
        (home / "agents/esc.md").write_text("---\nbottle: esc\n---\nEscape test agent.\n")
        mp.setenv("BOT_BOTTLE_HOME", str(home))
        if HOST_CA.exists():
            # Builds behind this machine's TLS-inspecting proxy; the same CA
            # as tests/test_bundle_image.py, so the bundle image is shared.
            mp.setenv("BOT_BOTTLE_BUILD_CA_BUNDLE", str(HOST_CA))
        host = PluginHost().load()
        agent = Manifest(home=home, host=host).agent("esc")
        provider = ShellProvider()
        plan = make_plan(
            agent,
            provider,
            host=host,
            host_env={
                **os.environ,
                "ESCAPE_ROUTE_TOKEN": ROUTE_TOKEN,
                "ESCAPE_BOTTLE_SECRET": BOTTLE_SECRET,
            },
            ask=lambda name: pytest.fail(f"unexpected prompt for {name}"),
        )
        backend = DockerBackend()
        state = StateDir.for_slug(plan.slug)
        state.create({"slug": plan.slug, "agent": plan.agent, "pid": os.getpid()})
        try:
            with backend.launch(backend.prepare(plan)) as running:
                provision_bottle(provider, running, provision_context(plan))
                running.wait_ready()
                yield Bottle(running, outside, plan.slug)
        finally:
            state.remove()
    finally:
        mp.undo()
        if outside is not None:
            outside.stop()
        net.remove()
