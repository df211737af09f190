"""A launched Apple Container bottle: exec, copy in/out, attach and run.

Every call is ``container exec`` with an argv (never a shell string built
from input). Values of per-call environment variables go through a 0600
``--env-file`` that is removed as soon as the command returns, never on
argv (any local user can read argv). Files move over the exec's stdin and
stdout as tar streams (the documented reference has no ``container cp``);
the seed learned that a stopped Apple container is removed at once, so the
streaming also serves the freezer's export path while the agent runs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

from bot_bottle.backend_kit import BottleBase, copy_in_tar, unpack_copy_out
from bot_bottle.contracts.backend import ExecResult
from bot_bottle.errors import BotBottleError
from bot_bottle_apple_container.cli import ContainerCLI, env_file_lines


@contextlib.contextmanager
def env_file(env: Mapping[str, str] | None) -> Iterator[list[str]]:
    """``--env-file PATH`` for ``env`` (nothing when empty), removed afterwards."""
    if not env:
        yield []
        return
    fd, path = tempfile.mkstemp(prefix="bb-env-", text=True)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(env_file_lines(env))
        yield ["--env-file", path]
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


@contextlib.contextmanager
def raw_terminal() -> Iterator[None]:
    """The host terminal in raw mode for the session, restored on every exit.

    The seed found that ``container exec --interactive --tty`` leaves the
    host terminal cooked: the line discipline held modifier-key escape
    sequences (Shift+Enter) until a newline. Not a TTY: nothing to do.
    """
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class AppleRunningBottle(BottleBase):
    def __init__(
        self,
        slug: str,
        cli: ContainerCLI,
        name: str,
        *,
        user: str,
        workdir: str,
        wait_ready: Callable[[], None] | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        super().__init__(slug, wait_ready=wait_ready, timings=timings)
        self.cli = cli
        self.name = name
        self.user = user
        self.workdir = workdir

    def _exec_argv(
        self,
        argv: Sequence[str],
        *,
        user: str | None,
        workdir: str | None,
        env_args: Sequence[str],
        interactive: bool = False,
        tty: bool = False,
    ) -> list[str]:
        cmd = ["exec"]
        if interactive:
            cmd.append("--interactive")
        if tty:
            cmd.append("--tty")
        cmd += ["--user", user or self.user, "--workdir", workdir or self.workdir, *env_args]
        return self.cli.argv(*cmd, self.name, *argv)

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        with env_file(env) as env_args:
            cmd = self._exec_argv(
                argv, user=user, workdir=workdir, env_args=env_args, interactive=stdin is not None
            )
            try:
                proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
            except OSError as exc:
                raise BotBottleError(f"bottle {self.slug} is not usable: {exc}") from exc
        if proc.returncode != 0 and self.cli.inspect(self.name) is None:
            raise BotBottleError(
                f"bottle {self.slug} is not usable: its agent container {self.name} is gone",
                hint="'container logs --boot " + self.name + "' may say why (while it exists)",
            )
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    def copy_in(
        self, src: Path, dest: str, *, mode: int | None = None, owner: str | None = None
    ) -> None:
        data, mode_applied = copy_in_tar(src, dest, mode)
        parent = str(PurePosixPath(dest).parent)
        result = self.exec(
            ["sh", "-c", 'mkdir -p "$1" && tar -x -f - -C "$1"', "sh", parent],
            user="root",
            stdin=data,
        )
        self._check(result, f"copying {src} to {dest}")
        if owner:
            self._check(self.exec(["chown", "-R", owner, dest], user="root"), f"chown {dest}")
        if mode is not None and not mode_applied:
            self._check(self.exec(["chmod", f"{mode:o}", dest], user="root"), f"chmod {dest}")

    def copy_out(self, src: str, dest: Path) -> None:
        path = PurePosixPath(src)
        result = self.exec(["tar", "-c", "-f", "-", "-C", str(path.parent), path.name], user="root")
        self._check(result, f"copying {src} out")
        unpack_copy_out(result.stdout, src, dest)

    def attach(self, argv: Sequence[str], *, user: str | None = None) -> int:
        self.wait_ready()
        # TERM: without it the agent's TUI cannot pick a key protocol (seed #245).
        term = {"TERM": os.environ.get("TERM") or "xterm-256color"}
        with env_file(term) as env_args:
            cmd = self._exec_argv(
                argv, user=user, workdir=None, env_args=env_args, interactive=True, tty=True
            )
            with raw_terminal():
                return subprocess.call(cmd)

    def run(self, argv: Sequence[str], *, user: str | None = None) -> int:
        self.wait_ready()
        cmd = self._exec_argv(argv, user=user, workdir=None, env_args=[], interactive=True)
        return subprocess.call(cmd)
