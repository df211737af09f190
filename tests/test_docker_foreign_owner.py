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

from tests.bottle_kit import deploy_key, launched, write_agent

if TYPE_CHECKING:
    import docker

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another uid needs root"),
]

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
    from bot_bottle_sidecars.launch.keys import GateKeys

    from bot_bottle_docker.backend import DockerBackend

    home = tmp_path / "home"
    key_path = tmp_path / "deploy_key"
    write_agent(home, "fo", _bottle_md(key_path, deploy_key(key_path)))
    write_files, stage = DockerBackend._write_files, GateKeys.stage

    def foreign_write_files(self: Any, plan: Any, etc: Path, sock: Path, queue: Path) -> None:
        from bot_bottle.history import BottleHistory

        write_files(self, plan, etc, sock, queue)
        for root in (etc.parent, queue, BottleHistory.for_slug(plan.slug).path):
            _chown_tree(root)

    def foreign_stage(self: Any) -> Any:
        out = stage(self)
        _chown_tree(self.dest)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(DockerBackend, "_write_files", foreign_write_files)
    mp.setattr(GateKeys, "stage", foreign_stage)
    try:
        with launched(home, "fo", host_env={**os.environ, "FOREIGN_TOKEN": TOKEN}) as b:
            yield b.running, docker_client.containers.get(f"bb-{b.plan.slug}-sidecars")
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
    # init keeps every daemon's log in the owner's history directory, readable by the owner.
    from bot_bottle.history import BottleHistory

    logs = BottleHistory.for_slug(bundle.labels["bot-bottle.slug"]).logs_dir
    assert logs.stat().st_uid == OWNER
    for name in ("egress", "git-gate", "supervise", "init"):
        path = logs / f"{name}.jsonl"
        assert path.stat().st_size > 0 and path.stat().st_mode & 0o004, name
