"""A launched smolmachines bottle: exec, copy in/out, attach and headless run.

``smolvm machine exec`` runs as root; a command for the agent user goes
through ``runuser -u USER --`` with HOME and USER forced (runuser keeps
root's HOME otherwise, and ``git config --global`` would land in /root).
Files, including any stdin for a command, travel by ``machine cp``, never
over the exec channel.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bot_bottle.backend_kit import BottleBase
from bot_bottle.contracts.backend import ExecResult
from bot_bottle.errors import BotBottleError
from bot_bottle_smolmachines.smolvm import Smolvm, SmolvmError

#: Where a command's stdin is staged in the guest (removed after the call).
STDIN_PATH = "/run/bot-bottle-stdin"


class SmolmachinesRunningBottle(BottleBase):
    def __init__(
        self,
        slug: str,
        cli: Smolvm,
        machine: str,
        *,
        user: str,
        home: str,
        wait_ready: Callable[[], None] | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        super().__init__(slug, wait_ready=wait_ready, timings=timings)
        self.cli = cli
        self.machine = machine
        self.user = user
        self.home = home

    def _as(self, argv: Sequence[str], user: str | None) -> list[str]:
        if user is None or user == "root":
            return list(argv)
        home = self.home if user == self.user else f"/home/{user}"
        return ["runuser", "-u", user, "--", "env", f"HOME={home}", f"USER={user}", *argv]

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        cmd = self._as(argv, user)
        if stdin is not None:
            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / "stdin"
                src.write_bytes(stdin)
                self.cli.cp(str(src), f"{self.machine}:{STDIN_PATH}")
            # The file, not the exec channel, carries the bytes.
            cmd = ["sh", "-c", 'f="$0"; exec "$@" < "$f"', STDIN_PATH, *cmd]
        try:
            proc = self.cli.exec(self.machine, cmd, env=env, workdir=workdir)
        except SmolvmError as exc:
            raise BotBottleError(
                f"the bottle's VM {self.machine} is unusable: {exc}", hint=exc.hint
            ) from None
        finally:
            if stdin is not None:
                # Best effort: a VM that is gone has no file to remove, and
                # the error above (not this one) is what the caller must see.
                with contextlib.suppress(SmolvmError):
                    self.cli.exec(self.machine, ["rm", "-f", STDIN_PATH])
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    def copy_in(
        self, src: Path, dest: str, *, mode: int | None = None, owner: str | None = None
    ) -> None:
        self.cli.cp(str(src), f"{self.machine}:{dest}")
        fixes: list[list[str]] = []
        if owner is not None:
            fixes.append(["chown", "-R", owner, dest])
        if mode is not None:
            fixes.append(["chmod", f"{mode:o}", dest])
        for fix in fixes:
            res = self.exec(fix)
            if not res.ok:
                raise BotBottleError(
                    f"cannot set {' '.join(fix[:2])} on {dest} in the bottle: "
                    f"{res.stderr.decode(errors='replace').strip()}"
                )

    def copy_out(self, src: str, dest: Path) -> None:
        self.cli.cp(f"{self.machine}:{src}", str(dest))

    def attach(self, argv: Sequence[str], *, user: str | None = None) -> int:
        self.wait_ready()
        full = self.cli.exec_argv(self.machine, self._as(argv, user or self.user), tty=True)
        # The terminal is handed over as is; smolvm restores it on exit.
        return subprocess.call(full, env=self.cli.env())

    def run(self, argv: Sequence[str], *, user: str | None = None) -> int:
        self.wait_ready()
        full = self.cli.exec_argv(self.machine, self._as(argv, user or self.user), tty=False)
        # stdout must be a pipe for smolvm exec: copied through, never a file.
        with subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=self.cli.env()
        ) as proc:
            assert proc.stdout is not None
            shutil.copyfileobj(proc.stdout, sys.stdout.buffer, 65536)
            sys.stdout.buffer.flush()
        return proc.returncode
