"""The operator half, end to end, on a REAL bottle (Docker backend, shell
provider, the real sidecar bundle): the agent is refused a host, asks for it
with ``egress-request`` over MCP (the SDK client, through the bottle's relay
socket), the operator answers with the headless CLI, and the agent's retry
goes through the same running bottle. The "outside" is an HTTPS server on
the gateway of a network the test creates, pinned by the bottle's own
``extra_hosts`` and trusted through its ``egress.upstream_ca``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import pytest
from bot_bottle_testkit.egress import make_test_pki
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.bottle_kit import Launched, launched, outside_network, write_agent
from tests.escape.outside import Outside

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

CLI = str(Path(sys.executable).parent / "bot-bottle")
TOKEN = "ops-route-token-5e1f0a9b7c"


@dataclass
class World:
    bottle: Launched
    home: Path
    outside: Outside

    @property
    def slug(self) -> str:
        return self.bottle.plan.slug

    def status(self, host: str) -> str:
        """The HTTP status the agent gets for https://host/ (curl, through egress)."""
        return self.bottle.as_agent(
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
            f"https://{host}/",
        ).strip()  # fmt: skip

    def mcp(self, tool: str, args: dict[str, Any]) -> Any:
        sock = self.home / "state" / self.slug / "run" / "sock" / "mcp.sock"

        async def go() -> Any:
            transport = httpx2.AsyncHTTPTransport(uds=str(sock))
            async with (
                httpx2.AsyncClient(transport=transport, timeout=30) as http,
                Client(
                    streamable_http_client("http://127.0.0.1:8765/mcp", http_client=http)
                ) as client,
            ):
                return await client.call_tool(tool, args)

        return anyio.run(go)

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BOT_BOTTLE_HOME": str(self.home)}
        return subprocess.run(
            [CLI, *argv], capture_output=True, text=True, env=env, check=False, timeout=120
        )

    def audit(self) -> list[dict[str, Any]]:
        import json

        path = self.home / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def world(
    docker_client: docker.DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("operator")
    home = tmp / "home"
    with outside_network(docker_client) as gw:
        pki = make_test_pki(tmp / "pki", ["wanted.test", "other.test", "cred.test"])
        outside = Outside(gw, pki).start()
        try:
            write_agent(
                home,
                "ops",
                "---\nagent_provider:\n  template: shell\n"
                f"egress:\n  log: full\n  upstream_ca: {pki.ca_cert}\n  routes:\n"
                "    - host: cred.test\n      auth: {scheme: Bearer, token_ref: OPS_TOKEN}\n"
                f"extra_hosts:\n  wanted.test: {gw}\n  other.test: {gw}\n  cred.test: {gw}\n---\n",
            )
            host_env = {**os.environ, "OPS_TOKEN": TOKEN}
            with launched(home, "ops", host_env=host_env) as bottle:
                yield World(bottle, home, outside)
        finally:
            outside.stop()


def _bundle_started(docker_client: docker.DockerClient, slug: str) -> tuple[str, str]:
    c = docker_client.containers.get(f"bb-{slug}-sidecars")
    return c.id or "", c.attrs["State"]["StartedAt"]


def test_an_approved_egress_request_opens_the_host_without_a_restart(
    world: World, docker_client: docker.DockerClient
) -> None:
    assert world.status("wanted.test") == "403"
    started = _bundle_started(docker_client, world.slug)
    agent_id = world.bottle.running.container.id

    asked = world.mcp("egress-request", {"host": "wanted.test", "justification": "test data"})
    assert not asked.is_error, asked.content
    pid = asked.structured_content["proposal_id"]

    listed = world.cli("proposals", "list")
    assert listed.returncode == 0 and pid in listed.stdout and "allow wanted.test" in listed.stdout
    shown = world.cli("proposals", "show", pid)
    assert shown.returncode == 0, shown.stderr
    assert "+wanted.test" in shown.stdout and "live reload, no restart" in shown.stdout

    approved = world.cli("proposals", "approve", pid, "--comment", "ok for today")
    assert approved.returncode == 0, approved.stderr

    status = world.mcp("capability-status", {"proposal_id": pid}).structured_content
    assert status["status"] == "approved" and status["route"]["host"] == "wanted.test"
    assert "no restart" in status["message"]
    assert world.status("wanted.test") == "200"
    # The same bottle: neither the bundle nor the agent was restarted.
    assert _bundle_started(docker_client, world.slug) == started
    assert world.bottle.running.container.id == agent_id
    actions = [(e["action"], e.get("proposal"), e.get("bottle")) for e in world.audit()]
    assert ("proposal.approve", pid, world.slug) in actions
    assert ("egress.allow", pid, world.slug) in actions
    audit = world.cli("audit", "--json")
    assert audit.returncode == 0 and pid in audit.stdout


def test_a_rejected_request_leaves_the_host_refused(world: World) -> None:
    assert world.status("other.test") == "403"
    asked = world.mcp("egress-request", {"host": "other.test", "justification": "curious"})
    pid = asked.structured_content["proposal_id"]
    rejected = world.cli("proposals", "reject", pid, "--comment", "not needed")
    assert rejected.returncode == 0, rejected.stderr
    status = world.mcp("capability-status", {"proposal_id": pid}).structured_content
    assert status["status"] == "rejected" and status["comment"] == "not needed"
    assert world.status("other.test") == "403"
    assert ("proposal.reject", pid) in [(e["action"], e.get("proposal")) for e in world.audit()]
    again = world.cli("proposals", "approve", pid)
    assert again.returncode == 1 and "already rejected" in again.stderr


def test_the_bottles_credential_route_cannot_be_requested(world: World) -> None:
    asked = world.mcp("egress-request", {"host": "cred.test", "justification": "widen it"})
    assert asked.is_error and "credential route" in asked.content[0].text


def test_egress_allow_and_deny_change_the_running_bottle(world: World) -> None:
    allowed = world.cli("egress", "allow", world.slug, "other.test", "--comment", "short task")
    assert allowed.returncode == 0, allowed.stderr
    assert world.status("other.test") == "200"
    routes = world.cli("egress", "routes", world.slug)
    assert routes.returncode == 0 and "other.test" in routes.stdout
    assert "cred.test" in routes.stdout and "injected" in routes.stdout
    assert TOKEN not in routes.stdout
    denied = world.cli("egress", "deny", world.slug, "other.test")
    assert denied.returncode == 0, denied.stderr
    assert world.status("other.test") == "403"
    # A credential route is not edited live.
    refused = world.cli("egress", "allow", world.slug, "cred.test", "--path", "/")
    assert refused.returncode == 1 and "credential route" in refused.stderr
    assert world.status("cred.test") == "200"
