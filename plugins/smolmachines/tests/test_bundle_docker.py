"""The bundle side for real: the Docker bundle and the relay on the bottle's
loopback alias, with the VM's commands going to the contract fake (no guest
boots here). What the agent would reach, the host reaches at the alias."""

from __future__ import annotations

import http.client
from typing import Any

import pytest

from bot_bottle_smolmachines.backend import SmolmachinesBackend

pytestmark = pytest.mark.docker


def test_the_relay_serves_the_proxy_on_the_alias_only(
    mini_plan: Any, fake_smolvm: Any, docker_client: Any, base_image: str
) -> None:
    from bot_bottle.egress.config import EgressConfig

    backend = SmolmachinesBackend(kvm=lambda: None)
    # No route: every request is refused (deny by default).
    prepared = backend.prepare(mini_plan(agent_image=base_image, egress_config=EgressConfig()))
    label = f"bot-bottle.slug={prepared.plan.slug}"
    with backend.launch(prepared) as bottle:
        bottle.wait_ready()
        names = {c.name for c in docker_client.containers.list(filters={"label": label})}
        assert names == {prepared.bundle_name, prepared.relay_name}
        conn = http.client.HTTPConnection(prepared.alias, 8080, timeout=10)
        conn.request("GET", "http://example.invalid/", headers={"Host": "example.invalid"})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        # Deny by default: egress answers itself, nothing left the machine.
        assert resp.status == 403, body
        assert "bot-bottle egress refused this request" in body
        conn.close()
        # Only the alias: nothing of this bottle listens on the host's 127.0.0.1.
        relay = docker_client.containers.get(prepared.relay_name)
        argv = " ".join(relay.attrs["Config"]["Entrypoint"])
        assert f"tcp:{prepared.alias}:8080" in argv and "127.0.0.1" not in argv
        assert relay.attrs["HostConfig"]["NetworkMode"] == "host"
        assert fake_smolvm.verbs()[:2] == ["machine create", "machine start"]
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
    assert fake_smolvm.machines() == {}


def test_supervise_answers_the_agent_at_the_alias(
    mini_plan: Any, fake_smolvm: Any, docker_client: Any, base_image: str
) -> None:
    """The MCP endpoint, through the relay on the alias, with the real MCP
    client: supervise accepts the Host the agent sends (the alias, as core's
    plan names it) and still refuses any other (its DNS-rebinding guard)."""
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from bot_bottle.egress.config import EgressConfig
    from bot_bottle.plan import MCP_PORT, endpoint_url

    backend = SmolmachinesBackend(kvm=lambda: None)
    prepared = backend.prepare(
        mini_plan(agent_image=base_image, egress_config=EgressConfig(), supervise=True)
    )
    # What core's plan hands providers as the MCP URL (BottlePlan.supervise_url).
    url = f"{endpoint_url(prepared.plan.agent_host, MCP_PORT)}/mcp"
    assert url == f"http://{prepared.alias}:8765/mcp"

    async def tools() -> list[str]:
        async with (
            httpx2.AsyncClient(timeout=30, trust_env=False) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            return [t.name for t in (await client.list_tools()).tools]

    with backend.launch(prepared) as bottle:
        bottle.wait_ready()
        assert "list-egress-routes" in anyio.run(tools)
        conn = http.client.HTTPConnection(prepared.alias, 8765, timeout=10)
        conn.request("POST", "/mcp", body=b"{}", headers={"Host": "127.0.0.1:8765",
                     "Content-Type": "application/json", "Accept": "application/json"})  # fmt: skip
        resp = conn.getresponse()
        assert resp.status == 421, resp.read()
        conn.close()
