"""The ``smolvm`` CLI, driven as the backend needs it.

Every trap the first system hit with this CLI is designed out here, once:

- **stdout must be a pipe.** ``machine exec`` with stdout on a regular file
  fails with no stderr; every call here captures through pipes
  (``subprocess.run(capture_output=True)``), never a file.
- **No binary data over exec.** Files move with ``machine cp`` in both
  directions; exec carries only commands and their text output.
- **PATH of non-login shells.** The binary is resolved to an absolute path
  once (:func:`find_smolvm`), and that path is what attach/run argv and every
  call use, so a wrapper started through ``sh -c`` finds it too.
- **pack needs a stopped VM.** :meth:`Smolvm.pack` refuses a running machine;
  the freeze flow stops it first (:func:`freeze`).
- **exit 137 right after start.** Back-to-back execs just after ``machine
  start`` got SIGKILLed in libkrun's exec channel; :meth:`Smolvm.exec` retries
  once on 137 (and only on 137).

Failures are read with ``--error-format json`` (``{"error": {"code", "message"}}``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger

log = get_logger("bot_bottle_smolmachines")

#: Overrides where the CLI is found (tests point it at the contract fake).
ENV_BINARY = "BOT_BOTTLE_SMOLVM"
#: Overrides smolvm's state directory (``--state-dir``, Linux only).
ENV_STATE_DIR = "BOT_BOTTLE_SMOLVM_STATE_DIR"
#: The exit code of a SIGKILLed exec (128 + 9).
SIGKILLED = 137
#: Generous bounds for one CLI call; start includes the guest boot.
TIMEOUT = 120.0


class SmolvmError(BotBottleError):
    """A smolvm call failed; ``code`` is smolvm's stable error code when known."""

    def __init__(self, message: str, *, code: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


def find_smolvm() -> Path | None:
    """The CLI's absolute path: ``$BOT_BOTTLE_SMOLVM``, else ``smolvm`` on PATH."""
    forced = os.environ.get(ENV_BINARY)
    if forced:
        path = Path(forced)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("smolvm")
    return Path(found).resolve() if found else None


@dataclass(frozen=True)
class Machine:
    """One entry of ``machine ls --json`` (the fields the backend reads)."""

    name: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)
    allowed_cidrs: tuple[str, ...] = ()
    network: bool = False
    created_at: int = 0

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class CreateSpec:
    """``machine create``'s flags for one agent VM."""

    name: str
    image: str
    labels: Mapping[str, str]
    #: The only CIDR the VM may reach (the bottle's loopback alias, /32).
    allow_cidr: str
    #: The guest's resolver: the alias too, so no lookup leaves the bottle.
    dns: str
    env: Mapping[str, str]
    workdir: str | None = None
    volumes: Sequence[str] = ()
    cpus: int | None = None
    mem_mib: int | None = None

    def argv(self) -> list[str]:
        out = ["machine", "create", "--name", self.name, "--image", self.image]
        for k, v in sorted(self.labels.items()):
            out += ["--label", f"{k}={v}"]
        out += ["--allow-cidr", self.allow_cidr, "--dns", self.dns]
        for k, v in self.env.items():
            out += ["-e", f"{k}={v}"]
        if self.workdir:
            out += ["-w", self.workdir]
        for vol in self.volumes:
            out += ["-v", vol]
        if self.cpus is not None:
            out += ["--cpus", str(self.cpus)]
        if self.mem_mib is not None:
            out += ["--mem", str(self.mem_mib)]
        return out


class Smolvm:
    """One CLI binary (and optional state dir); every call goes through :meth:`call`."""

    def __init__(self, binary: Path, *, state_dir: Path | None = None) -> None:
        self.binary = binary
        self.state_dir = state_dir

    @classmethod
    def locate(cls) -> Smolvm:
        binary = find_smolvm()
        if binary is None:
            raise SmolvmError(
                "the smolvm CLI is not installed (not on PATH, $BOT_BOTTLE_SMOLVM unset)",
                code="MISSING",
                hint="install it (pip install smolmachines, or smolmachines.com's installer)",
            )
        state = os.environ.get(ENV_STATE_DIR)
        return cls(binary, state_dir=Path(state) if state else None)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if os.geteuid() == 0:
            # As root the VM process otherwise drops to a uid that cannot open /dev/kvm.
            env.setdefault("SMOLVM_VM_UID_DROP", "off")
        return env

    def base(self, *args: str) -> list[str]:
        """``smolvm <args> --error-format json [--state-dir D]``: the global
        flags go after the subcommand, where the CLI accepts them."""
        out = [str(self.binary), *args, "--error-format", "json"]
        if self.state_dir is not None:
            out += ["--state-dir", str(self.state_dir)]
        return out

    def call(
        self, args: Sequence[str], *, tail: Sequence[str] = (), timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        """Run one command (``tail`` goes after ``--``); raise on a non-zero exit."""
        argv = self.base(*args) + (["--", *tail] if tail else [])
        proc = self._run(argv, timeout)
        if proc.returncode != 0:
            raise self._error(args, proc)
        return proc

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env=self.env(),
                check=False,
            )
        except FileNotFoundError:
            raise SmolvmError(
                f"the smolvm CLI disappeared: {self.binary}", code="MISSING"
            ) from None
        except subprocess.TimeoutExpired:
            raise SmolvmError(
                f"smolvm {' '.join(argv[1:3])} did not finish within {timeout:.0f} s",
                code="TIMEOUT",
            ) from None

    def _error(self, args: Sequence[str], proc: subprocess.CompletedProcess[bytes]) -> SmolvmError:
        what = " ".join(args[:2])
        code, message = parse_error(proc.stderr)
        return SmolvmError(f"smolvm {what} failed (exit {proc.returncode}): {message}", code=code)

    # -- machines ------------------------------------------------------------------

    def create(self, spec: CreateSpec) -> None:
        self.call(spec.argv(), timeout=600.0)

    def start(self, name: str) -> None:
        self.call(["machine", "start", "--name", name], timeout=300.0)

    def stop(self, name: str) -> None:
        self.call(["machine", "stop", "--name", name])

    def delete(self, name: str) -> bool:
        """Delete ``name``; False when it was already gone."""
        try:
            self.call(["machine", "delete", "--name", name, "--force"])
        except SmolvmError as exc:
            if exc.code == "NOT_FOUND":
                return False
            raise
        return True

    def ls(self) -> list[Machine]:
        proc = self.call(["machine", "ls", "--json"])
        return parse_ls(proc.stdout)

    def get(self, name: str) -> Machine | None:
        return next((m for m in self.ls() if m.name == name), None)

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float = 600.0,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` in the VM; a SIGKILL (137) is retried once, as libkrun's
        exec channel kills the first calls after a start. A non-zero exit is
        returned, not raised; a VM that is gone raises."""
        args = ["machine", "exec", "--name", name]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        if workdir:
            args += ["-w", workdir]
        full = [*self.base(*args), "--", *argv]
        proc = self._run(full, timeout)
        if proc.returncode == SIGKILLED:
            log.debug("exec_sigkilled_retry", machine=name)
            proc = self._run(full, timeout)
        if proc.returncode != 0:
            code, _ = parse_error(proc.stderr)
            # The CLI's own failures (machine gone, not running) are JSON on
            # stderr; a command's non-zero exit is not.
            if code:
                raise self._error(args, proc)
        return proc

    def cp(self, src: str, dest: str) -> None:
        """``machine cp SRC DST``; the VM side is written ``<machine>:<path>``."""
        self.call(["machine", "cp", src, dest], timeout=600.0)

    def exec_argv(self, name: str, argv: Sequence[str], *, tty: bool) -> list[str]:
        """The argv of an interactive/headless exec (run by the caller)."""
        flags = ["-i", "-t"] if tty else []
        return [*self.base("machine", "exec", "--name", name, *flags), "--", *argv]


def parse_error(stderr: bytes) -> tuple[str, str]:
    """(code, message) of ``--error-format json``'s last JSON line; ("", text)
    when stderr holds none (a command's own failure, a crash)."""
    text = stderr.decode("utf-8", "replace")
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            return str(err.get("code", "")), str(err.get("message", ""))
    lines = [ln for ln in text.splitlines() if ln.strip() and "packed assets" not in ln]
    return "", (lines[-1].strip() if lines else "<no stderr>")


def parse_ls(stdout: bytes) -> list[Machine]:
    """``machine ls --json``: a list of machine objects; anything else is an error."""
    try:
        doc: Any = json.loads(stdout.decode("utf-8", "replace") or "null")
    except ValueError:
        raise SmolvmError(
            "smolvm machine ls --json printed something that is not JSON",
            code="BAD_JSON",
            hint="check the smolvm version (bot-bottle was checked against 1.32)",
        ) from None
    if not isinstance(doc, list):
        raise SmolvmError("smolvm machine ls --json did not print a list", code="BAD_JSON")
    out = []
    for item in doc:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise SmolvmError("smolvm machine ls --json: an entry has no name", code="BAD_JSON")
        labels = item.get("labels") or {}
        cidrs = item.get("allowed_cidrs") or []
        out.append(
            Machine(
                name=item["name"],
                state=str(item.get("state", "")),
                labels={str(k): str(v) for k, v in labels.items()}
                if isinstance(labels, dict)
                else {},
                allowed_cidrs=tuple(str(c) for c in cidrs) if isinstance(cidrs, list) else (),
                network=bool(item.get("network")),
                created_at=int(item.get("created_at") or 0),
            )
        )
    return out
