"""One real bottle (Docker backend, shell provider, egress + git-gate +
supervise) that the faults suite breaks on purpose, and the tools to break
it: kill a daemon in the bundle, watch what the agent sees while it is down.

The bottle is shared by the whole module (starting one costs ~10 s of the
suite's budget); each test leaves it healthy again (daemons restarted,
config restored) and only checks counts relative to what it found.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bot_bottle_testkit.egress import make_test_pki

from tests.bottle_kit import deploy_key, launched, outside_network, write_agent
from tests.escape.outside import Outside
from tests.faults.second_engine import SecondEngine, second_engine

ROUTE_TOKEN = "faults-route-token-5b1e0c"


@dataclass
class Bottle:
    running: Any
    outside: Outside
    slug: str
    home: Path
    docker: Any

    def sh(self, script: str, user: str = "agent", timeout: int = 90) -> tuple[int, str]:
        r = self.running.exec(["timeout", str(timeout), "bash", "-c", script], user=user)
        return r.exit_code, (r.stdout + r.stderr).decode("utf-8", "replace")

    @property
    def bundle(self) -> Any:
        return self.docker.containers.get(f"bb-{self.slug}-sidecars")

    def init_status(self) -> dict[str, dict[str, Any]]:
        result = self.bundle.exec_run(
            ["python", "-m", "bot_bottle_sidecars.init", "ctl", "status"], user="root"
        )
        assert result.exit_code == 0, result.output
        return {d["name"]: d for d in json.loads(result.output)["daemons"]}

    def kill(self, daemon: str, sig: str = "KILL") -> int:
        """``docker exec <bundle> sh -c 'kill -<sig> <pid>'``: the fault comes
        from the host (the image has no kill binary; the shell's builtin)."""
        pid = self.init_status()[daemon]["pid"]
        assert pid, f"{daemon} is not running"
        result = self.bundle.exec_run(["sh", "-c", f"kill -{sig} {int(pid)}"], user="root")
        assert result.exit_code == 0, result.output
        return int(pid)

    def bundle_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.bundle.logs().decode("utf-8", "replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


class Probe:
    """A loop in the agent that repeats one request and records every answer,
    started before a fault and ended once the answers went bad and came back
    (or after ``max_rounds``): the transition is caught whatever the timing."""

    def __init__(self, bottle: Bottle, name: str, request: str, max_rounds: int = 600) -> None:
        self.bottle = bottle
        self.started = f"/tmp/probe-{name}.started"
        # $1: one request; prints one line "<verdict> <detail>" where verdict
        # is up, down (the sidecar's answer) or lost (no answer at all).
        self.script = f"""
set -u
rm -f {self.started}
seen=0; ok=0; n=0
while [ $n -lt {max_rounds} ]; do
  n=$((n+1))
  line=$({request})
  echo "$line"
  [ $n -eq 3 ] && touch {self.started}
  case "$line" in
    down*) seen=1 ;;
    up*) [ $seen -eq 1 ] && ok=$((ok+1)) ;;
  esac
  [ $ok -ge 3 ] && break
  sleep 0.05
done
"""
        self.output: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        _, out = self.bottle.sh(self.script, timeout=120)
        self.output = out.splitlines()

    def __enter__(self) -> Probe:
        import time

        self._thread.start()
        deadline = time.monotonic() + 60
        while self.bottle.running.exec(["test", "-e", self.started], user="root").exit_code:
            assert time.monotonic() < deadline, "the probe never started"
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=150)

    def verdicts(self) -> list[str]:
        """The answers in order, consecutive repeats folded."""
        out: list[str] = []
        for line in self.output:
            if not out or out[-1] != line:
                out.append(line)
        return out


def _bottle_md(gw: str, ca: Path, key: Path, host_key: str, port: int) -> str:
    return f"""\
---
agent_provider:
  template: shell
git_user:
  name: Faults Test
  email: faults@example.test
git_gate:
  repos:
    - name: proj
      url: ssh://git@{gw}:{port}/proj.git
      host_key: {host_key}
      key: {{provider: static, path: {key}}}
egress:
  upstream_ca: {ca}
  routes:
    - host: allowed.test
      auth: {{scheme: Bearer, token_ref: FAULTS_ROUTE_TOKEN}}
extra_hosts:
  allowed.test: {gw}
---
"""


@pytest.fixture(scope="package")
def bottle(
    docker_client: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bottle]:
    tmp = tmp_path_factory.mktemp("faults")
    with outside_network(docker_client) as gw:
        pki = make_test_pki(tmp / "pki", ["allowed.test"])
        outside = Outside(gw, pki).start()
        try:
            key_path = tmp / "deploy_key"
            host_key = deploy_key(key_path)
            md = _bottle_md(gw, pki.ca_cert, key_path, host_key, outside.listener_port)
            write_agent(tmp / "home", "faults", md, prompt="Faults test agent.")
            host_env = {**os.environ, "FAULTS_ROUTE_TOKEN": ROUTE_TOKEN}
            with launched(tmp / "home", "faults", host_env=host_env) as b:
                yield Bottle(b.running, outside, b.plan.slug, tmp / "home", docker_client)
        finally:
            outside.stop()


@pytest.fixture(scope="module")
def second_docker() -> Iterator[SecondEngine]:
    """A private dockerd (tests/faults/second_engine.py) for faults that
    would hurt the shared engine: restart it, kill it, fill its disk. Torn
    down after the module, whatever happened to it."""
    if os.geteuid() != 0:
        pytest.skip("a second dockerd needs root")
    with second_engine() as engine:
        yield engine
