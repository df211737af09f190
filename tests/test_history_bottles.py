"""What outlives a real bottle, and the operator's answer to a refused push.

Real bottles (tests/bottle_kit.py: Docker backend, shell provider, the real
sidecar bundle) and a real sshd upstream on a network the test creates.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.bottle_kit import Launched, launched, outside_network, write_agent
from tests.sshd_upstream import SshRemote, ssh_remote

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

BB = [sys.executable, "-m", "bot_bottle"]
ROUTE_TOKEN = "history-route-token-5e2b7c9a41"
BOTTLE_SECRET = "plain-words-" + "kept-out-of-logs-3f9d"
#: Token-shaped test values (the built-in token_patterns detector matches them).
GITHUB = "ghp_" + "cLq0tI1jkszp88r7fYkDc96kVncLVP41QdEW"
AWS = "AKIA" + "C2GKUKXJ54644TYI"
MCP = (
    "curl -sS -X POST http://127.0.0.1:8765/mcp -H 'Content-Type: application/json' "
    "-H 'Accept: application/json, text/event-stream' -d "
)


@dataclass
class World:
    gateway: str
    home: Path
    remote: SshRemote

    def env(self) -> dict[str, str]:
        return {**os.environ, "BOT_BOTTLE_HOME": str(self.home)}

    def bb(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BB, *args], env=self.env(), capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture
def world(docker_client: docker.DockerClient, base_image: str, tmp_path: Path) -> Iterator[World]:
    with outside_network(docker_client) as gw, ssh_remote(tmp_path / "ssh", gw) as remote:
        remote.new_repo("proj")
        home = tmp_path / "home"
        r = remote
        write_agent(
            home,
            "hist",
            f"""\
---
agent_provider:
  template: shell
env:
  PROJECT_PASSPHRASE: ${{HIST_BOTTLE_SECRET}}
git_user:
  name: History Test
  email: history@example.test
git_gate:
  repos:
    - name: proj
      url: {r.url("proj")}
      host_key: {r.host_key}
      key: {{provider: static, path: {r.deploy_key}}}
egress:
  log: full
  routes:
    - host: allowed.test
      auth: {{scheme: Bearer, token_ref: HIST_ROUTE_TOKEN}}
extra_hosts:
  allowed.test: {gw}
---
""",
        )
        yield World(gw, home, remote)


def _launch(world: World) -> AbstractContextManager[Launched]:
    host_env = {**os.environ, "HIST_ROUTE_TOKEN": ROUTE_TOKEN, "HIST_BOTTLE_SECRET": BOTTLE_SECRET}
    return launched(world.home, "hist", host_env=host_env)


def _kept_files(world: World, slug: str) -> list[Path]:
    root = world.home / "history" / slug
    return [p for p in root.rglob("*") if p.is_file()]


def test_logs_after_teardown_show_the_refusal_and_the_answered_proposal(
    world: World, docker_client: docker.DockerClient
) -> None:
    from bot_bottle.contracts.supervise import Decision, SuperviseQueue, default_queue_dir

    with _launch(world) as bottle:
        slug = bottle.plan.slug
        refused = bottle.as_agent("sh", "-c", "curl -sS https://not-on-the-list.test/ || true")
        assert "host-not-allowed" in refused
        # A token in a request to an allowed host: DLP blocks it, the log says so redacted.
        dlp = bottle.as_agent(
            "sh", "-c", f"curl -sS https://allowed.test/x -H 'X-Leak: {GITHUB}' || true"
        )
        assert "refused" in dlp
        call = {
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "capability-block", "arguments": {
                "dockerfile": "RUN apt-get install -y jq",
                "justification": "jq parses the API's JSON",
            }},
        }  # fmt: skip
        reply = bottle.as_agent("sh", "-c", MCP + shlex.quote(json.dumps(call)))
        (pid,) = set(re.findall(r"p-\d{8}T\d{6}Z-[0-9a-f]{12}", reply))
        # The operator answers through the queue's host-side API.
        queue = SuperviseQueue(default_queue_dir(slug, world.env()), slug)
        queue.respond(pid, Decision.REJECTED, comment="use python3's json module instead")
        # Live: the logs are there while the bottle runs, and the agent cannot reach them.
        live = world.bb("logs", slug, "--daemon", "egress")
        assert live.returncode == 0 and "not-on-the-list.test" in live.stdout
        agent = docker_client.containers.get(f"bb-{slug}-agent")
        mounts = [m["Source"] for m in agent.attrs["Mounts"]]
        assert not any(str(world.home / "history") in m for m in mounts), mounts
        assert not any("gate-allow" in m for m in mounts), mounts
        found = bottle.running.exec(["sh", "-c", "ls /var/log/bot-bottle 2>&1"], user="root")
        assert b"egress.jsonl" not in found.stdout

    assert not (world.home / "state" / slug).exists()
    assert not default_queue_dir(slug, world.env()).exists()
    shown = world.bb("logs", slug)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "not-on-the-list.test" in text and "host-not-allowed" in text
    assert pid in text and "jq parses the API's JSON" in text
    assert "rejected" in text and "use python3's json module instead" in text

    as_json = world.bb("logs", slug, "--json", "--daemon", "supervise")
    recs = [json.loads(line) for line in as_json.stdout.splitlines()]
    events = [(r["event"], r.get("decision")) for r in recs if r.get("proposal_id") == pid]
    # supervise's own log line, then the kept proposal and its answer, in time order.
    assert events[-1] == ("proposal answered", "rejected")
    assert {("proposal", None), ("proposal_submitted", None)} <= set(events)

    assert {r["daemon"] for r in recs} == {"supervise"}

    kept = _kept_files(world, slug)
    names = {p.relative_to(world.home / "history" / slug).as_posix() for p in kept}
    assert {"bottle.json", "logs/egress.jsonl", "logs/init.jsonl"} <= names
    assert f"proposals/{pid}.response.json" in names
    for path in kept:
        data = path.read_bytes()
        for secret in (ROUTE_TOKEN, BOTTLE_SECRET, GITHUB):
            assert secret.encode() not in data, f"{secret[:6]}... in {path}"

    bad = world.bb("logs", "no-such-bottle")
    assert bad.returncode == 1 and bad.stderr.startswith("error: no logs kept")


def test_cleanup_removes_history_only_past_the_retention(world: World) -> None:
    from bot_bottle.history import BottleHistory

    old, fresh = (BottleHistory(world.home / "history" / s) for s in ("old-1", "fresh-1"))
    old.begin({"slug": "old-1"})
    old.end()
    fresh.begin({"slug": "fresh-1"})
    fresh.end()
    info = old.info()
    info["ended_at"] = "2020-01-01T00:00:00+00:00"
    (old.path / "bottle.json").write_text(json.dumps(info))
    out = world.bb("cleanup", "--yes", "--history-days", "7")
    assert out.returncode == 0, out.stderr
    assert not old.path.exists() and fresh.path.exists()
    assert world.bb("cleanup", "--yes", "--history-days", "-1").returncode == 1


def test_an_allowed_finding_goes_upstream_and_another_token_is_still_refused(
    world: World,
) -> None:
    remote = world.remote
    bare = remote.bare("proj")
    with _launch(world) as bottle:
        slug = bottle.plan.slug
        first = (
            f"set -e; git clone -q {remote.url('proj')} ~/proj; cd ~/proj; "
            f"echo 'example = {GITHUB}' > fixture.txt; git add fixture.txt; "
            "git commit -qm 'test fixture'; git push origin HEAD:main 2>&1 || true"
        )
        refused = bottle.as_agent("bash", "-c", first)
        assert "push rejected" in refused
        (fid,) = set(re.findall(r"\[finding (gf-[0-9a-f]{20})\]", refused))
        assert remote.log_of(bare) == ["initial"]

        # Bad input first: a malformed id, and an id no refusal named.
        bad = world.bb("gate", "allow", slug, "gf-nothex")
        assert bad.returncode == 1 and "invalid finding id" in bad.stderr
        unknown = world.bb("gate", "allow", slug, "gf-" + "0" * 20)
        assert unknown.returncode == 1 and "has refused no push" in unknown.stderr
        assert not (world.home / "audit.jsonl").exists()

        ok = world.bb("gate", "allow", slug, fid, "--comment", "a documented example token")
        assert ok.returncode == 0, ok.stderr
        assert fid in ok.stdout
        twice = world.bb("gate", "allow", slug, fid)
        assert twice.returncode == 0 and "already allowed" in twice.stdout

        # The same push plus a commit with another token: that one still blocks.
        second = (
            f"set -e; cd ~/proj; echo 'aws = {AWS}' > more.txt; git add more.txt; "
            "git commit -qm 'more'; git push origin HEAD:main 2>&1 || true"
        )
        mixed = bottle.as_agent("bash", "-c", second)
        assert "push rejected: 1 secret(s)" in mixed, mixed
        assert "allowed by the operator: token_patterns/github-pat" in mixed
        assert "aws" in mixed.lower() and "more.txt" in mixed
        assert remote.log_of(bare) == ["initial"]

        # Without it, the same content as the refused push goes upstream.
        again = bottle.as_agent(
            "bash",
            "-c",
            "set -e; cd ~/proj; git reset -q --hard HEAD~1; git push origin HEAD:main 2>&1",
        )
        assert "forwarded" in again
        assert remote.log_of(bare) == ["test fixture", "initial"]

    (entry,) = [json.loads(line) for line in (world.home / "audit.jsonl").read_text().splitlines()]
    assert entry["action"] == "gate.allow" and entry["bottle"] == slug
    assert entry["finding"] == fid and entry["file"] == "fixture.txt"
    assert entry["rule"] == "github-pat" and entry["comment"] == "a documented example token"
    assert len(entry["commit"]) == 40
    for path in [world.home / "audit.jsonl", *_kept_files(world, slug)]:
        data = path.read_bytes()
        for secret in (GITHUB, AWS, ROUTE_TOKEN, BOTTLE_SECRET):
            assert secret.encode() not in data, f"{secret[:6]}... in {path}"
    # The kept git-gate log says who let what through.
    shown = world.bb("logs", slug, "--daemon", "git-gate")
    assert "finding allowed by the operator" in shown.stdout and fid in shown.stdout
