"""The apple_container backend against the contract fake of ``container``.

Apple's CLI cannot run on Linux; ``fake_container.py`` answers as its
documented commands do and records every argv, so these tests check the
exact commands, their order, the failure paths and the teardown on each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bot_bottle_sidecars.layout import DAEMON_USERS
from bot_bottle_testkit.manifest import GIT_GATE_BOTTLE, shell_agent

from bot_bottle.contracts.backend import CleanupItem
from bot_bottle.contracts.provider import GUEST_CA_PATH
from bot_bottle.errors import BotBottleError
from bot_bottle.imagebuild import ImageBuildError, ImageSpec
from bot_bottle.plan import make_plan
from bot_bottle.plugins import PluginHost
from bot_bottle.state import home_id
from bot_bottle_apple_container import backend as backend_mod
from bot_bottle_apple_container.backend import AGENT_HOST, AppleContainerBackend
from bot_bottle_apple_container.cli import ContainerCLIError
from bot_bottle_apple_container.images import ensure_image
from bot_bottle_shell.provider import ShellProvider

from .conftest import Fake

TOKEN = "route-token-secret-4711"
BOTTLE = """\
---
agent_provider:
  template: shell
supervise: false
egress:
  routes:
    - host: api.example.test
      auth: {scheme: Bearer, token_ref: ROUTE_TOKEN}
extra_hosts:
  api.example.test: 10.9.8.7
---
"""


def _plan(home: Path, host: PluginHost, bottle: str = BOTTLE, **replace: Any) -> Any:
    agent = shell_agent(home, host, bottle)
    plan = make_plan(
        agent,
        ShellProvider(),
        backend="apple_container",
        host_env={"ROUTE_TOKEN": TOKEN},
        endpoint_host=AppleContainerBackend().agent_endpoint_host,
    )
    return dataclasses.replace(
        plan, **{"agent_image": "agent:img", "bundle_image": "bundle:img", **replace}
    )


@pytest.fixture
def plan(bot_bottle_home: Path, bot_bottle_host: PluginHost, fake: Fake) -> Any:
    fake.add_image("agent:img")
    fake.add_image("bundle:img")
    return _plan(bot_bottle_home, bot_bottle_host)


def _backend() -> AppleContainerBackend:
    b = AppleContainerBackend()
    b.progress = lambda _line: None
    return b


def _empty(fake: Fake) -> None:
    state = fake.state()
    assert state["containers"] == {}, state["containers"]
    assert state["networks"] == {}, state["networks"]


# -- availability on this machine (real, not faked) --------------------------------


def test_unavailable_here_says_why() -> None:
    if sys.platform == "darwin":
        pytest.skip("this test describes a non-macOS host")
    b = AppleContainerBackend()
    avail = b.is_available()
    assert not avail.ok
    assert "macOS 26+ only" in avail.detail and "Linux" in avail.detail
    (check,) = b.host_checks()
    assert check.level == "WARN" and "Linux" in check.detail


def test_macos_before_26_is_unavailable(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_mod, "mac_version", lambda: "15.5")
    avail = AppleContainerBackend().is_available()
    assert not avail.ok and "macOS 15.5" in avail.detail and "26+" in avail.detail
    assert fake.calls() == []


def test_cli_missing_is_unavailable(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_BOTTLE_APPLE_CONTAINER_CLI", str(fake.exe.with_name("absent")))
    avail = AppleContainerBackend().is_available()
    assert not avail.ok and "not on PATH" in avail.detail


def test_service_down_is_unavailable(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CONTAINER_FAIL", "system status")
    avail = AppleContainerBackend().is_available()
    assert not avail.ok and avail.hint == "run 'container system start'"
    assert fake.calls() == [["system", "status"]]


def test_available_with_the_fake(fake: Fake) -> None:
    assert AppleContainerBackend().is_available().ok


def test_host_checks_and_setup_look_for_the_base_image(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot_bottle.contracts.backend import BaseImageRequest

    monkeypatch.setenv("BOT_BOTTLE_BASE_IMAGE", "bot-bottle/base:test")
    b = _backend()
    engine, base = b.host_checks()
    assert engine.level == "OK"
    assert base.level == "FAIL" and "bot-bottle/base:test is missing" in base.detail
    assert base.hint is not None and "container image load -i base.tar" in base.hint
    with pytest.raises(BotBottleError, match="cannot make the base image"):
        b.setup(BaseImageRequest(), lambda _l: None)
    fake.add_image("bot-bottle/base:test")
    assert b.host_checks()[1].level == "OK"
    assert b.setup(BaseImageRequest(), lambda _l: None) == (
        "base image bot-bottle/base:test already present"
    )
    assert [c for c in fake.calls() if c[0] not in ("system", "image")] == []


# -- prepare --------------------------------------------------------------------------


def test_prepare_is_pure_and_names_everything(plan: Any, fake: Fake) -> None:
    prepared = _backend().prepare(plan)
    assert fake.calls() == []
    d = prepared.describe()
    assert d["networks"] == [f"bb-{plan.slug}-agentnet", f"bb-{plan.slug}-egress"]
    assert "weaker than Docker" in d["isolation"]
    assert "weaker than Docker" in _backend().preflight(plan)["isolation"]


def test_prepare_refuses_what_it_cannot_serve(plan: Any, fake: Fake, tmp_path: Path) -> None:
    with pytest.raises(BotBottleError, match=r"does not mount a workspace \(--cwd\)") as exc:
        _backend().prepare(dataclasses.replace(plan, cwd=tmp_path))
    assert exc.value.hint and "--backend docker" in exc.value.hint
    # A plan made for another backend names an endpoint host nothing serves here.
    with pytest.raises(BotBottleError, match=f"points the agent at 127.0.0.1, not {AGENT_HOST}"):
        _backend().prepare(dataclasses.replace(plan, agent_host="127.0.0.1"))
    assert fake.calls() == []


def test_prepare_off_macos_fails(plan: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_mod, "host_os", lambda: "Linux")
    with pytest.raises(BotBottleError, match="this host is Linux"):
        _backend().prepare(plan)


# -- launch ---------------------------------------------------------------------------


def test_launch_commands_order_env_and_teardown(plan: Any, fake: Fake) -> None:
    b = _backend()
    prepared = b.prepare(plan)
    agentnet, egress = f"bb-{plan.slug}-agentnet", f"bb-{plan.slug}-egress"
    bundle, agent = f"bb-{plan.slug}-sidecars", f"bb-{plan.slug}-agent"
    with b.launch(prepared) as bottle:
        state = fake.state()
        assert state["networks"][agentnet]["config"]["mode"] == "hostOnly"
        assert state["networks"][egress]["config"]["mode"] == "nat"
        ip = state["containers"][bundle]["networks"][0]["address"].split("/")[0]
        env = state["containers"][agent]["env"]
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            assert env[name] == f"http://{AGENT_HOST}:8080", name
        assert env["NO_PROXY"] == f"localhost,127.0.0.1,::1,{AGENT_HOST}"
        # The name resolves, in the agent only, to the bundle's host-only address.
        agent_hosts = (fake.state_path.parent / "fs" / agent / "etc/hosts").read_text()
        assert agent_hosts == f"{ip} {AGENT_HOST}\n"
        assert TOKEN in state["containers"][bundle]["env"].values()
        assert TOKEN not in env.values()  # the credential is the bundle's alone
        # The agent has only the host-only network.
        assert [a["network"] for a in state["containers"][agent]["networks"]] == [agentnet]
        assert (fake.state_path.parent / "fs" / agent / GUEST_CA_PATH.lstrip("/")).is_file()
        bottle.wait_ready()
        assert bottle.exec(["echo", "hi"]).stdout == b"hi\n"
        assert bottle.exec(["false"]).exit_code == 1
        assert bottle.run(["echo", "run"]) == 0
        out = fake.state_path.parent / "ca-out.crt"
        bottle.copy_out(GUEST_CA_PATH, out)
        assert out.read_text().startswith("-----BEGIN CERTIFICATE-----")
    calls = fake.calls()
    # The credential never appears on any argv.
    assert all(TOKEN not in " ".join(c) for c in calls)
    heads = [" ".join(c[:2]) if c[0] in ("network", "system") else c[0] for c in calls]
    first = heads.index("network create")
    assert heads[:first] == ["system status"]
    creates = [c for c in calls if c[0] in ("run",) or c[:2] == ["network", "create"]]
    assert [c[-1] if c[0] == "network" else c[c.index("--name") + 1] for c in creates] == [
        agentnet, egress, bundle, agent
    ]  # fmt: skip
    assert "--internal" in creates[0] and "--internal" not in creates[1]
    run_agent = creates[3]
    assert run_agent[run_agent.index("--network") + 1] == agentnet
    assert "--no-dns" in run_agent and run_agent.count("--network") == 1
    assert run_agent[-3:] == ["sleep", "agent:img", "infinity"]
    relay = next(c for c in calls if c[0] == "exec" and "bot_bottle_sidecars.relay" in c)
    uid = DAEMON_USERS["relay"].uid
    assert relay[:4] == ["exec", "--user", f"{uid}:{uid}", bundle]
    assert f"tcp:{ip}:8080=unix:/run/bot-bottle/sock/proxy.sock" in relay
    assert not any("127.0.0.1:8080" in a for a in relay)
    # Teardown: agent, bundle, then the networks, last created first.
    tail = [c for c in calls if c[0] == "delete" or c[:2] == ["network", "delete"]]
    assert tail == [
        ["delete", "--force", agent],
        ["delete", "--force", bundle],
        ["network", "delete", egress],
        ["network", "delete", agentnet],
    ]
    # Every env file was removed once its command returned.
    for c in calls:
        if "--env-file" in c:
            assert not Path(c[c.index("--env-file") + 1]).exists()
    # The name pins went into the bundle's /etc/hosts before the relay started.
    pins = [i for i, c in enumerate(calls) if c[-3:] == ["sh", "-c", "cat >> /etc/hosts"]]
    pin, agent_pin = pins
    assert calls[pin][:5] == ["exec", "--interactive", "--user", "root", bundle]
    assert pin < calls.index(relay)
    # The agent's pin: right after it runs, before the CA copy (and so before
    # launch yields and anything is provisioned). The relay exec runs
    # alongside, so its own log line may fall anywhere after its start.
    seq = [c for c in calls if c is not relay]
    at = seq.index(calls[agent_pin])
    assert seq[at][:5] == ["exec", "--interactive", "--user", "root", agent]
    assert seq[at - 1][0] == "run" and agent in seq[at - 1]
    assert seq[at + 1][0] == "exec" and "tar -x" in " ".join(seq[at + 1])
    hosts = (fake.state_path.parent / "fs" / bundle / "etc/hosts").read_text()
    assert "10.9.8.7 api.example.test\n" in hosts and "127.0.0.1 _egress.local\n" in hosts
    # The relay exec the launcher owned is gone with the bottle.
    relay_pid = int((fake.state_path.parent / "relay.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(relay_pid, 0)
    _empty(fake)


DEPLOY_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\ndeploy-key-body-93f1\n-----END OPENSSH PRIVATE KEY-----\n"
)


def test_git_gate_and_supervise_through_the_pinned_name(
    bot_bottle_home: Path, bot_bottle_host: PluginHost, fake: Fake
) -> None:
    """A bottle with a git-gate repo and supervise: the agent's proxy
    variables, git rewrites and MCP URL name AGENT_HOST, which only the
    agent's /etc/hosts resolves (to the bundle's host-only address, where the
    relay serves all three endpoints); the deploy key reaches the bundle VM
    alone, read-only, under the root-only secrets directory."""
    from bot_bottle_sidecars.layout import SECRETS_GATE_KEYS

    from bot_bottle import provider_kit as kit
    from bot_bottle.launcher import provision_context

    key = bot_bottle_home / "deploy_key"
    key.write_text(DEPLOY_KEY)
    key.chmod(0o600)
    fake.add_image("agent:img")
    fake.add_image("bundle:img")
    plan = _plan(bot_bottle_home, bot_bottle_host, GIT_GATE_BOTTLE.replace("KEY", str(key)))
    assert plan.agent_host == AGENT_HOST
    ctx = provision_context(plan)
    assert ctx.supervise_url == f"http://{AGENT_HOST}:8765/mcp"
    b = _backend()
    prepared = b.prepare(plan)
    assert prepared.services == ("proxy", "git", "mcp")
    bundle, agent = prepared.bundle_name, prepared.agent_name
    with b.launch(prepared) as bottle:
        state = fake.state()
        ip = state["containers"][bundle]["networks"][0]["address"].split("/")[0]
        mounts = state["containers"][bundle]["mounts"]
        staged = Path(mounts[SECRETS_GATE_KEYS])
        assert [p.read_text() for p in staged.iterdir()] == [DEPLOY_KEY]
        # Nothing of the key in the agent VM: no mount, no env value.
        assert state["containers"][agent]["mounts"] == {}
        assert all("deploy-key-body" not in v for v in state["containers"][agent]["env"].values())
        init = json.loads((Path(mounts["/etc/bot-bottle"]) / "init-plan.json").read_text())
        daemons = {d["name"]: d["argv"] for d in init["daemons"]}
        sup = daemons["supervise"]
        assert sup[sup.index("--allowed-host") + 1] == f"{AGENT_HOST}:8765"
        kit.apply_git_config(bottle, ctx)
        agent_hosts = (fake.state_path.parent / "fs" / agent / "etc/hosts").read_text()
        assert agent_hosts == f"{ip} {AGENT_HOST}\n"
    calls = fake.calls()
    run_bundle = next(c for c in calls if c[0] == "run" and bundle in c)
    assert f"type=bind,source={staged},target={SECRETS_GATE_KEYS},readonly" in run_bundle
    relay = next(c for c in calls if c[0] == "exec" and "bot_bottle_sidecars.relay" in c)
    for port, sock in ((8080, "proxy"), (9418, "git"), (8765, "mcp")):
        assert f"tcp:{ip}:{port}=unix:/run/bot-bottle/sock/{sock}.sock" in relay
    (git,) = [c for c in calls if "git config --global --add" in " ".join(c)]
    assert git[:2] == ["exec", "--user"] and agent in git
    want = f"url.git://{AGENT_HOST}:9418/proj.git.insteadOf=ssh://git@git.example.test/me/proj.git"
    assert want in git
    assert all("deploy-key-body" not in " ".join(c) for c in calls)
    # The staged key went with the bottle's runtime files.
    assert not staged.exists()
    _empty(fake)


def test_attach_is_a_tty_exec_with_term(
    plan: Any, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-kitty")
    b = _backend()
    with b.launch(b.prepare(plan)) as bottle:
        assert bottle.attach(["echo", "hi"], user="agentuser") == 0
    (attach,) = [e for e in fake.state()["execs"] if e["argv"] == ["echo", "hi"]]
    assert attach["flags"] == ["--interactive", "--tty"]
    assert attach["env"] == {"TERM": "xterm-kitty"}
    call = next(c for c in fake.calls() if c[-2:] == ["echo", "hi"])
    assert call[call.index("--user") + 1] == "agentuser"


def test_raw_terminal_is_restored_on_every_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    import pty
    import termios

    from bot_bottle_apple_container.running import raw_terminal

    master, slave = pty.openpty()
    try:
        with os.fdopen(os.dup(slave), "r") as tty_in:
            monkeypatch.setattr(sys, "stdin", tty_in)
            before = termios.tcgetattr(slave)
            assert before[3] & termios.ICANON
            with pytest.raises(RuntimeError), raw_terminal():
                assert not termios.tcgetattr(slave)[3] & termios.ICANON
                raise RuntimeError("the session died")
            assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_exception_mid_launch_tears_everything_down(plan: Any, fake: Fake) -> None:
    b = _backend()
    with pytest.raises(RuntimeError, match="boom"), b.launch(b.prepare(plan)):
        raise RuntimeError("boom")
    _empty(fake)


def test_failed_agent_run_undoes_what_exists(
    plan: Any, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = f"bb-{plan.slug}-agent"
    monkeypatch.setenv("FAKE_CONTAINER_FAIL", f"run --detach --name {agent}")
    b = _backend()
    failed = r"'container run --detach' failed \(exit 1\)"
    with pytest.raises(BotBottleError, match=failed), b.launch(b.prepare(plan)):
        pytest.fail("must not yield")
    deletes = [c for c in fake.calls() if "delete" in c]
    assert deletes[0] == ["delete", "--force", agent]  # pushed before run: a no-op miss
    _empty(fake)


def test_a_failing_teardown_step_does_not_stop_the_others(
    plan: Any, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    egress = f"bb-{plan.slug}-egress"
    b = _backend()
    with b.launch(b.prepare(plan)):
        monkeypatch.setenv("FAKE_CONTAINER_FAIL", f"network delete {egress}")
    state = fake.state()
    assert state["containers"] == {}
    assert list(state["networks"]) == [egress]  # left for cleanup, found by its labels
    monkeypatch.delenv("FAKE_CONTAINER_FAIL")
    items = b.find_orphans()
    assert [(i.kind, i.name) for i in items] == [("network", egress)]
    assert b.cleanup(items) == items
    _empty(fake)


def test_failed_network_create_leaves_nothing(
    plan: Any, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CONTAINER_FAIL", f"bb-{plan.slug}-egress")
    b = _backend()
    with pytest.raises(BotBottleError, match="network create"), b.launch(b.prepare(plan)):
        pytest.fail("must not yield")
    assert [c for c in fake.calls() if c[0] == "run"] == []
    _empty(fake)


def test_container_dying_mid_provision(
    plan: Any, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = f"bb-{plan.slug}-agent"
    monkeypatch.setenv("FAKE_CONTAINER_DIE", agent)
    b = _backend()
    with pytest.raises(BotBottleError) as err, b.launch(b.prepare(plan)):
        pytest.fail("must not yield: copying the CA needs the agent")
    assert "not running" in err.value.message or "gone" in err.value.message
    _empty(fake)


def test_bundle_dying_is_seen_by_wait_ready(
    plan: Any, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = _backend()
    with (
        pytest.raises(BotBottleError, match=f"bb-{plan.slug}-sidecars stopped during start"),
        b.launch(b.prepare(plan)) as bottle,
    ):
        # The bundle's VM stops after the launch yielded, before it was ready.
        state = fake.state()
        state["containers"][f"bb-{plan.slug}-sidecars"]["status"] = "stopped"
        fake.state_path.write_text(json.dumps(state))
        _sock(plan).joinpath("agent.ready").unlink(missing_ok=True)
        bottle.wait_ready()
    _empty(fake)


def _sock(plan: Any) -> Path:
    from bot_bottle.state import StateDir

    return StateDir.for_slug(plan.slug).run_dir / "sock"


def test_cli_missing_at_launch_creates_nothing(
    plan: Any, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOT_BOTTLE_APPLE_CONTAINER_CLI", str(fake.exe.with_name("absent")))
    b = _backend()
    with pytest.raises(BotBottleError, match="not on PATH"), b.launch(b.prepare(plan)):
        pytest.fail("must not yield")
    assert fake.calls() == []


# -- images ---------------------------------------------------------------------------


def test_container_build_argv_and_reuse(tmp_path: Path, fake: Fake) -> None:
    from bot_bottle_apple_container.cli import ContainerCLI

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    spec = ImageSpec(
        repository="bot-bottle/agent-test", dockerfile=dockerfile, distributions=(),
        base_image="bot-bottle/base:trixie",
    )  # fmt: skip
    with pytest.raises(ImageBuildError, match="not present in Apple's container image store"):
        ensure_image(spec, cli=ContainerCLI(), log_dir=tmp_path)
    fake.add_image("bot-bottle/base:trixie")
    first = ensure_image(spec, cli=ContainerCLI(), log_dir=tmp_path)
    assert first.built and first.tag.startswith("bot-bottle/agent-test:")
    build = next(c for c in fake.calls() if c[0] == "build")
    assert build[:5] == ["build", "--progress", "plain", "-t", first.tag]
    assert "BASE_IMAGE=bot-bottle/base:trixie" in build
    assert "org.bot-bottle.managed=true" in build
    again = ensure_image(spec, cli=ContainerCLI(), log_dir=tmp_path)
    assert again.tag == first.tag and not again.built
    assert [c[0] for c in fake.calls()].count("build") == 1


def test_failed_build_names_its_log(
    tmp_path: Path, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot_bottle_apple_container.cli import ContainerCLI

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x\n")
    fake.add_image("base:x")
    monkeypatch.setenv("FAKE_CONTAINER_FAIL", "build")
    spec = ImageSpec(repository="r/agent-x", dockerfile=dockerfile, distributions=(),
                     base_image="base:x")  # fmt: skip
    with pytest.raises(ImageBuildError) as err:
        ensure_image(spec, cli=ContainerCLI(), log_dir=tmp_path)
    assert "container build of r/agent-x" in err.value.message
    assert str(tmp_path) in (err.value.hint or "")


# -- enumeration and cleanup ---------------------------------------------------------


def test_list_active_by_labels(plan: Any, fake: Fake) -> None:
    b = _backend()
    fake.add_image("other:img")
    fake.cli(
        "run", "--detach", "--name", "unrelated", "--label", "bot-bottle.role=agent", "other:img"
    )
    with b.launch(b.prepare(plan)):
        (active,) = b.list_active()
        assert active.slug == plan.slug and active.agent == "a1"
        assert active.services == ("proxy",)
        assert b.stop(plan.slug) is True
        assert b.list_active() == []
    assert b.stop("no-such-slug") is False


def test_find_orphans_and_cleanup(fake: Fake, bot_bottle_home: Path) -> None:
    fake.add_image("img")
    labels: list[str] = []
    for pair in ("backend=apple_container", "slug=gone-1", f"home={home_id()}", "role=agent"):
        labels += ["--label", f"bot-bottle.{pair}"]
    net = fake.cli("network", "create", "--internal", *labels, "bb-gone-1-agentnet")
    assert net.returncode == 0
    run = ["run", "--detach", "--name", "bb-gone-1-agent", "--network", "bb-gone-1-agentnet"]
    assert fake.cli(*run, *labels, "img").returncode == 0
    # Another backend's and an unlabelled container are not ours to touch.
    fake.cli("run", "--detach", "--name", "docker-ish", "--label", "bot-bottle.backend=docker",
             "--label", "bot-bottle.slug=x", "img")  # fmt: skip
    fake.cli("run", "--detach", "--name", "plain", "img")
    fake.clear_log()
    b = _backend()
    items = b.find_orphans()
    assert {(i.kind, i.name) for i in items} == {
        ("container", "bb-gone-1-agent"), ("network", "bb-gone-1-agentnet")
    }  # fmt: skip
    assert fake.calls() == [
        ["ls", "--all", "--format", "json"],
        ["network", "ls", "--format", "json"],
    ]
    fake.clear_log()
    # Networks listed first on purpose: cleanup deletes containers first anyway.
    removed = b.cleanup(sorted(items, key=lambda i: i.kind != "network"))
    assert len(removed) == 2
    assert fake.calls() == [
        ["delete", "--force", "bb-gone-1-agent"],
        ["network", "delete", "bb-gone-1-agentnet"],
    ]
    assert set(fake.state()["containers"]) == {"docker-ish", "plain"}
    # A second cleanup of the same items reports nothing removed, without raising.
    assert b.cleanup([CleanupItem("apple_container", "container", "bb-gone-1-agent")]) == []


def test_malformed_json_is_a_clear_error(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CONTAINER_MALFORMED", "ls")
    with pytest.raises(ContainerCLIError, match="not JSON"):
        _backend().list_active()
    monkeypatch.setenv("FAKE_CONTAINER_MALFORMED", "network")
    with pytest.raises(ContainerCLIError, match="not JSON"):
        _backend().find_orphans()


def test_nonzero_ls_is_a_clear_error(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CONTAINER_FAIL", "ls")
    with pytest.raises(ContainerCLIError, match=r"'container ls --format' failed \(exit 1\)"):
        _backend().list_active()


# -- the CLI on this machine (real) ---------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_start_fails_before_creating_anything(
    tmp_path: Path, bot_bottle_home: Path, extra: list[str]
) -> None:
    if sys.platform == "darwin":
        pytest.skip("this test describes a non-macOS host")
    (bot_bottle_home / "bottles").mkdir()
    (bot_bottle_home / "agents").mkdir()
    (bot_bottle_home / "bottles/b1.md").write_text("---\nagent_provider:\n  template: shell\n---\n")
    (bot_bottle_home / "agents/a1.md").write_text("---\nbottle: b1\n---\n")
    before = sorted(p.relative_to(bot_bottle_home) for p in bot_bottle_home.rglob("*"))
    exe = Path(sys.executable).with_name("bot-bottle")
    proc = subprocess.run(
        [str(exe), "start", "a1", "--backend", "apple_container", *extra],
        capture_output=True, text=True, check=False, env={**os.environ},
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: backend 'apple_container' is not available"), proc.stderr
    assert "this host is Linux" in proc.stderr and "Traceback" not in proc.stderr
    after = sorted(p.relative_to(bot_bottle_home) for p in bot_bottle_home.rglob("*"))
    assert after == before
