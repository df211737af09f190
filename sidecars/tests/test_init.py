"""init with real child processes: signals, crashes, restarts, env scoping, reaping."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bot_bottle_sidecars.init import PlanError, control_request, parse_plan

# A stand-in daemon: records its environment and the signals it receives.
DAEMON = textwrap.dedent(
    """
    import json, os, signal, sys, time
    out, name = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "normal"
    def record(line):
        with open(os.path.join(out, name + ".signals"), "a") as fh:
            fh.write(line + "\\n")
    def on_stop(signum, frame):
        record("TERM" if signum == signal.SIGTERM else "INT")
        if mode != "stubborn":
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    def on_hup(signum, frame):
        record("HUP")
        if mode == "reporter":
            # Like egress: the outcome of the reload goes back to init.
            verdict = os.path.join(out, name + ".verdict")
            error = open(verdict).read().strip() if os.path.exists(verdict) else None
            line = json.dumps({"reload": {"ok": error is None, "error": error}}) + "\\n"
            os.write(int(os.environ["BOT_BOTTLE_STATUS_FD"]), line.encode())
    signal.signal(signal.SIGHUP, on_hup)
    if mode == "orphan":
        # A grandchild that outlives its parent: init must reap it.
        if os.fork() == 0:
            time.sleep(0.2)
            os._exit(0)
    with open(os.path.join(out, name + ".json.tmp"), "w") as fh:
        json.dump({"pid": os.getpid(), "env": dict(os.environ)}, fh)
    os.replace(os.path.join(out, name + ".json.tmp"), os.path.join(out, name + ".json"))
    if mode == "leaver":
        child = os.fork()
        if child == 0:
            while True:
                time.sleep(0.05)
        with open(os.path.join(out, name + ".child"), "w") as fh:
            fh.write(str(child))
        time.sleep(0.3)
        os._exit(4)
    if mode == "serve":
        # Like supervise: the socket init hands over, else one of its own.
        import socket
        fd = os.environ.get("BOT_BOTTLE_LISTEN_FD")
        if fd:
            srv = socket.socket(fileno=int(fd))
        else:
            srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", int(os.environ["SERVE_PORT"])))
            srv.listen(8)
        while True:
            conn, _ = srv.accept()
            conn.sendall(b"%d\\n" % os.getpid())
            conn.close()
    if mode == "crash":
        time.sleep(0.3)
        sys.exit(3)
    if mode == "done":
        sys.exit(0)
    while True:
        time.sleep(0.05)
    """
)

SECRET = "tok-do-not-leak-123"


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Bundle:
    def __init__(
        self,
        tmp: Path,
        daemons: list[dict[str, Any]],
        grace: float = 5.0,
        restart: dict[str, Any] | None = None,
    ) -> None:
        self.out = tmp / "out"
        self.out.mkdir()
        self.socket = str(tmp / "init.sock")
        self.status_file = tmp / "status" / "init-status.json"
        self.status_file.parent.mkdir()
        script = tmp / "daemon.py"
        script.write_text(DAEMON)
        plan: dict[str, Any] = {
            "grace_seconds": grace,
            "control_socket": self.socket,
            "status_file": str(self.status_file),
            "daemons": [],
        }
        if restart is not None:
            plan["restart"] = restart
        for d in daemons:
            argv = [sys.executable, str(script), str(self.out), d["name"], d.get("mode", "normal")]
            entry = {k: v for k, v in d.items() if k != "mode"}
            plan["daemons"].append({"argv": argv, **entry})
        self.plan_path = tmp / "plan.json"
        self.plan_path.write_text(json.dumps(plan))
        env = {
            "PATH": os.environ["PATH"],
            "EGRESS_TOKEN_1": SECRET,
            "EGRESS_SECRET_1": SECRET + "-known",
            "GITGATE_SECRET_0": SECRET + "-for-the-gate",
            "SUPERVISE_FLAG": "yes",
            "UNRELATED": "nope",
        }
        self.log_path = tmp / "init.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot_bottle_sidecars.init", "--plan", str(self.plan_path)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def info(self, name: str) -> dict[str, Any]:
        path = self.out / f"{name}.json"
        wait_for(path.exists, what=f"{name} to start")
        return json.loads(path.read_text())

    def signals(self, name: str) -> list[str]:
        path = self.out / f"{name}.signals"
        return path.read_text().split() if path.exists() else []

    def events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def ctl(self, **request: Any) -> dict[str, Any]:
        wait_for(lambda: Path(self.socket).exists(), what="control socket")
        return control_request(self.socket, request)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Daemons that write no info file (sleep) are found through init.
            with contextlib.suppress(OSError, ValueError):
                for d in control_request(self.socket, {"cmd": "status"}, timeout=2)["daemons"]:
                    if d["pid"]:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(d["pid"], signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def bundle(tmp_path: Path) -> Iterator[Callable[..., Bundle]]:
    made: list[Bundle] = []

    def make(
        daemons: list[dict[str, Any]], grace: float = 5.0, restart: dict[str, Any] | None = None
    ) -> Bundle:
        b = Bundle(tmp_path, daemons, grace, restart)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()
        # Children are in their own process groups: make sure none outlives the test.
        for name in ("egress", "git-gate", "supervise"):
            path = b.out / f"{name}.json"
            if path.exists():
                pid = json.loads(path.read_text())["pid"]
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


THREE = [
    {"name": "egress", "env": ["EGRESS_TOKEN_*", "EGRESS_SECRET_*"]},
    {"name": "git-gate", "env": ["GITGATE_SECRET_*"]},
    {"name": "supervise", "env": ["SUPERVISE_FLAG"]},
]


def test_token_slots_reach_only_the_egress_daemon(bundle: Callable[..., Bundle]) -> None:
    b = bundle(THREE)
    egress = b.info("egress")["env"]
    supervise = b.info("supervise")["env"]
    gate = b.info("git-gate")["env"]
    assert egress["EGRESS_TOKEN_1"] == SECRET
    assert egress["EGRESS_SECRET_1"] == SECRET + "-known"
    for other in (supervise, gate):
        assert "EGRESS_TOKEN_1" not in other and "EGRESS_SECRET_1" not in other
    # git-gate's slots (the bottle secrets its push scan looks for) reach it alone.
    assert gate["GITGATE_SECRET_0"] == SECRET + "-for-the-gate"
    assert "GITGATE_SECRET_0" not in egress and "GITGATE_SECRET_0" not in supervise
    # Each daemon sees its own allow-list, not the inherited environment.
    assert supervise["SUPERVISE_FLAG"] == "yes" and "SUPERVISE_FLAG" not in egress
    assert all("UNRELATED" not in env for env in (egress, supervise, gate))
    # The log names variables, never their values.
    assert SECRET not in b.log_path.read_text()


@pytest.mark.parametrize("pattern", ["EGRESS_SECRET_*", "EGRESS_SECRET_2", "EGRESS_TOKEN_1"])
def test_a_plan_granting_a_secret_slot_to_another_daemon_is_refused(pattern: str) -> None:
    plan = {"daemons": [{"name": "git-gate", "argv": ["true"], "env": [pattern]}]}
    with pytest.raises(PlanError, match="egress daemon only"):
        parse_plan(plan)


@pytest.mark.parametrize(
    ("daemon", "pattern", "owner"),
    [("egress", "GITGATE_SECRET_*", "git-gate"), ("supervise", "GITGATE_SECRET_0", "git-gate"),
     ("git-gate", "E*", "egress"), ("relay", "GITGATE_*", "git-gate")],
)  # fmt: skip
def test_each_credential_prefix_has_one_owner(daemon: str, pattern: str, owner: str) -> None:
    plan = {"daemons": [{"name": daemon, "argv": ["true"], "env": [pattern]}]}
    with pytest.raises(PlanError, match=f"{owner} daemon only"):
        parse_plan(plan)


def test_a_plan_granting_a_token_slot_to_another_daemon_is_refused(tmp_path: Path) -> None:
    plan = {"daemons": [{"name": "supervise", "argv": ["true"], "env": ["EGRESS_*"]}]}
    with pytest.raises(PlanError, match="egress daemon only"):
        parse_plan(plan)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    result = subprocess.run(
        [sys.executable, "-m", "bot_bottle_sidecars.init", "--plan", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert json.loads(result.stderr.splitlines()[-1])["event"] == "init_plan_invalid"


def test_sighup_is_forwarded_to_egress_only(bundle: Callable[..., Bundle]) -> None:
    b = bundle(THREE)
    for name in ("egress", "git-gate", "supervise"):
        b.info(name)
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b.signals("egress") == ["HUP"], what="egress to get SIGHUP")
    assert b.signals("supervise") == [] and b.signals("git-gate") == []
    assert b.proc.poll() is None


def test_sigterm_stops_every_daemon_and_init_exits_cleanly(bundle: Callable[..., Bundle]) -> None:
    b = bundle(THREE, grace=10)
    pids = [b.info(name)["pid"] for name in ("egress", "git-gate", "supervise")]
    b.proc.send_signal(signal.SIGTERM)
    # Well inside the 10 s grace: everyone honours SIGTERM, nobody waits for SIGKILL.
    assert b.proc.wait(timeout=8) == 0
    for name in ("egress", "git-gate", "supervise"):
        assert b.signals(name) == ["TERM"]
    assert not any(alive(pid) for pid in pids)
    assert not any(e["event"] == "daemon_killed" for e in b.events())


def test_sigint_is_forwarded_like_sigterm(bundle: Callable[..., Bundle]) -> None:
    b = bundle([{"name": "supervise"}])
    b.info("supervise")
    b.proc.send_signal(signal.SIGINT)
    assert b.proc.wait(timeout=8) == 0
    assert b.signals("supervise") == ["INT"]
    assert any(e.get("signal") == "SIGINT" for e in b.events())


def test_a_daemon_ignoring_sigterm_is_killed_after_the_grace_period(
    bundle: Callable[..., Bundle],
) -> None:
    b = bundle([{"name": "egress", "mode": "stubborn"}, {"name": "supervise"}], grace=1)
    stubborn = b.info("egress")["pid"]
    b.info("supervise")
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=10) == 0
    assert b.signals("egress") == ["TERM"]
    assert not alive(stubborn)
    killed = [e for e in b.events() if e["event"] == "daemon_killed"]
    assert [e["daemon"] for e in killed] == ["egress"]


def test_a_second_sigint_kills_at_once(bundle: Callable[..., Bundle]) -> None:
    b = bundle([{"name": "egress", "mode": "stubborn"}], grace=60)
    stubborn = b.info("egress")["pid"]
    b.proc.send_signal(signal.SIGINT)
    wait_for(lambda: b.signals("egress") == ["INT"], what="the first signal")
    b.proc.send_signal(signal.SIGINT)
    # Far inside the 60 s grace period.
    assert b.proc.wait(timeout=15) == 0
    assert not alive(stubborn)
    assert any(e["event"] == "shutdown_forced" for e in b.events())


def test_a_crash_is_logged_restarted_with_backoff_then_given_up_loudly(
    bundle: Callable[..., Bundle],
) -> None:
    policy = {"initial": 0.2, "max_delay": 0.3, "max_crashes": 4, "window_seconds": 60}
    b = bundle(
        [{"name": "egress"}, {"name": "git-gate", "mode": "crash"}, {"name": "supervise"}],
        restart=policy,
    )
    egress, supervise = b.info("egress")["pid"], b.info("supervise")["pid"]
    gave_up = wait_for(
        lambda: next((e for e in b.events() if e["event"] == "daemon_gave_up"), None),
        what="init to give up on the crash loop",
    )
    exits = [e for e in b.events() if e["event"] == "daemon_exited"]
    # Every exit is logged with its status: the loop does not hide the cause.
    assert [e["exit_code"] for e in exits] == [3, 3, 3, 3]
    assert all(e["level"] == "error" and e["daemon"] == "git-gate" for e in exits)
    assert [e["crashes"] for e in exits] == [1, 2, 3, 4]
    # 0.2 s doubling, capped at 0.3 s; none after the last crash.
    assert [e["restart_in"] for e in exits] == [0.2, 0.3, 0.3, None]
    starts = [e for e in b.events() if e["event"] == "daemon_started" and e["daemon"] == "git-gate"]
    assert len(starts) == 4
    assert gave_up["level"] == "critical" and gave_up["last_exit"] == "exit 3"
    assert gave_up["crashes_in_window"] == 4
    time.sleep(0.5)
    assert alive(egress) and alive(supervise) and b.proc.poll() is None
    status = {d["name"]: d for d in b.ctl(cmd="status")["daemons"]}
    gate = status["git-gate"]
    assert (gate["running"], gate["state"], gate["crashes"]) == (False, "failed", 4)
    assert gate["last_exit"] == "exit 3" and gate["restarts"] == 3
    assert status["egress"]["state"] == "running" and status["supervise"]["running"]
    # The file the host reads says the same.
    on_disk = {d["name"]: d for d in json.loads(b.status_file.read_text())["daemons"]}
    assert on_disk["git-gate"]["state"] == "failed" and on_disk["git-gate"]["crashes"] == 4
    assert oct(b.status_file.stat().st_mode & 0o777) == "0o644"


def test_a_killed_daemon_is_started_again_and_its_signal_logged(
    bundle: Callable[..., Bundle],
) -> None:
    b = bundle(THREE, restart={"initial": 0.1})
    old = b.info("supervise")["pid"]
    (b.out / "supervise.json").unlink()
    os.kill(old, signal.SIGKILL)
    new = b.info("supervise")["pid"]
    assert new != old and not alive(old)
    exited = next(e for e in b.events() if e["event"] == "daemon_exited")
    assert (exited["daemon"], exited["signal"], exited["crashes"]) == ("supervise", "SIGKILL", 1)
    status = {d["name"]: d for d in b.ctl(cmd="status")["daemons"]}
    assert status["supervise"]["state"] == "running" and status["supervise"]["pid"] == new
    assert (
        status["supervise"]["crashes"] == 1 and status["supervise"]["last_exit"] == "signal SIGKILL"
    )
    assert status["egress"]["crashes"] == 0


def test_a_reload_reports_its_outcome_to_whoever_asked(bundle: Callable[..., Bundle]) -> None:
    b = bundle([{"name": "egress", "mode": "reporter"}, {"name": "supervise"}])
    b.info("egress")
    ok = b.ctl(cmd="reload")
    assert ok["ok"] is True and ok["results"] == {"egress": {"ok": True, "error": None}}
    (b.out / "egress.verdict").write_text("route 'x': token_ref MISSING is not set\n")
    bad = b.ctl(cmd="reload")
    assert bad["ok"] is False
    assert bad["results"]["egress"]["error"] == "route 'x': token_ref MISSING is not set"
    assert "MISSING" in bad["error"]
    failed = next(e for e in b.events() if e["event"] == "daemon_reload_failed")
    assert failed["level"] == "error" and "MISSING" in failed["error"]
    # A plain SIGHUP (no one waiting) leaves the outcome in the status.
    (b.out / "egress.verdict").unlink()
    b.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: next(d for d in b.ctl(cmd="status")["daemons"] if d["name"] == "egress")[
            "last_reload"
        ]["ok"],
        what="the SIGHUP's reload to be reported",
    )
    # The command line exits non-zero on a refused reload and prints why.
    (b.out / "egress.verdict").write_text("bad table\n")
    argv = [sys.executable, "-m", "bot_bottle_sidecars.init", "ctl", "--socket", b.socket]
    cli = subprocess.run([*argv, "reload"], capture_output=True, text=True, check=False)
    assert cli.returncode == 1 and "bad table" in json.loads(cli.stdout)["error"]


def test_a_reload_request_is_answered_when_the_daemon_dies_instead(
    bundle: Callable[..., Bundle],
) -> None:
    # "stubborn" records the HUP and never reports; killing it answers the request.
    b = bundle([{"name": "egress", "mode": "stubborn"}], restart={"initial": 5})
    pid = b.info("egress")["pid"]
    import threading

    replies: list[dict[str, Any]] = []
    wait_for(lambda: Path(b.socket).exists(), what="control socket")
    t = threading.Thread(
        target=lambda: replies.append(control_request(b.socket, {"cmd": "reload"}, timeout=20))
    )
    t.start()
    wait_for(lambda: b.signals("egress") == ["HUP"], what="the HUP")
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=20)
    assert replies and replies[0]["ok"] is False
    assert "egress exited (signal SIGKILL)" in replies[0]["error"]


def test_restart_replaces_one_daemon_and_leaves_the_others_alone(
    bundle: Callable[..., Bundle],
) -> None:
    b = bundle(THREE)
    egress = b.info("egress")["pid"]
    old = b.info("supervise")["pid"]
    (b.out / "supervise.json").unlink()
    assert b.ctl(cmd="restart", daemon="supervise")["ok"]
    new = b.info("supervise")["pid"]
    assert new != old and not alive(old)
    assert b.signals("supervise") == ["TERM"]
    assert b.signals("egress") == [] and alive(egress)
    status = {d["name"]: d for d in b.ctl(cmd="status")["daemons"]}
    assert status["supervise"]["pid"] == new and status["supervise"]["restarts"] == 1


def test_ctl_command_line_restarts_and_rejects_unknown_daemons(
    bundle: Callable[..., Bundle],
) -> None:
    b = bundle([{"name": "supervise"}])
    b.info("supervise")
    argv = [sys.executable, "-m", "bot_bottle_sidecars.init", "ctl", "--socket", b.socket]
    ok = subprocess.run(
        [*argv, "restart", "supervise"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*argv, "restart", "nope"], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "no daemon 'nope'" in json.loads(bad.stdout)["error"]


def test_what_a_dead_daemon_left_in_its_group_is_killed(bundle: Callable[..., Bundle]) -> None:
    b = bundle([{"name": "git-gate", "mode": "leaver"}, {"name": "supervise"}])
    b.info("git-gate")
    child = int(wait_for(lambda: (b.out / "git-gate.child").exists() and
                         (b.out / "git-gate.child").read_text(), what="the worker"))  # fmt: skip
    wait_for(lambda: any(e["event"] == "daemon_exited" for e in b.events()), what="the exit")
    wait_for(lambda: not alive(child), what="the worker to be killed")
    assert b.proc.poll() is None


def test_init_exits_when_every_daemon_has_failed_for_good(bundle: Callable[..., Bundle]) -> None:
    b = bundle(
        [{"name": "git-gate", "mode": "crash"}, {"name": "supervise", "mode": "done"}],
        restart={"initial": 0.05, "max_crashes": 2},
    )
    # An exit 0 nobody asked for is a crash too: a daemon is meant to run.
    assert b.proc.wait(timeout=15) == 1
    assert b.events()[-1]["event"] == "init_exiting"
    assert b.events()[-1]["failed"] == ["git-gate", "supervise"]


def test_orphaned_grandchildren_are_reaped(bundle: Callable[..., Bundle]) -> None:
    b = bundle([{"name": "supervise", "mode": "orphan"}])
    b.info("supervise")

    def zombies() -> list[str]:
        children = Path(f"/proc/{b.proc.pid}/task/{b.proc.pid}/children").read_text().split()
        return [
            pid
            for pid in children
            if Path(f"/proc/{pid}/stat").exists()
            and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        ]

    # The grandchild exits 0.2 s after its parent started; give it time to die.
    time.sleep(0.6)
    wait_for(lambda: zombies() == [], what="zombies to be reaped")
    assert b.proc.poll() is None


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"daemons": []}, "non-empty"),
        ({"daemons": [{"name": "Bad Name", "argv": ["x"]}]}, "invalid name"),
        ({"daemons": [{"name": "a", "argv": []}]}, "argv"),
        ({"daemons": [{"name": "a", "argv": ["x"]}, {"name": "a", "argv": ["y"]}]}, "more than"),
        ({"daemons": [{"name": "a", "argv": ["x"], "colour": 1}]}, "unknown key"),
        ({"grace_seconds": 0, "daemons": [{"name": "a", "argv": ["x"]}]}, "grace_seconds"),
        ({"daemons": [{"name": "a", "argv": ["x"], "on_demand": "8765"}]}, "HOST:PORT"),
        ({"daemons": [{"name": "a", "argv": ["x"], "on_demand": "127.0.0.1:0"}]}, "HOST:PORT"),
        ({"daemons": [{"name": "a", "argv": ["x"], "on_demand": "0.0.0.0:80"}]}, "loopback"),
    ],
)
def test_invalid_plans_are_refused_with_a_reason(plan: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan(plan)


def test_restart_kills_a_daemon_that_ignores_sigterm_then_starts_it_again(
    bundle: Callable[..., Bundle],
) -> None:
    b = bundle([{"name": "egress", "mode": "stubborn"}, {"name": "supervise"}], grace=1)
    old = b.info("egress")["pid"]
    supervise = b.info("supervise")["pid"]
    (b.out / "egress.json").unlink()
    assert b.ctl(cmd="restart", daemon="egress")["status"] == "restarting"
    new = b.info("egress")["pid"]
    assert new != old and not alive(old)
    assert alive(supervise) and b.signals("supervise") == []
    assert any(e["event"] == "daemon_killed" and e["daemon"] == "egress" for e in b.events())


def test_restart_starts_a_daemon_init_gave_up_on(bundle: Callable[..., Bundle]) -> None:
    b = bundle([{"name": "git-gate", "mode": "crash"}, {"name": "supervise"}],
               restart={"max_crashes": 1})  # fmt: skip
    b.info("git-gate")
    wait_for(lambda: any(e["event"] == "daemon_gave_up" for e in b.events()), what="giving up")
    (b.out / "git-gate.json").unlink()
    reply = b.ctl(cmd="restart", daemon="git-gate")
    assert reply["ok"] and reply["pid"]
    assert b.info("git-gate")["pid"] == reply["pid"]
    # It crashes again and init gives up again, after one more crash.
    gave_up = wait_for(
        lambda: [e for e in b.events() if e["event"] == "daemon_gave_up"][1:],
        what="the second give-up",
    )
    assert gave_up[0]["crashes_in_window"] == 1


def test_sighup_goes_to_egress_by_default_and_elsewhere_only_when_asked() -> None:
    plan = parse_plan(
        {
            "daemons": [
                {"name": "egress", "argv": ["x"]},
                {"name": "git-gate", "argv": ["x"]},
                {"name": "supervise", "argv": ["x"], "forward_sighup": True},
            ]
        }
    )
    assert [d.forward_sighup for d in plan.daemons] == [True, False, True]


# -- daemons as their own users --------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="switching a daemon's user needs init to run as root"
)


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _pids(b: Bundle, *names: str) -> dict[str, int]:
    def ready() -> dict[str, int] | None:
        daemons = {d["name"]: d for d in b.ctl(cmd="status")["daemons"]}
        pids = {n: daemons[n]["pid"] for n in names}
        return pids if all(pids.values()) else None

    return wait_for(ready, what="daemons to start")


@needs_root
def test_a_daemon_with_a_user_runs_as_it_with_no_capability(
    bundle: Callable[..., Bundle],
) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    b = bundle(
        [
            {"name": "supervise", "user": "nobody", "argv": ["sleep", "60"]},
            {"name": "egress", "env": ["EGRESS_TOKEN_*"], "argv": ["sleep", "60"]},
        ]
    )
    pids = _pids(b, "supervise", "egress")
    status = _status(pids["supervise"])
    assert status["Uid"].split() == [str(nobody.pw_uid)] * 4
    assert status["Gid"].split() == [str(nobody.pw_gid)] * 4
    assert status["Groups"] == ""
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, caps
    assert status["NoNewPrivs"] == "1"
    environ = Path(f"/proc/{pids['supervise']}/environ").read_bytes().split(b"\0")
    assert f"HOME={nobody.pw_dir}".encode() in environ
    assert f"USER={nobody.pw_name}".encode() in environ
    # Without a user, a daemon runs as init's user, as before.
    assert _status(pids["egress"])["Uid"].split()[0] == "0"
    # init can still signal and stop a daemon of another uid.
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=10) == 0
    assert not alive(pids["supervise"])


@needs_root
def test_private_copies_belong_to_the_daemons_user_alone(
    bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    src, dst = tmp_path / "in", tmp_path / "private"
    src.mkdir(mode=0o700)
    (src / "key").write_text("secret key\n")
    (src / "key").chmod(0o640)
    (src / "subdir").mkdir()
    # What a previous run of the daemon left behind, including a symlink
    # pointing at a file init must not overwrite.
    dst.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (dst / "key").symlink_to(victim)
    (dst / "stale").write_text("old\n")
    b = bundle(
        [
            {
                "name": "git-gate",
                "user": "nobody",
                "argv": ["sleep", "60"],
                "copy": [{"from": str(src), "to": str(dst)}],
            }
        ]
    )
    _pids(b, "git-gate")
    assert sorted(p.name for p in dst.iterdir()) == ["key"]
    assert victim.read_text() == "untouched\n"
    assert (dst / "key").read_text() == "secret key\n"
    for path, mode in ((dst, 0o700), (dst / "key", 0o600)):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), path
        assert st.st_mode & 0o777 == mode, path


@needs_root
def test_a_daemon_whose_user_is_missing_is_not_started(bundle: Callable[..., Bundle]) -> None:
    b = bundle(
        [
            {"name": "git-gate", "user": "bb-no-such-user", "argv": ["sleep", "60"]},
            {"name": "supervise", "argv": ["sleep", "60"]},
        ]
    )
    _pids(b, "supervise")
    gate = next(d for d in b.ctl(cmd="status")["daemons"] if d["name"] == "git-gate")
    assert gate["pid"] is None
    assert "no user 'bb-no-such-user'" in gate["last_exit"]


def test_a_failed_exec_is_reported_not_started(
    bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    script = tmp_path / "no-interpreter"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    b = bundle([{"name": "git-gate", "argv": [str(script)]}, {"name": "supervise"}])
    b.info("supervise")
    gate = next(d for d in b.ctl(cmd="status")["daemons"] if d["name"] == "git-gate")
    assert gate["pid"] is None
    assert gate["last_exit"].startswith("not started: exec:")


@pytest.mark.parametrize(
    ("daemons", "message"),
    [
        ([{"name": "a", "argv": ["x"], "user": "Root User"}], "invalid user"),
        ([{"name": "a", "argv": ["x"], "user": 0}], "invalid user"),
        (
            [{"name": "a", "argv": ["x"], "user": "u"}, {"name": "b", "argv": ["x"], "user": "u"}],
            "more than one daemon",
        ),
        ([{"name": "a", "argv": ["x"], "copy": [{"from": "rel", "to": "/x"}]}], "copy"),
        ([{"name": "a", "argv": ["x"], "copy": [{"from": "/x/../y", "to": "/x"}]}], "copy"),
        ([{"name": "a", "argv": ["x"], "copy": [{"from": "/x"}]}], "copy"),
    ],
)
def test_invalid_users_and_copies_are_refused(daemons: list[Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan({"daemons": daemons})


def test_oom_score_adj_is_raised_for_the_daemons_that_should_die_first(
    bundle: Callable[..., Bundle],
) -> None:
    b = bundle([{"name": "git-gate", "oom_score_adj": 800}, {"name": "egress"}])
    gate, egress = b.info("git-gate")["pid"], b.info("egress")["pid"]
    assert Path(f"/proc/{gate}/oom_score_adj").read_text().strip() == "800"
    assert Path(f"/proc/{egress}/oom_score_adj").read_text().strip() == str(
        int(Path("/proc/self/oom_score_adj").read_text())
    )
    with pytest.raises(PlanError, match="oom_score_adj"):
        parse_plan({"daemons": [{"name": "a", "argv": ["x"], "oom_score_adj": -5}]})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ask(port: int) -> int:
    """Connect and read the serving daemon's pid (waits while it starts: a
    restarted daemon writes its info file before it binds the port)."""
    import socket

    deadline = time.monotonic() + 15
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=15)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        with conn:
            conn.settimeout(15)
            return int(conn.makefile().readline())


def _states(b: Bundle) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in b.ctl(cmd="status")["daemons"]}


def test_an_on_demand_daemon_starts_on_its_first_connection_with_inits_socket(
    bundle: Callable[..., Bundle],
) -> None:
    port = _free_port()
    b = bundle(
        [
            {"name": "egress"},
            {"name": "supervise", "mode": "serve", "on_demand": f"127.0.0.1:{port}",
             "set_env": {"SERVE_PORT": str(port)}},
        ]
    )  # fmt: skip
    b.info("egress")
    idle = _states(b)["supervise"]
    assert (idle["state"], idle["pid"]) == ("idle", None)
    assert json.loads(b.status_file.read_text())["daemons"][1]["state"] == "idle"
    assert not (b.out / "supervise.json").exists()
    # The first client is served by the daemon its connection started.
    pid = _ask(port)
    info = b.info("supervise")
    assert info["pid"] == pid and "BOT_BOTTLE_LISTEN_FD" in info["env"]
    assert _states(b)["supervise"]["state"] == "running"
    assert any(e.get("event") == "daemon_activated" for e in b.events())

    # A crash: the restart binds the port itself (init no longer holds it).
    (b.out / "supervise.json").unlink()
    os.kill(pid, signal.SIGKILL)
    info = b.info("supervise")
    assert info["pid"] != pid and "BOT_BOTTLE_LISTEN_FD" not in info["env"]
    assert _ask(port) == info["pid"]


def test_an_idle_daemon_is_stopped_cleanly_and_restart_starts_it_at_once(
    bundle: Callable[..., Bundle],
) -> None:
    port = _free_port()
    spec = {"name": "supervise", "mode": "serve", "on_demand": f"127.0.0.1:{port}",
            "set_env": {"SERVE_PORT": str(port)}}  # fmt: skip
    b = bundle([{"name": "egress"}, spec])
    b.info("egress")
    assert _states(b)["supervise"]["state"] == "idle"
    # ctl restart is an operator's request: started now, binding the port itself.
    assert b.ctl(cmd="restart", daemon="supervise")["ok"]
    info = b.info("supervise")
    assert "BOT_BOTTLE_LISTEN_FD" not in info["env"]
    assert _ask(port) == info["pid"]

    port2 = _free_port()
    spec2 = {**spec, "on_demand": f"127.0.0.1:{port2}", "set_env": {"SERVE_PORT": str(port2)}}
    second = b.out.parent / "second"
    second.mkdir()
    other = Bundle(second, [{"name": "egress"}, spec2])
    try:
        other.info("egress")
        assert _states(other)["supervise"]["state"] == "idle"
        other.proc.send_signal(signal.SIGTERM)
        assert other.proc.wait(timeout=15) == 0
        # The address is free again: init closed its socket on the way out.
        import socket

        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port2))
        assert not (other.out / "supervise.json").exists()
    finally:
        other.stop()
