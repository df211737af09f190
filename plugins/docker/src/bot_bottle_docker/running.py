"""A launched Docker bottle: exec, copy in/out, attach and headless run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from bot_bottle.backend_kit import BottleBase, copy_in_tar, unpack_copy_out
from bot_bottle.contracts.backend import ExecResult
from bot_bottle.errors import BotBottleError


class DockerRunningBottle(BottleBase):
    def __init__(
        self,
        slug: str,
        container: Any,
        *,
        user: str,
        workdir: str,
        wait_ready: Callable[[], None] | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        super().__init__(slug, wait_ready=wait_ready, timings=timings)
        self.container = container
        self.user = user
        self.workdir = workdir

    # -- exec ------------------------------------------------------------------

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        argv = list(argv)
        if stdin is not None:
            # The SDK's exec_run cannot feed stdin; the CLI can (argv only).
            cmd = self._cli_exec(argv, user=user, env=env, workdir=workdir, interactive=True)
            proc = subprocess.run(
                cmd, input=stdin, capture_output=True, check=False, env=self._cli_env(env)
            )
            if proc.returncode != 0:
                # The CLI says nothing useful when the engine died under it
                # (exit 255, no output): the same error as the SDK path then.
                self._engine_alive()
            return ExecResult(proc.returncode, proc.stdout, proc.stderr)
        try:
            result = self.container.exec_run(
                argv,
                user=user or self.user,
                environment=dict(env) if env else None,
                workdir=workdir,
                demux=True,
            )
        except Exception as exc:
            raise BotBottleError(f"bottle {self.slug} is not usable: {exc}") from exc
        out, err = result.output if result.output else (b"", b"")
        return ExecResult(int(result.exit_code or 0), out or b"", err or b"")

    def _engine_alive(self) -> None:
        try:
            self.container.reload()
        except Exception as exc:
            raise BotBottleError(f"bottle {self.slug} is not usable: {exc}") from exc

    def _cli_exec(
        self,
        argv: list[str],
        *,
        user: str | None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        interactive: bool = False,
        tty: bool = False,
    ) -> list[str]:
        docker = shutil.which("docker") or "docker"
        cmd = [docker, "exec"]
        if interactive:
            cmd.append("-i")
        if tty:
            cmd.append("-t")
        cmd += ["-u", user or self.user, "-w", workdir or self.workdir]
        for k in env or {}:
            cmd += ["-e", k]  # value through our environment, never on argv
        return [*cmd, self.container.id, *argv]

    def _cli_env(self, env: Mapping[str, str] | None) -> dict[str, str] | None:
        if not env:
            return None
        return {**os.environ, **env}

    # -- files -----------------------------------------------------------------

    def copy_in(
        self, src: Path, dest: str, *, mode: int | None = None, owner: str | None = None
    ) -> None:
        data, mode_applied = copy_in_tar(src, dest, mode)
        if mode_applied:
            mode = None
        parent = str(PurePosixPath(dest).parent)
        if not self._put(parent, data):
            mk = self.exec(["mkdir", "-p", parent], user="root")
            if not mk.ok or not self._put(parent, data):
                raise BotBottleError(f"copying {src} to {dest} in the bottle failed")
        if owner:
            self._check(self.exec(["chown", "-R", owner, dest], user="root"), f"chown {dest}")
        if mode is not None:
            self._check(self.exec(["chmod", f"{mode:o}", dest], user="root"), f"chmod {dest}")

    def _put(self, parent: str, data: bytes) -> bool:
        import docker.errors

        try:
            return bool(self.container.put_archive(parent, data))
        except docker.errors.NotFound:
            return False  # the parent directory does not exist yet

    def copy_out(self, src: str, dest: Path) -> None:
        stream, _stat = self.container.get_archive(src)
        unpack_copy_out(b"".join(stream), src, dest)

    # -- the agent ---------------------------------------------------------------

    def attach(self, argv: Sequence[str], *, user: str | None = None) -> int:
        # The docker CLI owns the terminal: raw mode, window-size changes
        # (SIGWINCH -> resize), and restoring the terminal on exit.
        self.wait_ready()
        cmd = self._cli_exec(list(argv), user=user, interactive=True, tty=True)
        return subprocess.call(cmd)

    def run(self, argv: Sequence[str], *, user: str | None = None) -> int:
        self.wait_ready()
        cmd = self._cli_exec(list(argv), user=user, interactive=True)
        return subprocess.call(cmd)
