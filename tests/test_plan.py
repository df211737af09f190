"""core's launch plan (pure) with the shell provider, and the bundle layout it renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bot_bottle_sidecars.layout import bundle_files, init_plan
from bot_bottle_testkit.manifest import shell_agent

from bot_bottle.contracts.provider import GUEST_CA_PATH
from bot_bottle.errors import BotBottleError
from bot_bottle.plan import CA_ENV_VARS, make_plan
from bot_bottle.plugins import PluginHost
from bot_bottle.state import StateDir
from bot_bottle_shell.provider import ShellProvider

TOKEN = "route-token-value-123"

BOTTLE = """\
---
agent_provider:
  template: shell
env:
  LITERAL: plain
  ASKED: ?prompt
  FROM_HOST: pre-${HOST_THING}-post
git_user:
  name: Bottle User
git_gate:
  repos:
    - name: proj
      url: ssh://git@git.example.test/me/proj.git
      host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHM/us+yJ8sNmo4On6iamuGgHQiQ62/N1DN4AwBLqQy2
      key: {provider: static, path: /nonexistent/key}
egress:
  routes:
    - host: api.example.test
      auth: {scheme: Bearer, token_ref: ROUTE_TOKEN}
extra_hosts:
  api.example.test: 10.9.8.7
---
"""


@pytest.fixture
def agent(bot_bottle_home: Path, bot_bottle_host: PluginHost):
    return shell_agent(bot_bottle_home, bot_bottle_host, BOTTLE, agent_body="You are a test.\n")


def _plan(agent, **kw):
    env = {"HOST_THING": "X", "ROUTE_TOKEN": TOKEN, **kw.pop("env", {})}
    return make_plan(
        agent,
        ShellProvider(),
        backend="docker",
        host_env=env,
        ask=lambda name: f"asked-{name}",
        **kw,
    )


def test_env_forms_proxy_and_ca_variables(agent) -> None:
    plan = _plan(agent)
    env = {k: v.reveal() for k, v in plan.agent_env.items()}
    assert env["LITERAL"] == "plain"
    assert env["ASKED"] == "asked-ASKED"
    assert env["FROM_HOST"] == "pre-X-post"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[name] == "http://127.0.0.1:8080"
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    for name in CA_ENV_VARS:
        assert env[name] == GUEST_CA_PATH
    # The route's token is in no agent variable, only in an egress slot.
    assert TOKEN not in json.dumps(env)
    slots = {k: v.reveal() for k, v in plan.egress_tokens.items()}
    assert slots["EGRESS_TOKEN_1"] == TOKEN
    # Prompted and interpolated values go to egress too, for known_secrets
    # DLP; literals do not (they are in the bottle file anyway).
    assert sorted(v for k, v in slots.items() if k.startswith("EGRESS_SECRET_")) == [
        "asked-ASKED",
        "pre-X-post",
    ]
    # ...and to git-gate, whose push scan looks for the same values; each
    # daemon gets its own prefix (init hands each to its owner only).
    gate_slots = {k: v.reveal() for k, v in plan.gitgate_secrets.items()}
    assert sorted(gate_slots) == ["GITGATE_SECRET_0", "GITGATE_SECRET_1"]
    assert sorted(gate_slots.values()) == ["asked-ASKED", "pre-X-post"]
    assert set(plan.bundle_env()) == set(slots) | set(gate_slots)
    from bot_bottle_sidecars.layout import init_plan

    daemons = {d["name"]: d for d in init_plan(plan)["daemons"]}  # type: ignore[union-attr]
    assert daemons["git-gate"]["env"] == ["GITGATE_SECRET_*"]
    assert "GITGATE_SECRET_*" not in daemons["egress"]["env"]
    assert TOKEN not in repr(plan)


def test_git_gate_and_user_config(agent) -> None:
    plan = _plan(agent)
    entries = dict(plan.git_config)
    assert entries["url.git://127.0.0.1:9418/proj.git.insteadOf"] in (
        "ssh://git@git.example.test/me/proj.git",
        "git@git.example.test:me/proj.git",
    )
    assert entries["user.name"] == "Bottle User"
    assert plan.extra_hosts == {"api.example.test": "10.9.8.7"}
    assert plan.slug.startswith("a1-")
    assert _plan(agent).slug != plan.slug


def test_default_endpoint_host_is_the_agents_loopback(agent) -> None:
    from bot_bottle.contracts.backend import Backend

    plan = _plan(agent)
    assert plan.agent_host == "127.0.0.1" == Backend.agent_endpoint_host(None, plan.slug)  # type: ignore[arg-type]
    env = {k: v.reveal() for k, v in plan.agent_env.items()}
    assert env["NO_PROXY"] == "localhost,127.0.0.1,::1"
    assert plan.supervise_url == "http://127.0.0.1:8765/mcp"


def test_a_backends_endpoint_host_names_every_agent_side_endpoint(agent) -> None:
    """A backend whose agent is a VM names where its relay listens; core
    writes that host into the proxy variables, git-gate's rewrites, the MCP
    URL, the agent relay's listen addresses and supervise's Host check."""
    from bot_bottle_sidecars.layout import agent_relay_argv

    seen: list[str] = []

    def host_for(slug: str) -> str:
        seen.append(slug)
        return "sidecars.bottle.internal"

    plan = _plan(agent, endpoint_host=host_for)
    assert seen == [plan.slug] and plan.agent_host == "sidecars.bottle.internal"
    env = {k: v.reveal() for k, v in plan.agent_env.items()}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[name] == "http://sidecars.bottle.internal:8080"
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1,sidecars.bottle.internal"
    entries = dict(plan.git_config)
    assert "url.git://sidecars.bottle.internal:9418/proj.git.insteadOf" in entries
    assert not any("127.0.0.1" in k for k in entries)
    assert plan.supervise_url == "http://sidecars.bottle.internal:8765/mcp"
    assert plan.proxy_url == "http://sidecars.bottle.internal:8080"
    relay = agent_relay_argv(plan)
    assert "tcp:sidecars.bottle.internal:9418=unix:/run/bot-bottle/sock/git.sock" in relay
    assert "tcp:10.0.0.5:8080=unix:/run/bot-bottle/sock/proxy.sock" in agent_relay_argv(
        plan, listen_host="10.0.0.5"
    )
    files = bundle_files(plan)
    daemons = {d["name"]: d["argv"] for d in json.loads(files["init-plan.json"])["daemons"]}
    sup = daemons["supervise"]
    assert sup[sup.index("--allowed-host") + 1] == "sidecars.bottle.internal:8765"
    # Inside the bundle every daemon still listens on its own loopback.
    assert daemons["egress"][daemons["egress"].index("--listen-host") + 1] == "127.0.0.1"


def test_a_bad_endpoint_host_is_refused(agent) -> None:
    with pytest.raises(BotBottleError, match="endpoint host: not an IPv4 address or a host name"):
        _plan(agent, endpoint_host=lambda _slug: "bad host/with spaces")


def test_missing_route_token_names_the_variable(agent) -> None:
    with pytest.raises(BotBottleError) as err:
        make_plan(
            agent, ShellProvider(), backend="docker", host_env={"HOST_THING": "X"}, ask=lambda n: ""
        )
    assert "ROUTE_TOKEN" in err.value.message


def test_bundle_files_hold_no_secret_and_loopback_only(agent) -> None:
    plan = _plan(agent)
    files = bundle_files(plan)
    for secret in (TOKEN, "asked-ASKED", "pre-X-post"):
        assert secret not in json.dumps(files)
    daemons = {d["name"]: d for d in init_plan(plan)["daemons"]}  # type: ignore[union-attr]
    assert set(daemons) == {"egress", "git-gate", "supervise", "relay"}
    assert daemons["egress"]["env"] == ["EGRESS_TOKEN_*", "EGRESS_SECRET_*"]
    # No other daemon may be granted a credential slot (init refuses such a plan).
    for name in ("git-gate", "supervise", "relay"):
        assert not any(v.startswith("EGRESS") for v in daemons[name].get("env", []))
    for name in ("egress", "git-gate", "supervise"):
        argv = daemons[name]["argv"]
        assert "127.0.0.1" in argv and "0.0.0.0" not in argv  # noqa: S104
    # Each daemon its own user; the secrets reach egress and git-gate only,
    # through init's private copies (the plan is valid for init).
    from bot_bottle_sidecars.init.plan import parse_plan
    from bot_bottle_sidecars.layout import CA_DIR, DAEMON_USERS, GATE_KEYS

    init = parse_plan(init_plan(plan))
    assert {d.name: d.user for d in init.daemons} == {
        name: user.name for name, user in DAEMON_USERS.items()
    }
    copies = {d.name: [dst for _, dst in d.copies] for d in init.daemons if d.copies}
    assert copies == {"egress": [CA_DIR], "git-gate": [GATE_KEYS]}
    egress = json.loads(files["egress/egress.json"])
    assert egress["extra_hosts"] == {"api.example.test": "10.9.8.7"}
    assert egress["routes"][0]["auth"]["token_slot"] == "EGRESS_TOKEN_1"


def test_state_dir_preserve_and_remove(bot_bottle_home: Path) -> None:
    state = StateDir.for_slug("a1-abcdef")
    state.create({"agent": "a1", "pid": 1})
    assert state.metadata()["agent"] == "a1"
    state.run_dir.mkdir()
    state.preserve("agent exited with 3")
    assert state.preserved and not state.run_dir.exists()
    state.remove()
    assert not state.path.exists()
