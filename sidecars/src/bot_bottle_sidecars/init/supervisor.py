"""The init supervisor: PID 1 of the sidecar bundle.

Why not supervisord: its children inherit its environment (per-daemon
scoping would still need a wrapper), SIGHUP reloads supervisord itself
instead of reaching one program, and it adds a second configuration format
and an XML-RPC control server to the image. The behaviours below are a few
hundred lines of standard-library Python that the tests drive directly.

Behaviour:

* Every daemon of the plan starts in its own process group with an explicit
  environment (:meth:`DaemonSpec.build_env`), never the inherited one, and
  as its own user with no capability when the plan names one
  (:mod:`bot_bottle_sidecars.init.privileges`); init itself stays root.
* SIGTERM/SIGINT: the signal goes to every daemon's process group; whatever is
  still running after ``grace_seconds`` gets SIGKILL; init exits 0. A second
  SIGTERM/SIGINT during the grace period sends SIGKILL at once.
* SIGHUP: forwarded to the daemons with ``forward_sighup`` (egress reloads
  its routes); init itself does nothing else with it.
* A daemon that exits is logged with its exit code (or signal); the others
  keep running. It is not restarted automatically -- a crash loop would
  hide the cause -- but can be restarted on request.
* Control socket (a Unix socket, root-only): one JSON line in, one JSON line
  out. ``{"cmd": "status"}``, ``{"cmd": "restart", "daemon": NAME}`` (SIGTERM
  to that daemon alone, SIGKILL after the grace period, then start it again;
  siblings are untouched) and ``{"cmd": "reload"}`` (same as SIGHUP). The
  ``ctl`` sub-command is the client.
* Every child is reaped, including orphans reparented to init (PID 1, or a
  child subreaper when init runs elsewhere, e.g. in tests).
* Init exits when signalled, or when every daemon is gone (status 1 if any
  failed, else 0).

Signals are turned into bytes on a pipe (``signal.set_wakeup_fd``) and
handled in one ``select`` loop together with the control socket, so no work
ever happens inside a signal handler.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot_bottle.log import get_logger
from bot_bottle_sidecars.init.logsink import LogSink
from bot_bottle_sidecars.init.plan import DaemonSpec, InitPlan
from bot_bottle_sidecars.init.privileges import (
    DaemonUser,
    PrivilegeError,
    drop_privileges,
    private_copy,
    resolve_user,
)
from bot_bottle_sidecars.init.privileges import prepare as prepare_privileges

log = get_logger("init")

_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
#: Reset to default in every child: the handled ones, and the ones Python
#: ignores for itself (a daemon must die of SIGPIPE like any other program).
_CHILD_DEFAULT = {*_HANDLED, signal.SIGPIPE, signal.SIGXFSZ}
_PR_SET_CHILD_SUBREAPER = 36
_CONTROL_READ_TIMEOUT = 1.0
_MAX_CONTROL_BYTES = 4096


@dataclass
class Daemon:
    spec: DaemonSpec
    pid: int | None = None
    started_at: float | None = None
    last_exit: str | None = None
    restart_pending: bool = False
    #: When a restart's SIGTERM turns into SIGKILL.
    kill_at: float | None = None
    restarts: int = 0
    failed: bool = False


def _describe(status: int) -> tuple[str, dict[str, Any]]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"signal {signal.Signals(sig).name}", {"signal": signal.Signals(sig).name}
    code = os.waitstatus_to_exitcode(status)
    return f"exit {code}", {"exit_code": code}


def _become_subreaper() -> None:
    # Outside a container (tests, development) init is not PID 1, so orphans
    # would go to the real init; as a subreaper they come to us instead.
    if os.getpid() == 1 or not Path("/proc/self").exists():
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@dataclass
class Supervisor:
    plan: InitPlan
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    daemons: dict[str, Daemon] = field(init=False)
    _shutdown_signal: str | None = field(init=False, default=None)
    _kill_at: float | None = field(init=False, default=None)
    _killed: bool = field(init=False, default=False)
    #: Set when the plan has a log_dir: daemons' output goes through pipes to it.
    sink: LogSink | None = field(default=None)
    _selector: selectors.BaseSelector | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.daemons = {spec.name: Daemon(spec) for spec in self.plan.daemons}
        if self.sink is None and self.plan.log_dir is not None:
            self.sink = LogSink(
                Path(self.plan.log_dir),
                self.plan.log_max_bytes,
                self.plan.log_keep,
                echo=_stdout_buffer(),
            )

    # -- processes ---------------------------------------------------------

    def _spawn(self, daemon: Daemon) -> None:
        spec = daemon.spec
        env = spec.build_env(self.environ)
        try:
            user = resolve_user(spec.user) if spec.user is not None else None
            if user is not None:
                # Init's own HOME (root's) is not the daemon's: git and ssh
                # read and write there.
                env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
            program = shutil.which(spec.argv[0], path=env.get("PATH", os.defpath))
            if program is None:
                raise PrivilegeError(f"program not found: {spec.argv[0]}")
            for src, dst in spec.copies:
                try:
                    private_copy(Path(src), Path(dst), user)
                except OSError as exc:
                    raise PrivilegeError(f"copying {src} to {dst}: {exc.strerror}") from None
            out_r, out_w = os.pipe2(os.O_CLOEXEC) if self.sink is not None else (-1, -1)
            try:
                pid = _fork_exec(program, list(spec.argv), env, user, output=out_w)
            except BaseException:
                if out_r >= 0:
                    os.close(out_r)
                raise
            finally:
                if out_w >= 0:
                    os.close(out_w)
            if out_r >= 0:
                self._watch_output(out_r, spec.name)
        except PrivilegeError as exc:
            daemon.pid, daemon.failed = None, True
            daemon.last_exit = f"not started: {exc}"
            log.error("daemon_spawn_failed", daemon=spec.name, error=str(exc))
            return
        daemon.pid, daemon.started_at = pid, time.monotonic()
        # Names only: the values may be credentials.
        log.info(
            "daemon_started",
            daemon=spec.name,
            pid=pid,
            user=spec.user,
            env_names=sorted(env),
        )

    def _watch_output(self, fd: int, name: str) -> None:
        os.set_blocking(fd, False)
        if self._selector is not None:
            self._selector.register(fd, selectors.EVENT_READ, ("output", name))

    def _read_output(self, fd: int, name: str) -> None:
        assert self.sink is not None
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.sink.feed(fd, name, data)
            return
        # Every writer is gone (the daemon and whatever it left running).
        self._read_output_eof(fd, name)

    def _drain_outputs(self) -> None:
        # What daemons wrote just before they exited is kept too.
        if self._selector is None:
            return
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, tuple) and key.data[0] == "output":
                fd = int(key.fd)
                for _ in range(64):
                    if fd not in self._selector.get_map():
                        break
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    except OSError:
                        chunk = b""
                    if not chunk:
                        self._read_output_eof(fd, key.data[1])
                        break
                    assert self.sink is not None
                    self.sink.feed(fd, key.data[1], chunk)

    def _read_output_eof(self, fd: int, name: str) -> None:
        assert self.sink is not None and self._selector is not None
        self.sink.eof(fd, name)
        self._selector.unregister(fd)
        os.close(fd)

    def _signal(self, daemon: Daemon, sig: signal.Signals) -> None:
        if daemon.pid is None:
            return
        # The whole group: a daemon's own children (git daemon's per-connection
        # workers) go down with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(daemon.pid, sig)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            daemon = next((d for d in self.daemons.values() if d.pid == pid), None)
            if daemon is None:
                log.debug("orphan_reaped", pid=pid)
                continue
            self._exited(daemon, status)

    def _exited(self, daemon: Daemon, status: int) -> None:
        text, fields = _describe(status)
        if daemon.pid is not None:
            # Whatever the daemon left running in its group (git daemon's
            # per-connection workers) goes with it, so a restart finds its
            # port free. The group id stays reserved while members exist.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(daemon.pid, signal.SIGKILL)
        daemon.pid, daemon.kill_at, daemon.last_exit = None, None, text
        expected = self._shutdown_signal is not None or daemon.restart_pending
        daemon.failed = not expected and text != "exit 0"
        event = "daemon_stopped" if expected else "daemon_exited"
        level = log.info if expected or text == "exit 0" else log.error
        level(event, daemon=daemon.spec.name, **fields)
        if daemon.restart_pending and self._shutdown_signal is None:
            daemon.restart_pending = False
            daemon.restarts += 1
            self._spawn(daemon)
            log.info("daemon_restarted", daemon=daemon.spec.name, pid=daemon.pid)

    def running(self) -> list[Daemon]:
        return [d for d in self.daemons.values() if d.pid is not None]

    # -- requests ----------------------------------------------------------

    def begin_shutdown(self, sig: signal.Signals) -> None:
        if self._shutdown_signal is not None:
            # A second Ctrl-C (or docker stop after a hung shutdown) means now.
            if not self._killed:
                log.warning("shutdown_forced", signal=sig.name)
                self._kill_at = time.monotonic()
            return
        self._shutdown_signal = sig.name
        self._kill_at = time.monotonic() + self.plan.grace_seconds
        log.info("shutdown_started", signal=sig.name, grace_seconds=self.plan.grace_seconds)
        for daemon in self.running():
            daemon.restart_pending = False
            self._signal(daemon, sig)

    def reload(self) -> list[str]:
        targets = [d for d in self.running() if d.spec.forward_sighup]
        for daemon in targets:
            self._signal(daemon, signal.SIGHUP)
        names = [d.spec.name for d in targets]
        log.info("sighup_forwarded", daemons=names)
        return names

    def restart(self, name: str) -> dict[str, Any]:
        daemon = self.daemons.get(name)
        if daemon is None:
            return {"ok": False, "error": f"no daemon {name!r} in the plan"}
        if self._shutdown_signal is not None:
            return {"ok": False, "error": "init is shutting down"}
        log.info("daemon_restart_requested", daemon=name)
        if daemon.pid is None:
            daemon.restarts += 1
            self._spawn(daemon)
            return {"ok": daemon.pid is not None, "daemon": name, "pid": daemon.pid}
        if not daemon.restart_pending:
            daemon.restart_pending = True
            daemon.kill_at = time.monotonic() + self.plan.grace_seconds
            self._signal(daemon, signal.SIGTERM)
        return {"ok": True, "daemon": name, "status": "restarting"}

    def status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "shutting_down": self._shutdown_signal is not None,
            "daemons": [
                {
                    "name": d.spec.name,
                    "pid": d.pid,
                    "running": d.pid is not None,
                    "last_exit": d.last_exit,
                    "restarts": d.restarts,
                }
                for d in self.daemons.values()
            ],
        }

    def handle_command(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"ok": False, "error": "expected a JSON object"}
        cmd = request.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd == "reload":
            return {"ok": True, "daemons": self.reload()}
        if cmd == "restart":
            name = request.get("daemon")
            if not isinstance(name, str):
                return {"ok": False, "error": "restart needs 'daemon'"}
            return self.restart(name)
        return {"ok": False, "error": f"unknown command {cmd!r}; use status, restart or reload"}

    # -- loop --------------------------------------------------------------

    def _deadline_checks(self) -> None:
        now = time.monotonic()
        if self._kill_at is not None and now >= self._kill_at and not self._killed:
            self._killed = True
            for daemon in self.running():
                log.warning("daemon_killed", daemon=daemon.spec.name, reason="grace period over")
                self._signal(daemon, signal.SIGKILL)
        for daemon in self.running():
            if daemon.kill_at is not None and now >= daemon.kill_at:
                daemon.kill_at = None
                log.warning("daemon_killed", daemon=daemon.spec.name, reason="restart grace over")
                self._signal(daemon, signal.SIGKILL)

    def _next_timeout(self) -> float | None:
        deadlines = [d.kill_at for d in self.running() if d.kill_at is not None]
        if self._kill_at is not None and not self._killed:
            deadlines.append(self._kill_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _done(self) -> bool:
        return not self.running() and not any(d.restart_pending for d in self.daemons.values())

    def run(self) -> int:
        _become_subreaper()
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        for sig in _HANDLED:
            signal.signal(sig, lambda *_: None)
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        selector = selectors.DefaultSelector()
        self._selector = selector
        selector.register(rfd, selectors.EVENT_READ, "signals")
        control = self._open_control()
        if control is not None:
            selector.register(control, selectors.EVENT_READ, "control")
        log.info(
            "init_started",
            pid=os.getpid(),
            daemons=[d.name for d in self.plan.daemons],
            control_socket=self.plan.control_socket,
        )
        try:
            for daemon in self.daemons.values():
                self._spawn(daemon)
            while True:
                self._reap()
                self._deadline_checks()
                if self._done():
                    break
                for key, _ in selector.select(self._next_timeout()):
                    if key.data == "signals":
                        self._drain_signals(rfd)
                    elif isinstance(key.data, tuple):
                        self._read_output(int(key.fd), key.data[1])
                    elif control is not None:
                        self._serve_control(control)
        finally:
            self._drain_outputs()
            signal.set_wakeup_fd(-1)
            for key in list(selector.get_map().values()):
                if isinstance(key.data, tuple):
                    selector.unregister(key.fd)
                    with contextlib.suppress(OSError):
                        os.close(int(key.fd))
            self._selector = None
            selector.close()
            os.close(rfd)
            os.close(wfd)
            if control is not None:
                control.close()
                with contextlib.suppress(OSError):
                    Path(str(self.plan.control_socket)).unlink()
        failed = [d.spec.name for d in self.daemons.values() if d.failed]
        code = 0 if self._shutdown_signal is not None or not failed else 1
        log.info("init_exiting", exit_code=code, failed=failed, signal=self._shutdown_signal)
        return code

    def _drain_signals(self, rfd: int) -> None:
        try:
            data = os.read(rfd, 512)
        except BlockingIOError:
            return
        for signum in data:
            sig = signal.Signals(signum)
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.begin_shutdown(sig)
            elif sig == signal.SIGHUP:
                self.reload()
            # SIGCHLD: the loop reaps on every turn.

    def _open_control(self) -> socket.socket | None:
        path = self.plan.control_socket
        if path is None:
            return None
        sock_path = Path(path)
        try:
            sock_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # Only root (init's user) may restart daemons.
            old = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            sock.listen(8)
            sock.setblocking(False)
        except OSError as exc:
            log.warning("control_socket_unavailable", path=path, error=exc.strerror)
            return None
        return sock

    def _serve_control(self, server: socket.socket) -> None:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return
        with conn:
            # A silent client must not stall PID 1 for long.
            conn.settimeout(_CONTROL_READ_TIMEOUT)
            buf = b""
            try:
                while b"\n" not in buf and len(buf) < _MAX_CONTROL_BYTES:
                    chunk = conn.recv(_MAX_CONTROL_BYTES)
                    if not chunk:
                        break
                    buf += chunk
                try:
                    request = json.loads(buf.split(b"\n", 1)[0] or b"null")
                except ValueError:
                    reply: dict[str, Any] = {"ok": False, "error": "request is not JSON"}
                else:
                    reply = self.handle_command(request)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError as exc:
                log.warning("control_request_failed", error=str(exc))


def _stdout_buffer() -> Any:
    import sys

    return getattr(sys.stdout, "buffer", None)


def _fork_exec(
    program: str,
    argv: list[str],
    env: dict[str, str],
    user: DaemonUser | None,
    *,
    output: int = -1,
) -> int:
    """Start ``program`` in its own process group, as ``user`` when given.

    ``posix_spawn`` cannot change the uid or capabilities, so this forks (init
    is single-threaded) and does the work in the child. A failure in the
    child reaches the parent through a close-on-exec pipe: end of file means
    ``exec`` succeeded. The handled signals are blocked around ``fork`` so
    none reaches the child while it still has init's handlers (they would
    write to init's wakeup pipe); the child resets them before unblocking.
    """
    last_cap = prepare_privileges() if user is not None else 0
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    try:
        pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(rfd)
        os.close(wfd)
        raise PrivilegeError(f"fork: {exc.strerror}") from None
    if pid == 0:  # pragma: no cover - the child; its effects are tested
        _child(program, argv, env, user, last_cap, wfd, output)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    os.close(wfd)
    try:
        report = b""
        while chunk := os.read(rfd, 4096):
            report += chunk
    finally:
        os.close(rfd)
    if report:
        os.waitpid(pid, 0)
        raise PrivilegeError(report.decode("utf-8", "replace"))
    return pid


def _child(  # pragma: no cover - runs between fork and exec
    program: str,
    argv: list[str],
    env: dict[str, str],
    user: DaemonUser | None,
    last_cap: int,
    report_fd: int,
    output: int = -1,
) -> None:
    stage = "setup"
    try:
        if output >= 0:
            # stdout and stderr into init's pipe (dup2 clears close-on-exec).
            os.dup2(output, 1)
            os.dup2(output, 2)
        signal.set_wakeup_fd(-1)
        for sig in _CHILD_DEFAULT:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        stage = "process group"
        os.setpgid(0, 0)
        if user is not None:
            stage = "dropping privileges"
            drop_privileges(user, last_cap)
            os.umask(0o077)
            with contextlib.suppress(OSError):
                os.chdir(user.home)
        stage = "exec"
        os.execve(program, argv, env)  # noqa: S606 -- argv from the plan, no shell
    except BaseException as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        with contextlib.suppress(BaseException):
            os.write(report_fd, f"{stage}: {detail}".encode())
    finally:
        os._exit(127)


def control_request(path: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to a running init and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
