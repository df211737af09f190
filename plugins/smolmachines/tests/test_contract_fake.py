"""The backend against the smolvm contract fake: exact commands, their order,
failure paths and teardown on each. The fake stands in only for what needs a
booted guest (see fake_smolvm.py; test_real_cli.py runs the real CLI).

The bundle side here is a recorder of the backend's own Docker half
(``DockerSidecars``), so these tests check the VM's commands without
starting containers; that half is the Docker backend's code, tested there.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bot_bottle_testkit.manifest import GIT_GATE_BOTTLE, shell_agent

from bot_bottle.errors import BotBottleError
from bot_bottle.state import StateDir, home_id
from bot_bottle.teardown import Teardown
from bot_bottle_smolmachines.backend import (
    SmolmachinesBackend,
    SmolPrepared,
    loopback_alias,
)
from bot_bottle_smolmachines.smolvm import Smolvm, SmolvmError


class RecordingSidecars:
    """The Docker half, recorded: what was started and torn down, in order."""

    def __init__(self, events: list[str], *, fail_start: bool = False) -> None:
        self.events = events
        self.fail_start = fail_start

    def agent_image(self, plan: Any) -> str:
        self.events.append("image built")
        return "agent:built"

    def save_image(self, tag: str, out: Path) -> Path:
        out.write_bytes(b"docker save archive")
        self.events.append("image archive")
        return out

    def start(
        self, prepared: SmolPrepared, labels: dict[str, str], run_dir: Path, down: Teardown
    ) -> Callable[[], None]:
        ca = run_dir / "ca"
        ca.mkdir(parents=True, exist_ok=True)
        (ca / "bot-bottle-ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
        self.events.append("bundle up")
        down.push("bundle", lambda: self.events.append("bundle down"))
        if self.fail_start:
            raise BotBottleError("the bundle did not start")
        return lambda: self.events.append("ready")

    def orphans(self, ours: str) -> list[Any]:
        return []

    def cleanup(self, items: Any) -> list[Any]:
        return []


def _backend(events: list[str], **kw: Any) -> SmolmachinesBackend:
    return SmolmachinesBackend(kvm=lambda: None, sidecars=RecordingSidecars(events, **kw))


def test_prepare_is_pure_and_names_everything(mini_plan: Any, fake_smolvm: Any) -> None:
    plan = mini_plan()
    prepared = _backend([]).prepare(plan)
    assert fake_smolvm.calls() == []
    alias = loopback_alias(plan.slug)
    assert alias.startswith("127.77.") and alias != "127.0.0.1"
    assert prepared.machine == "bb-shell-0a1b2c-agent"
    assert prepared.env["HTTPS_PROXY"] == f"http://{alias}:8080"
    assert prepared.env["https_proxy"] == f"http://{alias}:8080"
    assert prepared.env["NO_PROXY"].endswith(f",{alias}")
    assert prepared.describe()["agent_network"] == f"--allow-cidr {alias}/32, --dns {alias}"


def test_launch_provision_run_and_teardown_in_order(
    mini_plan: Any, fake_smolvm: Any, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    events: list[str] = []
    backend = _backend(events)
    prepared = backend.prepare(mini_plan())
    with backend.launch(prepared) as bottle:
        res = bottle.exec(["echo", "hi"], user="agent", env={"A": "b"}, workdir="/tmp")
        assert res.ok and res.stdout == b"hi\n"
        fed = bottle.exec(["cat"], stdin=b"\x00\x01binary\xff")
        assert fed.stdout == b"\x00\x01binary\xff"
        code = bottle.run(["echo", "headless"])
        assert code == 0
        assert fake_smolvm.machines()[prepared.machine]["state"] == "running"
    out = capfdbinary.readouterr().out
    assert b"headless" in out
    m, alias = prepared.machine, prepared.alias
    calls = fake_smolvm.calls()
    create = calls[0]
    assert create[:6] == ["machine", "create", "--name", m, "--image", create[5]]
    assert create[5].endswith("agent-image.tar")
    assert ["--allow-cidr", f"{alias}/32"] == create[create.index("--allow-cidr") :][:2]
    assert ["--dns", alias] == create[create.index("--dns") :][:2]
    assert "bot-bottle.backend=smolmachines" in create
    assert "--net-backend" not in create  # smolvm 1.32 refuses egress policy under TSI
    assert f"HTTPS_PROXY=http://{alias}:8080" in create
    assert fake_smolvm.verbs() == [
        "machine create",
        "machine start",
        "machine cp",  # the CA, by file
        "machine exec chown",
        "machine exec chmod",
        "machine exec sh",  # the freezer's launch marker, before launch yields
        "machine exec runuser",  # exec as the agent user
        "machine cp",  # stdin, by file
        "machine exec sh",
        "machine exec rm",
        "machine exec runuser",  # run
        "machine stop",
        "machine delete",
    ]
    assert calls[5][calls[5].index("--") + 1 :] == [
        "sh", "-c", 'mkdir -p "${1%/*}" && touch "$1"', "sh", "/var/lib/bot-bottle/launched",
    ]  # fmt: skip
    as_user = calls[6]
    assert as_user[as_user.index("--") + 1 :] == [
        "runuser", "-u", "agent", "--", "env", "HOME=/home/agent", "USER=agent", "echo", "hi",
    ]  # fmt: skip
    assert as_user[4:6] == ["-e", "A=b"] and as_user[6:8] == ["-w", "/tmp"]
    assert calls[-1] == ["machine", "delete", "--name", m, "--force"]
    assert "bot-bottle.image=bot-bottle/base:trixie" in create
    assert events == ["image archive", "bundle up", "ready", "bundle down"]
    assert fake_smolvm.machines() == {}


def test_create_failure_creates_nothing_else(
    mini_plan: Any, fake_smolvm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SMOLVM_FAIL", "machine create:1")
    events: list[str] = []
    backend = _backend(events)
    with (
        pytest.raises(SmolvmError, match=r"machine create failed \(exit 1\): injected"),
        backend.launch(backend.prepare(mini_plan())),
    ):
        pass
    assert fake_smolvm.verbs() == ["machine create"]
    assert events == ["image archive"]


def test_bundle_failure_deletes_the_created_vm(mini_plan: Any, fake_smolvm: Any) -> None:
    events: list[str] = []
    backend = _backend(events, fail_start=True)
    with (
        pytest.raises(BotBottleError, match="bundle did not start"),
        backend.launch(backend.prepare(mini_plan())),
    ):
        pass
    assert fake_smolvm.verbs() == ["machine create", "machine delete"]
    assert events == ["image archive", "bundle up", "bundle down"]
    assert fake_smolvm.machines() == {}


def test_start_failure_tears_down_bundle_and_vm(
    mini_plan: Any, fake_smolvm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SMOLVM_FAIL", "machine start:1")
    events: list[str] = []
    backend = _backend(events)
    with (
        pytest.raises(SmolvmError, match="machine start failed"),
        backend.launch(backend.prepare(mini_plan())),
    ):
        pass
    assert fake_smolvm.verbs() == ["machine create", "machine start", "machine delete"]
    assert events[-1] == "bundle down"


def test_vm_dying_mid_provision_is_a_clear_error_and_everything_goes(
    mini_plan: Any, fake_smolvm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three execs (chown, chmod of the CA, the launch marker) succeed, then the VM is gone.
    monkeypatch.setenv("FAKE_SMOLVM_DIE_AFTER", "3")
    events: list[str] = []
    backend = _backend(events)
    with (
        pytest.raises(BotBottleError, match=r"VM bb-shell-0a1b2c-agent is unusable.*not running"),
        backend.launch(backend.prepare(mini_plan())) as bottle,
    ):
        bottle.exec(["update-ca-certificates"])
    assert fake_smolvm.verbs()[-2:] == ["machine stop", "machine delete"]
    assert events[-1] == "bundle down"
    assert fake_smolvm.machines() == {}


def test_ctrl_c_inside_the_bottle_tears_down(mini_plan: Any, fake_smolvm: Any) -> None:
    events: list[str] = []
    backend = _backend(events)
    with pytest.raises(KeyboardInterrupt), backend.launch(backend.prepare(mini_plan())):
        raise KeyboardInterrupt
    assert fake_smolvm.verbs()[-2:] == ["machine stop", "machine delete"]
    assert fake_smolvm.machines() == {}


def test_kept_for_resume_stops_but_keeps_the_vm(mini_plan: Any, fake_smolvm: Any) -> None:
    backend = _backend([])
    prepared = backend.prepare(mini_plan())
    with backend.launch(prepared) as bottle:
        bottle.keep_for_resume()
    assert fake_smolvm.verbs()[-1] == "machine stop"
    assert fake_smolvm.machines()[prepared.machine]["state"] == "stopped"


def test_exec_retries_once_on_137_only(fake_smolvm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = Smolvm.locate()
    cli.create(_spec())
    cli.start("vm")
    monkeypatch.setenv("FAKE_SMOLVM_FAIL", "exec true:137:1")
    assert cli.exec("vm", ["true"]).returncode == 0
    assert fake_smolvm.verbs()[-2:] == ["machine exec true", "machine exec true"]
    monkeypatch.setenv("FAKE_SMOLVM_FAIL", "exec false:137:5")
    assert cli.exec("vm", ["false"]).returncode == 137  # twice killed: reported, not looped
    assert fake_smolvm.verbs().count("machine exec false") == 2
    n = len(fake_smolvm.calls())
    monkeypatch.delenv("FAKE_SMOLVM_FAIL")
    assert cli.exec("vm", ["exit", "3"]).returncode == 3  # a command's own exit: no retry
    assert len(fake_smolvm.calls()) == n + 1


def test_cli_missing_is_a_clear_error(
    mini_plan: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BOT_BOTTLE_SMOLVM", str(tmp_path / "nowhere" / "smolvm"))
    with pytest.raises(SmolvmError, match="smolvm CLI is not installed") as exc:
        Smolvm.locate()
    assert exc.value.hint and "smolmachines" in exc.value.hint
    backend = SmolmachinesBackend(kvm=lambda: None)
    avail = backend.is_available()
    assert not avail.ok and "not installed" in avail.detail
    with pytest.raises(BotBottleError, match="cannot run here: the smolvm CLI is not installed"):
        backend.prepare(mini_plan())
    assert backend.list_active() == []


def test_no_bootable_kvm_refuses_before_anything(mini_plan: Any, fake_smolvm: Any) -> None:
    backend = SmolmachinesBackend(kvm=lambda: "/dev/kvm is kvm_pvm")
    avail = backend.is_available()
    assert not avail.ok and "no bootable KVM: /dev/kvm is kvm_pvm" in avail.detail
    with pytest.raises(BotBottleError, match="no bootable KVM"):
        backend.prepare(mini_plan())
    assert fake_smolvm.calls() == []
    levels = {c.what: c.level for c in backend.host_checks()}
    assert levels == {"smolvm": "OK", "kvm": "WARN"}


def _git_plan(home: Path, host: Any) -> Any:
    """A bottle with a git-gate repo and supervise, planned as core plans it
    for this backend (its agent_endpoint_host)."""
    import dataclasses

    from bot_bottle.plan import make_plan
    from bot_bottle_shell.provider import ShellProvider

    key = home / "deploy_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    agent = shell_agent(home, host, GIT_GATE_BOTTLE.replace("KEY", str(key)))
    backend = SmolmachinesBackend(kvm=lambda: None)
    plan = make_plan(
        agent,
        ShellProvider(),
        backend="smolmachines",
        host_env={},
        endpoint_host=backend.agent_endpoint_host,
    )
    return dataclasses.replace(plan, agent_image="bot-bottle/base:trixie")


def test_git_gate_and_supervise_name_the_alias_everywhere(
    fake_smolvm: Any, bot_bottle_home: Path, bot_bottle_host: Any
) -> None:
    """The agent's proxy variables, git-gate rewrites and MCP URL all name
    the bottle's loopback alias, the one address the VM may reach."""
    from bot_bottle import provider_kit as kit
    from bot_bottle.launcher import provision_context

    plan = _git_plan(bot_bottle_home, bot_bottle_host)
    events: list[str] = []
    backend = _backend(events)
    prepared = backend.prepare(plan)
    alias = loopback_alias(plan.slug)
    assert plan.agent_host == prepared.alias == alias
    assert prepared.services == ("proxy", "git", "mcp")
    ctx = provision_context(plan)
    # What every provider registers as its MCP server.
    assert ctx.supervise_url == f"http://{alias}:8765/mcp"
    with backend.launch(prepared) as bottle:
        # The launcher's step after any provider's provision (the fake's
        # guest cannot run the shell provider's runuser file writes).
        kit.apply_git_config(bottle, ctx)
    calls = fake_smolvm.calls()
    create = calls[0]
    assert ["--allow-cidr", f"{alias}/32"] == create[create.index("--allow-cidr") :][:2]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert f"{name}=http://{alias}:8080" in create
    assert f"NO_PROXY=localhost,127.0.0.1,::1,{alias}" in create
    assert not any("127.0.0.1:" in a for a in create)
    (git,) = [c for c in calls if "git config --global --add" in " ".join(c)]
    upstream = "ssh://git@git.example.test/me/proj.git"
    assert f"url.git://{alias}:9418/proj.git.insteadOf={upstream}" in git
    assert not any("127.0.0.1" in a for a in git)
    assert fake_smolvm.verbs()[:2] == ["machine create", "machine start"]
    assert fake_smolvm.verbs()[-2:] == ["machine stop", "machine delete"]
    assert events == ["image archive", "bundle up", "bundle down"]


def test_a_plan_for_another_endpoint_host_is_refused(mini_plan: Any, fake_smolvm: Any) -> None:
    with pytest.raises(BotBottleError, match=r"points the agent at 127\.0\.0\.1") as exc:
        _backend([]).prepare(mini_plan(agent_host="127.0.0.1"))
    assert exc.value.hint and "--backend smolmachines" in exc.value.hint
    assert fake_smolvm.calls() == []


def test_cwd_is_refused_with_a_reason(mini_plan: Any, fake_smolvm: Any, tmp_path: Path) -> None:
    with pytest.raises(BotBottleError, match=r"does not mount a workspace \(--cwd\)") as exc:
        _backend([]).prepare(mini_plan(cwd=tmp_path))
    assert exc.value.hint and "--backend docker" in exc.value.hint


def test_malformed_ls_json_is_a_clear_error(
    fake_smolvm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SMOLVM_LS", "malformed")
    with pytest.raises(SmolvmError, match="not JSON") as exc:
        _backend([]).list_active()
    assert exc.value.code == "BAD_JSON"


def test_list_active_and_cleanup_by_labels(mini_plan: Any, fake_smolvm: Any) -> None:
    backend = _backend([])
    cli = Smolvm.locate()
    cli.create(_spec(labels={"bot-bottle.backend": "docker"}))  # not ours
    live = backend.prepare(mini_plan(slug="shell-111111", label="one"))
    # What core's launcher writes before launch: this process owns the bottle.
    StateDir.for_slug("shell-111111").create({"pid": os.getpid()})
    with backend.launch(live):
        (active,) = backend.list_active()
        assert (active.slug, active.label, active.backend) == (
            "shell-111111",
            "one",
            "smolmachines",
        )
        assert active.services == ("proxy",)
        # The launcher (this process) is alive and owns its state: not an orphan.
        assert backend.find_orphans() == []
    # A machine whose launcher's state is gone (a killed run), found by label.
    dead = _spec(name="bb-shell-222222-agent", labels={
        "bot-bottle.backend": "smolmachines", "bot-bottle.slug": "shell-222222",
        "bot-bottle.home": "another-home", "bot-bottle.launcher": "other-boot:1",
    })  # fmt: skip
    cli.create(dead)
    gone = _spec(name="bb-shell-333333-agent", labels={
        "bot-bottle.backend": "smolmachines", "bot-bottle.slug": "shell-333333",
        "bot-bottle.home": home_id(),  # this home's, with no state dir: orphaned
    })  # fmt: skip
    cli.create(gone)
    cli.start("bb-shell-333333-agent")
    orphans = backend.find_orphans()
    # another home's on another boot cannot be judged: left alone.
    assert [(o.kind, o.name) for o in orphans] == [("machine", "bb-shell-333333-agent")]
    before = len(fake_smolvm.calls())
    assert backend.cleanup(orphans) == orphans
    assert fake_smolvm.verbs()[before:] == ["machine ls", "machine stop", "machine delete"]
    assert set(fake_smolvm.machines()) == {"vm", "bb-shell-222222-agent"}


def test_copy_out_and_copy_in_modes(mini_plan: Any, fake_smolvm: Any, tmp_path: Path) -> None:
    backend = _backend([])
    with backend.launch(backend.prepare(mini_plan())) as bottle:
        src = tmp_path / "f.txt"
        src.write_text("data\n")
        bottle.copy_in(src, "/etc/x.txt", mode=0o600, owner="agent:agent")
        bottle.copy_out("/etc/x.txt", tmp_path / "back.txt")
        assert (tmp_path / "back.txt").read_text() == "data\n"
        tail = [c[c.index("--") + 1 :] for c in fake_smolvm.calls() if c[:2] == ["machine", "exec"]]
        assert ["chown", "-R", "agent:agent", "/etc/x.txt"] in tail
        assert ["chmod", "600", "/etc/x.txt"] in tail


def test_run_stdout_is_a_pipe_even_when_ours_is_a_file(
    mini_plan: Any, fake_smolvm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake fails like the real exec when its stdout is a regular file;
    run() copies through a pipe, so it works with a redirected stdout."""
    backend = _backend([])
    out = tmp_path / "out.bin"
    with backend.launch(backend.prepare(mini_plan())) as bottle, out.open("wb") as f:
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(f))
        code = bottle.run(["echo", "to-a-file"])
        sys.stdout.flush()
    assert code == 0
    assert out.read_bytes() == b"to-a-file\n"


def _spec(name: str = "vm", labels: dict[str, str] | None = None) -> Any:
    from bot_bottle_smolmachines.smolvm import CreateSpec

    return CreateSpec(
        name=name, image="/tmp/none.tar", labels=labels or {}, allow_cidr="127.77.0.1/32",
        dns="127.77.0.1", env={},
    )  # fmt: skip
