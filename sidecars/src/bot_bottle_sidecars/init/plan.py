"""The init plan: which daemons to run, with which argv and which environment.

A plan is a JSON file the host writes (and mounts into the bundle)::

    {
      "grace_seconds": 10,
      "control_socket": "/run/bot-bottle/init.sock",
      "daemons": [
        {"name": "egress", "argv": ["mitmdump", "..."],
         "env": ["EGRESS_TOKEN_*", "EGRESS_LOG_LEVEL"]},
        {"name": "supervise", "argv": ["python3", "-m", "bot_bottle_sidecars.supervise", "..."],
         "set_env": {"PYTHONUNBUFFERED": "1"}, "user": "bb-supervise"}
      ]
    }

Each daemon gets an environment built from scratch: a few harmless base
variables, the names (or ``PREFIX_*`` patterns) its ``env`` allow-list names
from init's own environment, and the literal ``set_env`` values. Nothing else
is inherited: daemons sharing a container must not see each other's
credentials (the first bot-bottle's DLP scanner found the injected token in
its own environment and blocked it). Credential variables (the egress token
slots and the bottle's known secrets) may be granted to the ``egress`` daemon
only; a plan that grants them
to any other daemon is refused.

``user`` (a user of the image) makes init start the daemon as that user with
no capability left (:mod:`bot_bottle_sidecars.init.privileges`); ``copy``
lists ``{"from": DIR, "to": DIR}`` pairs whose files init copies, before
each start, into a directory only that user can read (secrets the host
mounts under a root-only directory: the egress CA key, deploy keys).

The module is plain dataclasses and ``json`` on purpose: init is PID 1 of
every bundle and should stay small in memory.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot_bottle.errors import BotBottleError

#: Environment variable naming the listening socket an on-demand daemon
#: inherits (``on_demand``); absent on a restart, which binds the port itself.
LISTEN_FD_ENV = "BOT_BOTTLE_LISTEN_FD"
#: Variables every daemon gets when init has them: none carries a secret.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
#: Credential slots and the one daemon that may see each. ``EGRESS_TOKEN_<n>``
#: are injected credentials; ``EGRESS_SECRET_<n>`` and ``GITGATE_SECRET_<n>``
#: are the bottle's other secret values, which egress's DLP and git-gate's
#: push scan look for.
CREDENTIAL_OWNERS: Mapping[str, str] = {
    "EGRESS_TOKEN_": "egress",
    "EGRESS_SECRET_": "egress",
    "GITGATE_SECRET_": "git-gate",
}
CREDENTIAL_PREFIXES = tuple(CREDENTIAL_OWNERS)
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_CONTROL_SOCKET = "/run/bot-bottle/init.sock"
DEFAULT_LOG_MAX_BYTES = 2 * 1024 * 1024
DEFAULT_LOG_KEEP = 4

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class PlanError(BotBottleError):
    """The init plan is missing, unreadable or invalid."""


@dataclass(frozen=True)
class DaemonSpec:
    name: str
    argv: tuple[str, ...]
    #: Names or ``PREFIX_*`` patterns passed through from init's environment.
    env: tuple[str, ...] = ()
    #: Literal values (never secrets: the plan file is not a secret store).
    set_env: Mapping[str, str] = field(default_factory=dict)
    #: SIGHUP sent to init is forwarded to this daemon (egress reloads routes);
    #: a plan's default is true for ``egress`` and false for the others.
    forward_sighup: bool = False
    #: The image's user the daemon runs as; None: init's own user (tests).
    user: str | None = None
    #: ``(from, to)`` directories: private copies made before each start.
    copies: tuple[tuple[str, str], ...] = ()
    #: Raises the daemon's (and its children's) ``oom_score_adj``: when the
    #: bundle hits its memory limit, the kernel kills these first (git-gate's
    #: per-fetch processes before egress). 0..1000; lowering needs a
    #: capability the bundle does not have.
    oom_score_adj: int = 0
    #: ``(host, port)`` init listens on for the daemon, which starts only when
    #: the first connection arrives there and inherits the listening socket
    #: (:data:`LISTEN_FD_ENV`); a restart binds the port itself. None: started
    #: with init.
    on_demand: tuple[str, int] | None = None

    def allows(self, var: str) -> bool:
        return any(_matches(pattern, var) for pattern in (*BASE_ENV, *self.env))

    def build_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The complete environment this daemon starts with."""
        # Belt and braces: validation already refuses a plan that grants
        # another daemon's credentials.
        env = {
            k: v
            for k, v in environ.items()
            if self.allows(k) and _credential_owner(k) in (None, self.name)
        }
        env.update(self.set_env)
        return env


@dataclass(frozen=True)
class RestartPolicy:
    """When a daemon that exits on its own is started again.

    The n-th crash within ``window_seconds`` waits ``initial * 2**(n-1)``
    seconds (at most ``max_delay``) before the next start; crash number
    ``max_crashes`` within the window is the last: the daemon is left
    ``failed``, loudly, and only a ``ctl restart`` starts it again. Every
    exit is logged with its status, so a crash loop never hides its cause.
    """

    initial: float = 0.5
    max_delay: float = 30.0
    max_crashes: int = 10
    window_seconds: float = 600.0

    def delay(self, crashes: int) -> float:
        return min(self.max_delay, self.initial * 2 ** max(0, crashes - 1))


@dataclass(frozen=True)
class InitPlan:
    daemons: tuple[DaemonSpec, ...]
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    control_socket: str | None = DEFAULT_CONTROL_SOCKET
    #: Where init keeps each daemon's output as JSON lines (None: daemons
    #: write to init's stdout directly); see :mod:`bot_bottle_sidecars.init.logsink`.
    log_dir: str | None = None
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    log_keep: int = DEFAULT_LOG_KEEP
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    #: Where init keeps a JSON summary of every daemon's state (atomically
    #: replaced on each change) for the host (``list active``) and the
    #: relays' 503 text; None: nowhere.
    status_file: str | None = None

    def daemon(self, name: str) -> DaemonSpec | None:
        return next((d for d in self.daemons if d.name == name), None)


def _matches(pattern: str, var: str) -> bool:
    if pattern.endswith("*"):
        return var.startswith(pattern[:-1])
    return var == pattern


def _credential_owner(var: str) -> str | None:
    return next((o for p, o in CREDENTIAL_OWNERS.items() if var.startswith(p)), None)


def _foreign_credentials(pattern: str, daemon: str) -> list[str]:
    """The credential prefixes ``pattern`` could grant that ``daemon`` does
    not own: "EGRESS_TOKEN_1", "EGRESS_TOKEN_*", "EGRESS_*" and "*" all can
    grant EGRESS_TOKEN_."""
    if pattern.endswith("*"):
        stem = pattern[:-1]
        hit = [p for p in CREDENTIAL_OWNERS if p.startswith(stem) or stem.startswith(p)]
    else:
        hit = [p for p in CREDENTIAL_OWNERS if pattern.startswith(p)]
    return [p for p in hit if CREDENTIAL_OWNERS[p] != daemon]


def parse_plan(data: Any, *, source: str = "plan") -> InitPlan:
    """Validate a decoded plan document; every problem names the daemon and key."""
    if not isinstance(data, dict):
        raise PlanError(f"{source}: the plan must be a JSON object")
    unknown = set(data) - {
        "daemons", "grace_seconds", "control_socket", "log_dir", "log_max_bytes", "log_keep",
        "restart", "status_file",
    }  # fmt: skip
    if unknown:
        raise PlanError(f"{source}: unknown key(s) {sorted(unknown)}")
    grace = data.get("grace_seconds", DEFAULT_GRACE_SECONDS)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 < grace <= 300:
        raise PlanError(f"{source}: grace_seconds must be a number in (0, 300], not {grace!r}")
    socket_path = data.get("control_socket", DEFAULT_CONTROL_SOCKET)
    if socket_path is not None and (not isinstance(socket_path, str) or not socket_path):
        raise PlanError(f"{source}: control_socket must be a path or null")
    status_file = data.get("status_file")
    if status_file is not None and (
        not isinstance(status_file, str) or not status_file.startswith("/")
    ):
        raise PlanError(f"{source}: status_file must be an absolute path or null")
    restart = _parse_restart(data.get("restart", {}), source)
    raw = data.get("daemons")
    if not isinstance(raw, list) or not raw:
        raise PlanError(
            f"{source}: 'daemons' must be a non-empty list",
            hint="select at least one of egress, git-gate, supervise",
        )
    daemons = tuple(_parse_daemon(d, i, source) for i, d in enumerate(raw))
    names = [d.name for d in daemons]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PlanError(f"{source}: daemon name(s) {dupes} appear more than once")
    users = [d.user for d in daemons if d.user is not None]
    shared = sorted({u for u in users if users.count(u) > 1})
    if shared:
        # Two daemons under one uid could read each other's environment and files.
        raise PlanError(
            f"{source}: user(s) {shared} run more than one daemon",
            hint="give every daemon its own user",
        )
    log_dir = data.get("log_dir")
    if log_dir is not None and (
        not isinstance(log_dir, str) or not log_dir.startswith("/") or ".." in log_dir.split("/")
    ):
        raise PlanError(f"{source}: log_dir must be an absolute path or null")
    max_bytes = data.get("log_max_bytes", DEFAULT_LOG_MAX_BYTES)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 4096:
        raise PlanError(f"{source}: log_max_bytes must be an integer of at least 4096")
    keep = data.get("log_keep", DEFAULT_LOG_KEEP)
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= 100:
        raise PlanError(f"{source}: log_keep must be an integer in [0, 100]")
    return InitPlan(
        daemons=daemons,
        grace_seconds=float(grace),
        control_socket=socket_path,
        log_dir=log_dir,
        log_max_bytes=max_bytes,
        log_keep=keep,
        restart=restart,
        status_file=status_file,
    )


def _parse_restart(raw: Any, source: str) -> RestartPolicy:
    keys = {"initial": (0.01, 60.0), "max_delay": (0.01, 3600.0),
            "max_crashes": (1, 1000), "window_seconds": (1.0, 86400.0)}  # fmt: skip
    if not isinstance(raw, dict) or set(raw) - set(keys):
        raise PlanError(
            f"{source}: restart must be an object with {sorted(keys)}",
            hint='e.g. {"initial": 0.5, "max_delay": 30, "max_crashes": 10, "window_seconds": 600}',
        )
    values: dict[str, Any] = {}
    for key, (low, high) in keys.items():
        if key not in raw:
            continue
        value = raw[key]
        whole = key == "max_crashes"
        if (
            isinstance(value, bool)
            or not isinstance(value, int if whole else int | float)
            or not low <= value <= high
        ):
            raise PlanError(f"{source}: restart.{key} must be a number in [{low}, {high}]")
        values[key] = value if whole else float(value)
    return RestartPolicy(**values)


def _parse_daemon(raw: Any, index: int, source: str) -> DaemonSpec:
    where = f"{source}: daemons[{index}]"
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be an object")
    unknown = set(raw) - {
        "name", "argv", "env", "set_env", "forward_sighup", "user", "copy", "oom_score_adj",
        "on_demand",
    }  # fmt: skip
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise PlanError(
            f"{where}: invalid name {name!r}",
            hint="names are lower-case letters, digits and '-', e.g. 'git-gate'",
        )
    where = f"{source}: daemon {name!r}"
    argv = raw.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise PlanError(f"{where}: argv must be a non-empty list of strings")
    env = raw.get("env", [])
    if not isinstance(env, list) or not all(
        isinstance(e, str) and _ENV_RE.fullmatch(e) for e in env
    ):
        raise PlanError(f"{where}: env must be a list of variable names or PREFIX_* patterns")
    set_env = raw.get("set_env", {})
    if not isinstance(set_env, dict) or not all(
        isinstance(k, str) and _ENV_RE.fullmatch(k) and not k.endswith("*") and isinstance(v, str)
        for k, v in set_env.items()
    ):
        raise PlanError(f"{where}: set_env must map variable names to strings")
    granted = [e for e in (*env, *set_env) if _foreign_credentials(e, name)]
    if granted:
        owners = sorted(
            {CREDENTIAL_OWNERS[p] for e in granted for p in _foreign_credentials(e, name)}
        )
        raise PlanError(
            f"{where}: credential variables {granted} may reach the "
            f"{' / '.join(owners)} daemon only",
            hint="each credential slot belongs to one daemon; no other daemon may hold it",
        )
    # SIGHUP means "reload routes", which only egress does, unless the plan says otherwise.
    forward = raw.get("forward_sighup", name == "egress")
    if not isinstance(forward, bool):
        raise PlanError(f"{where}: forward_sighup must be true or false")
    user = raw.get("user")
    if user is not None and (not isinstance(user, str) or not _USER_RE.fullmatch(user)):
        raise PlanError(
            f"{where}: invalid user {user!r}",
            hint="a user name of the bundle image, e.g. 'bb-egress'",
        )
    oom = raw.get("oom_score_adj", 0)
    if isinstance(oom, bool) or not isinstance(oom, int) or not 0 <= oom <= 1000:
        raise PlanError(f"{where}: oom_score_adj must be a whole number in [0, 1000]")
    return DaemonSpec(
        name=name,
        oom_score_adj=oom,
        on_demand=_parse_on_demand(raw.get("on_demand"), where),
        argv=tuple(argv),
        env=tuple(env),
        set_env=dict(set_env),
        forward_sighup=forward,
        user=user,
        copies=_parse_copies(raw.get("copy", []), where),
    )


def _parse_on_demand(raw: Any, where: str) -> tuple[str, int] | None:
    if raw is None:
        return None
    host, sep, port = raw.rpartition(":") if isinstance(raw, str) else ("", "", "")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise PlanError(
            f"{where}: on_demand must be HOST:PORT, not {raw!r}",
            hint='the loopback address the daemon serves, e.g. "127.0.0.1:8765"',
        )
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None or not ip.is_loopback:
        # Init binds it as root, before any daemon runs: loopback only.
        raise PlanError(f"{where}: on_demand must be a loopback address, not {host!r}")
    return host, int(port)


def _parse_copies(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    problem = f'{where}: copy must be a list of {{"from": DIR, "to": DIR}} with absolute paths'
    if not isinstance(raw, list):
        raise PlanError(problem)
    out: list[tuple[str, str]] = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"from", "to"}:
            raise PlanError(problem)
        src, dst = item["from"], item["to"]
        for path in (src, dst):
            if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
                raise PlanError(problem)
        out.append((src, dst))
    return tuple(out)


def load_plan(path: Path) -> InitPlan:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(
            f"cannot read the init plan {path}: {exc.strerror}",
            hint="mount the plan file into the bundle and pass --plan with its path",
        ) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PlanError(f"{path} is not valid JSON: {exc}") from exc
    return parse_plan(data, source=str(path))
