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
