"""A bottle whose host files belong to a normal user, not root.

The Docker backend may run as root (CI) or as a normal user, whose files the
bundle's daemon users (fixed uids) do not own. Here the backend runs as
root, but every file it writes for the bundle -- configs, the CA, the staged
deploy key, the socket and queue directories -- is handed to an unprivileged
uid before the containers start, as if that user had written them: init
must still read the secrets (root-only mounts, copied per daemon), the relay
and supervise must still write their directories (the ACL entry the owner
set), and every endpoint must answer the agent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

if TYPE_CHECKING:
    import docker

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another uid needs root"),
]

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
OWNER = 60190
TOKEN = "foreign-owner-token-5d1c"


def _chown_tree(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, OWNER, OWNER, follow_symlinks=False)


def _bottle_md(key: Path, host_key: str) -> str:
    # The git-gate upstream is never contacted: the mirror is prepared at
    # start from the key and known_hosts alone.
    return f"""\
---
agent_provider:
  template: shell
git_gate:
  repos:
    - name: proj
      url: ssh://git@upstream.test:2222/proj.git
      host_key: {host_key}
      key: {{provider: static, path: {key}}}
egress:
  routes:
    - host: allowed.test
      auth: {{scheme: Bearer, token_ref: FOREIGN_TOKEN}}
# Pinned to the bundle's loopback: nothing is looked up or sent outside.
extra_hosts:
  upstream.test: 127.0.0.1
  allowed.test: 127.0.0.1
---
"""


@pytest.fixture
def bottle(
    docker_client: docker.DockerClient, base_image: str, tmp_path: Path
) -> Iterator[tuple[Any, Any]]:
    from bot_bottle.gitgate.keys import GateKeys
    from bot_bottle.launcher import provision_context
    from bot_bottle.manifest.store import Manifest
    from bot_bottle.plan import make_plan
    from bot_bottle.plugins import PluginHost
    from bot_bottle.state import StateDir
    from bot_bottle_docker.backend import DockerBackend
    from bot_bottle_shell.provider import ShellProvider

    home = tmp_path / "home"
    (home / "bottles").mkdir(parents=True)
    (home / "agents").mkdir()
    key = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "deploy_key"
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
    (home / "bottles/fo.md").write_text(_bottle_md(key_path, host_key))
    (home / "agents/fo.md").write_text("---\nbottle: fo\n---\n")

    mp = pytest.MonkeyPatch()
    mp.setenv("BOT_BOTTLE_HOME", str(home))
    if HOST_CA.exists():
        mp.setenv("BOT_BOTTLE_BUILD_CA_BUNDLE", str(HOST_CA))
    write_files, stage = DockerBackend._write_files, GateKeys.stage

    def foreign_write_files(self: Any, plan: Any, etc: Path, sock: Path, queue: Path) -> None:
        write_files(self, plan, etc, sock, queue)
        for root in (etc.parent, queue):
            _chown_tree(root)

    def foreign_stage(self: Any) -> Any:
        out = stage(self)
        _chown_tree(self.dest)
        return out

    mp.setattr(DockerBackend, "_write_files", foreign_write_files)
    mp.setattr(GateKeys, "stage", foreign_stage)
    try:
        host = PluginHost().load()
        agent = Manifest(home=home, host=host).agent("fo")
        provider = ShellProvider()
        plan = make_plan(
            agent,
            provider,
            host=host,
            host_env={**os.environ, "FOREIGN_TOKEN": TOKEN},
            ask=lambda name: pytest.fail(f"unexpected prompt for {name}"),
        )
        backend = DockerBackend()
        state = StateDir.for_slug(plan.slug)
        state.create({"slug": plan.slug, "agent": plan.agent, "pid": os.getpid()})
        try:
            with backend.launch(backend.prepare(plan)) as running:
                provider.provision(running, provision_context(plan))
                running.wait_ready()
                yield running, docker_client.containers.get(f"bb-{plan.slug}-sidecars")
        finally:
            state.remove()
    finally:
        mp.undo()


def test_the_daemons_start_from_files_another_user_owns(bottle: tuple[Any, Any]) -> None:
    running, bundle = bottle
    result = bundle.exec_run(["python", "-m", "bot_bottle_sidecars.init", "ctl", "status"])
    status = json.loads(result.output)
    assert all(d["running"] for d in status["daemons"]), status
    # The private copies exist, for their daemon's user alone.
    listing = bundle.exec_run(
        ["stat", "-c", "%n %u %a", "/etc/bot-bottle/ca/mitmproxy-ca.pem",
         "/etc/bot-bottle/git-gate/keys/proj", "/run/bot-bottle/secrets/ca"]
    ).output.decode()  # fmt: skip
    assert "/etc/bot-bottle/ca/mitmproxy-ca.pem 60101 600" in listing
    assert "/etc/bot-bottle/git-gate/keys/proj 60102 600" in listing
    # The host's own copies keep their owner (the mount is read-only).
    assert f"/run/bot-bottle/secrets/ca {OWNER} 700" in listing
    # Every endpoint answers the agent: egress, git-gate (its mirror is
    # served; the upstream is unreachable, which the gate reports), supervise.
    r = running.exec(["sh", "-c", "curl -sS -m 20 http://_egress.local/routes"], user="agent")
    assert json.loads(r.stdout)["routes"][0]["host"] == "allowed.test", r.stderr
    r = running.exec(
        ["sh", "-c", "git ls-remote git://127.0.0.1:9418/proj.git 2>&1; true"], user="agent"
    )
    assert b"git-gate: cannot reach the upstream" in r.stdout, r.stdout
    r = running.exec(["sh", "-c", "curl -sS -m 20 http://127.0.0.1:8765/healthz"], user="agent")
    assert r.exit_code == 0, r.stderr
