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
  its routes). Such a daemon gets a pipe (its number in
  ``BOT_BOTTLE_STATUS_FD``) on which it reports each reload's outcome as one
  JSON line (``{"reload": {"ok": false, "error": "..."}}``); init logs it,
  keeps it in the status, and hands it to the ``reload`` request that asked.
* A daemon that exits on its own (any status, or a failed start) is logged
  with its exit code or signal and its crash count, and started again after a
  backoff (:class:`~bot_bottle_sidecars.init.plan.RestartPolicy`: 0.5 s
  doubling to 30 s). The first design left a dead daemon alone because a
  crash loop would hide the cause; here every exit is logged, and after
  ``max_crashes`` within the window the daemon is left ``failed`` with a
  ``daemon_gave_up`` error naming the last exit, until a ``ctl restart``.
  The others keep running throughout.
* Control socket (a Unix socket, root-only): one JSON line in, one JSON line
  out. ``{"cmd": "status"}``, ``{"cmd": "restart", "daemon": NAME}`` (SIGTERM
  to that daemon alone, SIGKILL after the grace period, then start it again;
  siblings are untouched; also clears a ``failed`` state) and
  ``{"cmd": "reload"}`` (same as SIGHUP; the reply waits for the reporting
  daemons' outcome: ``ok`` is false, with each ``error``, when a reload was
  refused and the previous table stays in force). The ``ctl`` sub-command
  is the client.
* Status file (plan ``status_file``): the same summary as ``status``,
  replaced atomically on every change, for readers outside the bundle.
* On demand (plan ``on_demand``: a loopback ``HOST:PORT``): init binds and
  listens there before any daemon starts, and starts the daemon only when the
  first connection arrives, handing it the listening socket (its number in
  ``BOT_BOTTLE_LISTEN_FD``); until then its state is ``idle``. An idle
  bottle does not pay for a daemon nobody called (supervise: ~60 MiB and a
  second of CPU at every launch). The connection waits in the socket's
  backlog while the daemon starts. Init closes its own copy once the daemon
  has it, so a restart (after a crash, or ``ctl restart``) binds the port
  itself and a refused connection gets the relay's "restarting" answer as
  for any daemon.
* Every child is reaped, including orphans reparented to init (PID 1, or a
  child subreaper when init runs elsewhere, e.g. in tests).
* Init exits when signalled, or when every daemon has failed for good
  (status 1).

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
from bot_bottle_sidecars.init.plan import LISTEN_FD_ENV, DaemonSpec, InitPlan
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


#: Environment variable naming the pipe a reloading daemon reports on.
STATUS_FD_ENV = "BOT_BOTTLE_STATUS_FD"
#: How long a ``reload`` request waits for the daemons' reports.
RELOAD_ANSWER_SECONDS = 15.0
_MAX_REPORT_LINE = 8192


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
    #: Exits nobody asked for, and failed starts, since init began.
    crashes: int = 0
    #: Their times (monotonic) within the restart policy's window.
    recent: list[float] = field(default_factory=list)
    #: When the next automatic start is due (backing off after a crash).
    start_at: float | None = None
    #: Gave up (too many crashes): only a ``restart`` request starts it.
    failed: bool = False
    #: The read end of the daemon's report pipe, and a partial line from it.
    report_fd: int | None = None
    report_buf: bytes = b""
    reloads_reported: int = 0
    last_reload: dict[str, Any] | None = None
    #: An on-demand daemon's listening socket, held by init until it starts.
    listener: socket.socket | None = None

    @property
    def state(self) -> str:
        if self.pid is not None:
            return "stopping" if self.restart_pending else "running"
        if self.listener is not None:
            return "idle"
        if self.failed:
            return "failed"
        if self.start_at is not None or self.restart_pending:
            return "restarting"
        return "stopped"


@dataclass
class _PendingReload:
    conn: socket.socket
    deadline: float
    #: daemon name -> reports seen before the SIGHUP went out
    before: dict[str, int]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
    _pending: list[_PendingReload] = field(init=False, default_factory=list)

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
        daemon.start_at = None
        env = spec.build_env(self.environ)
        report_w: int | None = None
        # An on-demand daemon's first start inherits init's listening socket;
        # init's copy goes whatever happens (a restart binds the port itself).
        listener, daemon.listener = daemon.listener, None
        if listener is not None:
            self._unwatch(listener)
            env[LISTEN_FD_ENV] = str(listener.fileno())
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
            if spec.forward_sighup:
                report_r, report_w = os.pipe()
                self._close_report(daemon)
                os.set_blocking(report_r, False)
                daemon.report_fd, daemon.report_buf = report_r, b""
                if self._selector is not None:
                    self._selector.register(report_r, selectors.EVENT_READ, daemon.spec.name)
                env[STATUS_FD_ENV] = str(report_w)
            out_r, out_w = os.pipe2(os.O_CLOEXEC) if self.sink is not None else (-1, -1)
            try:
                keep = tuple(
                    fd for fd in (report_w, listener.fileno() if listener else None)
                    if fd is not None
                )  # fmt: skip
                pid = _fork_exec(
                    program, list(spec.argv), env, user,
                    output=out_w, keep_fds=keep, oom=spec.oom_score_adj,
                )  # fmt: skip
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
            daemon.pid = None
            daemon.last_exit = f"not started: {exc}"
            log.error("daemon_spawn_failed", daemon=spec.name, error=str(exc))
            self._close_report(daemon)
            self._crashed(daemon, daemon.last_exit)
            return
        finally:
            if report_w is not None:
                os.close(report_w)
            if listener is not None:
                listener.close()
        daemon.pid, daemon.started_at = pid, time.monotonic()
        # Names only: the values may be credentials.
        log.info(
            "daemon_started",
            daemon=spec.name,
            pid=pid,
            user=spec.user,
            env_names=sorted(env),
        )
        self._write_status()

    def _listen(self, daemon: Daemon) -> None:
        """Bind the on-demand daemon's address; start it at once if that fails."""
        assert daemon.spec.on_demand is not None
        host, port = daemon.spec.on_demand
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.warning("on_demand_listen_failed", daemon=daemon.spec.name, error=str(exc))
            self._spawn(daemon)
            return
        daemon.listener = sock
        if self._selector is not None:
            self._selector.register(sock, selectors.EVENT_READ, ("activate", daemon.spec.name))
        log.info("daemon_on_demand", daemon=daemon.spec.name, listen=f"{host}:{port}")

    def _unwatch(self, sock: socket.socket) -> None:
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)

    def _activate(self, name: str) -> None:
        daemon = self.daemons[name]
        if daemon.listener is None or daemon.pid is not None:
            return
        log.info("daemon_activated", daemon=name)
        self._spawn(daemon)

    def _close_listener(self, daemon: Daemon) -> None:
        if daemon.listener is not None:
            self._unwatch(daemon.listener)
            daemon.listener.close()
            daemon.listener = None

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
        # Its last words (a reload report written just before dying).
        self._read_report(daemon)
        self._close_report(daemon)
        daemon.pid, daemon.kill_at, daemon.last_exit = None, None, text
        expected = self._shutdown_signal is not None or daemon.restart_pending
        if expected:
            log.info("daemon_stopped", daemon=daemon.spec.name, **fields)
        if daemon.restart_pending and self._shutdown_signal is None:
            daemon.restart_pending = False
            daemon.restarts += 1
            self._spawn(daemon)
            log.info("daemon_restarted", daemon=daemon.spec.name, pid=daemon.pid)
        elif not expected:
            self._crashed(daemon, text, **fields)
        self._write_status()

    def _crashed(self, daemon: Daemon, text: str, **fields: Any) -> None:
        """An exit nobody asked for (or a failed start): back off, or give up."""
        if self._shutdown_signal is not None:
            return
        policy = self.plan.restart
        now = time.monotonic()
        daemon.crashes += 1
        daemon.recent = [t for t in daemon.recent if now - t < policy.window_seconds] + [now]
        name = daemon.spec.name
        if len(daemon.recent) >= policy.max_crashes:
            daemon.failed, daemon.start_at = True, None
            log.error("daemon_exited", daemon=name, crashes=daemon.crashes, **fields,
                      restart_in=None)  # fmt: skip
            log.critical(
                "daemon_gave_up",
                daemon=name,
                crashes_in_window=len(daemon.recent),
                window_seconds=policy.window_seconds,
                last_exit=text,
                hint=f"fix the cause, then: python -m bot_bottle_sidecars.init ctl restart {name}",
            )
            return
        delay = policy.delay(len(daemon.recent))
        daemon.start_at = now + delay
        log.error(
            "daemon_exited",
            daemon=name,
            crashes=daemon.crashes,
            restart_in=round(delay, 3),
            **fields,
        )

    def running(self) -> list[Daemon]:
        return [d for d in self.daemons.values() if d.pid is not None]

    # -- reload reports ------------------------------------------------------

    def _close_report(self, daemon: Daemon) -> None:
        if daemon.report_fd is None:
            return
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(daemon.report_fd)
        os.close(daemon.report_fd)
        daemon.report_fd, daemon.report_buf = None, b""

    def _read_report(self, daemon: Daemon) -> None:
        if daemon.report_fd is None:
            return
        while True:
            try:
                chunk = os.read(daemon.report_fd, 4096)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                # The daemon closed its end (it exited): stop watching.
                if daemon.pid is not None and self._selector is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(daemon.report_fd)
                break
            daemon.report_buf += chunk
            while b"\n" in daemon.report_buf:
                line, daemon.report_buf = daemon.report_buf.split(b"\n", 1)
                self._report(daemon, line)
            if len(daemon.report_buf) > _MAX_REPORT_LINE:
                daemon.report_buf = b""
        self._answer_reloads()

    def _report(self, daemon: Daemon, line: bytes) -> None:
        try:
            data = json.loads(line)
            reload = data["reload"]
            ok = reload["ok"] is True
            error = None if ok else str(reload.get("error") or "reload failed")
        except (ValueError, KeyError, TypeError):
            log.warning("daemon_report_invalid", daemon=daemon.spec.name, bytes=len(line))
            return
        daemon.reloads_reported += 1
        daemon.last_reload = {"ok": ok, "error": error, "at": now_iso()}
        if ok:
            log.info("daemon_reloaded", daemon=daemon.spec.name)
        else:
            log.error("daemon_reload_failed", daemon=daemon.spec.name, error=error,
                      effect="the previous configuration stays in force")  # fmt: skip
        self._write_status()

    def _answer_reloads(self, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        keep: list[_PendingReload] = []
        for pending in self._pending:
            results: dict[str, dict[str, Any]] = {}
            done = True
            for name, before in pending.before.items():
                d = self.daemons[name]
                if d.reloads_reported > before and d.last_reload is not None:
                    results[name] = {"ok": d.last_reload["ok"], "error": d.last_reload["error"]}
                elif d.pid is None:
                    results[name] = {"ok": False, "error": f"{name} exited ({d.last_exit})"}
                elif now >= pending.deadline:
                    results[name] = {
                        "ok": False,
                        "error": f"{name} did not report within {RELOAD_ANSWER_SECONDS:.0f} s",
                    }
                else:
                    done = False
            if not done:
                keep.append(pending)
                continue
            ok = all(r["ok"] for r in results.values())
            reply: dict[str, Any] = {"ok": ok, "daemons": sorted(results), "results": results}
            if not ok:
                reply["error"] = "; ".join(
                    f"{n}: {r['error']}" for n, r in sorted(results.items()) if not r["ok"]
                )
            _send_reply(pending.conn, reply)
        self._pending = keep

    # -- status --------------------------------------------------------------

    def _write_status(self) -> None:
        path = self.plan.status_file
        if path is None:
            return
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            data = json.dumps({**self.status(), "updated": now_iso()}, indent=1) + "\n"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
            tmp.chmod(0o644)  # whatever the umask: the relays' user reads it
            tmp.replace(target)
        except OSError as exc:
            # Never fatal: the control socket still answers, and the log has it all.
            log.warning("status_file_unwritable", path=path, error=exc.strerror or str(exc))

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
        for daemon in self.daemons.values():
            daemon.start_at = None
            self._close_listener(daemon)
        for daemon in self.running():
            daemon.restart_pending = False
            self._signal(daemon, sig)
        self._write_status()

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
        log.info("daemon_restart_requested", daemon=name, state=daemon.state)
        # The operator's restart is a fresh start: the crash history that
        # made init give up no longer counts against it.
        daemon.failed, daemon.recent = False, []
        self._close_listener(daemon)  # asked for: started now, not on demand
        if daemon.pid is None:
            daemon.restarts += 1
            self._spawn(daemon)
            return {"ok": daemon.pid is not None, "daemon": name, "pid": daemon.pid}
        if not daemon.restart_pending:
            daemon.restart_pending = True
            daemon.kill_at = time.monotonic() + self.plan.grace_seconds
            self._signal(daemon, signal.SIGTERM)
        self._write_status()
        return {"ok": True, "daemon": name, "status": "restarting"}

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "ok": True,
            "shutting_down": self._shutdown_signal is not None,
            "daemons": [
                {
                    "name": d.spec.name,
                    "pid": d.pid,
                    "running": d.pid is not None,
                    "state": d.state,
                    "last_exit": d.last_exit,
                    "restarts": d.restarts,
                    "crashes": d.crashes,
                    "restart_in": (
                        round(max(0.0, d.start_at - now), 3) if d.start_at is not None else None
                    ),
                    "last_reload": d.last_reload,
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
        if self._shutdown_signal is None:
            for daemon in self.daemons.values():
                if daemon.pid is None and daemon.start_at is not None and now >= daemon.start_at:
                    log.info("daemon_restarting", daemon=daemon.spec.name, crashes=daemon.crashes)
                    daemon.restarts += 1
                    self._spawn(daemon)
        if self._pending:
            self._answer_reloads(now=now)

    def _next_timeout(self) -> float | None:
        deadlines = [d.kill_at for d in self.running() if d.kill_at is not None]
        deadlines += [d.start_at for d in self.daemons.values() if d.start_at is not None]
        deadlines += [p.deadline for p in self._pending]
        if self._kill_at is not None and not self._killed:
            deadlines.append(self._kill_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _done(self) -> bool:
        return not self.running() and not any(
            d.restart_pending
            or (d.start_at is not None and self._shutdown_signal is None)
            or d.listener is not None
            for d in self.daemons.values()
        )

    def run(self) -> int:
        _become_subreaper()
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        for sig in _HANDLED:
            signal.signal(sig, lambda *_: None)
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        selector = self._selector = selectors.DefaultSelector()
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
            # Every on-demand address is bound before any daemon starts: a
            # relay that starts first finds its target accepting.
            for daemon in self.daemons.values():
                if daemon.spec.on_demand is not None:
                    self._listen(daemon)
            for daemon in self.daemons.values():
                if daemon.spec.on_demand is None:
                    self._spawn(daemon)
            self._write_status()
            while True:
                self._reap()
                self._deadline_checks()
                if self._done():
                    break
                for key, _ in selector.select(self._next_timeout()):
                    if key.data == "signals":
                        self._drain_signals(rfd)
                    elif isinstance(key.data, tuple) and key.data[0] == "activate":
                        self._activate(key.data[1])
                    elif isinstance(key.data, tuple):
                        self._read_output(int(key.fd), key.data[1])
                    elif key.data == "control":
                        if control is not None:
                            self._serve_control(control)
                    elif (daemon := self.daemons.get(str(key.data))) is not None:
                        self._read_report(daemon)
        finally:
            self._drain_outputs()
            signal.set_wakeup_fd(-1)
            for daemon in self.daemons.values():
                self._close_listener(daemon)
            for key in list(selector.get_map().values()):
                if isinstance(key.data, tuple):
                    selector.unregister(key.fd)
                    with contextlib.suppress(OSError):
                        os.close(int(key.fd))
            for pending in self._pending:
                _send_reply(pending.conn, {"ok": False, "error": "init is exiting"})
            self._pending = []
            for daemon in self.daemons.values():
                self._close_report(daemon)
            selector.close()
            self._selector = None
            os.close(rfd)
            os.close(wfd)
            if control is not None:
                control.close()
                with contextlib.suppress(OSError):
                    Path(str(self.plan.control_socket)).unlink()
        self._write_status()
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
        # A silent client must not stall PID 1 for long.
        conn.settimeout(_CONTROL_READ_TIMEOUT)
        buf = b""
        try:
            while b"\n" not in buf and len(buf) < _MAX_CONTROL_BYTES:
                chunk = conn.recv(_MAX_CONTROL_BYTES)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            log.warning("control_request_failed", error=str(exc))
            conn.close()
            return
        try:
            request = json.loads(buf.split(b"\n", 1)[0] or b"null")
        except ValueError:
            _send_reply(conn, {"ok": False, "error": "request is not JSON"})
            return
        if isinstance(request, dict) and request.get("cmd") == "reload":
            names = self.reload()
            waiting = {
                n: self.daemons[n].reloads_reported
                for n in names
                if self.daemons[n].report_fd is not None
            }
            if waiting:
                # Answered once every reporting daemon has said how it went.
                deadline = time.monotonic() + RELOAD_ANSWER_SECONDS
                self._pending.append(_PendingReload(conn, deadline, waiting))
                return
            _send_reply(conn, {"ok": True, "daemons": names, "results": {}})
            return
        _send_reply(conn, self.handle_command(request))


def _send_reply(conn: socket.socket, reply: dict[str, Any]) -> None:
    with conn:
        try:
            conn.settimeout(_CONTROL_READ_TIMEOUT)
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
    keep_fds: tuple[int, ...] = (),
    oom: int = 0,
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
        _child(program, argv, env, user, last_cap, wfd, output, keep_fds, oom)
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
    output: int,
    keep_fds: tuple[int, ...],
    oom: int,
) -> None:
    stage = "setup"
    try:
        if output >= 0:
            # stdout and stderr into init's pipe (dup2 clears close-on-exec).
            os.dup2(output, 1)
            os.dup2(output, 2)
        if oom:
            stage = "oom_score_adj"
            with open("/proc/self/oom_score_adj", "w") as fh:  # noqa: PTH123 - no pathlib between fork and exec
                fh.write(str(oom))
        for fd in keep_fds:
            os.set_inheritable(fd, True)
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
