"""A real git remote over SSH for bottle tests: Debian's sshd on an address
the test chose (the gateway of a network it created), its own host key and
an authorized deploy key, serving bare repos by path.

(sidecars/tests/conftest.py has the loopback twin the git-gate unit tests use.)
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass
class SshRemote:
    host: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA...", what a bottle pins
    deploy_key: Path
    root: Path
    log: Path

    def url(self, name: str) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}{self.root / 'repos' / name}.git"

    def bare(self, name: str) -> Path:
        return self.root / "repos" / f"{name}.git"

    def new_repo(self, name: str) -> Path:
        """A bare repo with one commit on main."""
        bare = self.bare(name)
        env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_AUTHOR_NAME": "Up", "GIT_AUTHOR_EMAIL": "up@remote.test",
               "GIT_COMMITTER_NAME": "Up", "GIT_COMMITTER_EMAIL": "up@remote.test"}  # fmt: skip
        work = self.root / "work" / name
        for argv in (
            ["git", "init", "-q", "--bare", "-b", "main", str(bare)],
            ["git", "init", "-q", "-b", "main", str(work)],
        ):
            subprocess.run(argv, check=True, env=env)
        (work / "README.md").write_text(f"# {name}\n")
        for argv in (
            ["git", "-C", str(work), "add", "README.md"],
            ["git", "-C", str(work), "commit", "-qm", "initial"],
            ["git", "-C", str(work), "push", "-q", str(bare), "HEAD:main"],
        ):
            subprocess.run(argv, check=True, env=env)
        return bare

    def log_of(self, bare: Path) -> list[str]:
        out = subprocess.run(
            ["git", "-C", str(bare), "log", "--format=%s", "main"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.splitlines()

    def connections(self) -> int:
        return self.log.read_text(errors="replace").count("Connection from ")


@contextmanager
def ssh_remote(root: Path, host: str) -> Iterator[SshRemote]:
    if not Path(SSHD).exists():
        pytest.fail("Debian's openssh-server is required (/usr/sbin/sshd): run scripts/setup.sh")
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep dir
    for name in ("host_ed25519", "deploy_ed25519"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    (root / "authorized_keys").write_text((root / "deploy_ed25519.pub").read_text())
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {host}\nHostKey {root / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n"
    )
    log = root / "sshd.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=fh, stderr=fh)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex((host, port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        host_key = " ".join((root / "host_ed25519.pub").read_text().split()[:2])
        yield SshRemote(host, port, getpass.getuser(), host_key, root / "deploy_ed25519", root, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
