"""A minimal RunningBottle over one plain container, for provider tests.

Providers provision through ``RunningBottle.exec`` / ``copy_in`` only; this
implements them with the docker CLI against a container started from the
provider's real image, with no network (the tests need none), so
provisioning runs for real before the Docker backend exists. It is not a
backend: no sidecars, no egress.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from bot_bottle.contracts.backend import ExecResult, RunningBottle
from bot_bottle.contracts.provider import ProviderPlan

LABEL = "org.bot-bottle.test=provider-bottle"


def _docker(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, check=False)


class ContainerBottle(RunningBottle):
    def __init__(self, container: str) -> None:
        self.slug = container
        self.container = container

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        args = ["exec"]
        if stdin is not None:
            args.append("-i")
        if user:
            args += ["--user", user]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        if workdir:
            args += ["--workdir", workdir]
        proc = _docker(*args, self.container, *argv, stdin=stdin)
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    def copy_in(
        self, src: Path, dest: str, *, mode: int | None = None, owner: str | None = None
    ) -> None:
        proc = _docker("cp", str(src), f"{self.container}:{dest}")
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode())
        if owner:
            self.exec(["chown", "-R", owner, dest], user="root")
        if mode is not None:
            self.exec(["chmod", f"{mode:o}", dest], user="root")

    def copy_out(self, src: str, dest: Path) -> None:
        proc = _docker("cp", f"{self.container}:{src}", str(dest))
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode())

    def attach(self, argv: Sequence[str], *, user: str | None = None) -> int:
        raise NotImplementedError("tests run headless")

    def run(self, argv: Sequence[str], *, user: str | None = None) -> int:
        return self.exec(argv, user=user).exit_code


@contextmanager
def internal_network() -> Iterator[tuple[str, str]]:
    """A Docker network with no route off the machine; yields its name and
    its gateway address (the host's side, where a test's server can listen)."""
    name = f"bb-test-provider-net-{uuid.uuid4().hex[:8]}"
    proc = _docker("network", "create", "--internal", "--label", LABEL, name)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode())
    try:
        gateway = (
            _docker("network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", name)
            .stdout.decode()
            .strip()
        )
        yield name, gateway
    finally:
        _docker("network", "rm", name)


@contextmanager
def container_bottle(
    image: str,
    plan: ProviderPlan,
    *,
    network: str = "none",
    extra_hosts: Mapping[str, str] | None = None,
) -> Iterator[ContainerBottle]:
    """A container of ``image`` with the plan's agent env; removed on exit.
    No network unless the test names one it created."""
    name = f"bb-test-provider-{uuid.uuid4().hex[:8]}"
    args = ["run", "-d", "--name", name, "--label", LABEL, "--network", network]
    for host, ip in (extra_hosts or {}).items():
        args += ["--add-host", f"{host}:{ip}"]
    for key, value in plan.env.items():
        args += ["--env", f"{key}={value}"]
    proc = _docker(*args, "--entrypoint", "sleep", image, "infinity")
    try:
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode())
        yield ContainerBottle(name)
    finally:
        _docker("rm", "-f", name)


_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\x1b[=>]")


def screen_text(
    container: str,
    argv: Sequence[str],
    *,
    until: Sequence[str],
    workdir: str | None = None,
    timeout: float = 90,
) -> str:
    """Run ``argv`` in ``container`` on a real pseudo-terminal (as root; the
    argv switches user itself) and return the text it drew, escape sequences
    removed, once every string in ``until`` has appeared (or at ``timeout``).
    The process is killed afterwards: an interactive agent never exits."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    args = ["docker", "exec", "-it", "-e", "TERM=xterm-256color", "--user", "root"]
    if workdir:
        args += ["--workdir", workdir]
    proc = subprocess.Popen(
        [*args, container, *argv], stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    raw = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                raw += chunk
            text = _ANSI.sub(b"", raw).decode("utf-8", "replace")
            if all(word in text for word in until):
                break
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(master)
    return _ANSI.sub(b"", raw).decode("utf-8", "replace")
