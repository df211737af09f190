"""Fixtures for the git-gate tests: a real sshd upstream and a real gate.

Everything runs on 127.0.0.1 and is started by the test: Debian's sshd with
its own host key, config and authorized key (a test-only user session over
loopback), bare upstream repos, and ``python -m bot_bottle_sidecars.gitgate``
(real ``git daemon``, real hooks). Each fixture stops what it started, even
when the test fails.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot_bottle.gitgate.keys import GateKeys
from bot_bottle.gitgate.plan import GitGatePlan, plan_git_gate
from bot_bottle.gitgate.spec import GateKey, GateRepoSpec

SSHD = "/usr/sbin/sshd"
DETECTOR_PLUGIN = Path(__file__).parent / "gitgate_detector"
IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Agent",
    "GIT_AUTHOR_EMAIL": "agent@bottle.test",
    "GIT_COMMITTER_NAME": "Test Agent",
    "GIT_COMMITTER_EMAIL": "agent@bottle.test",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"{what} did not listen on port {port}:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_"))}
    env.update(GIT_CONFIG_NOSYSTEM="1", **IDENTITY)
    return env


def git(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env if env is not None else {**base_env(), "GIT_CONFIG_GLOBAL": "/dev/null"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@dataclass
class Sshd:
    root: Path
    port: int
    user: str
    host_pub: str
    client_key: Path
    log: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_for_port(self.port, self.proc, "sshd", self.log)

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

    def url(self, repo: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repo}"

    def connections(self) -> int:
        return self.log.read_text(errors="replace").count("Connection from 127.0.0.1")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not Path(SSHD).exists():
        pytest.fail("Debian's openssh-server is required (/usr/sbin/sshd)")
    root = tmp_path_factory.mktemp("sshd")
    if os.geteuid() == 0:
        # sshd running as root insists on its privilege-separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    for name in ("host_ed25519", "client_ed25519"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    shutil.copy(root / "client_ed25519.pub", root / "authorized_keys")
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {root / 'host_ed25519'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                f"PidFile {root / 'sshd.pid'}",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    host_pub = " ".join((root / "host_ed25519.pub").read_text().split()[:2])
    server = Sshd(
        root=root,
        port=port,
        user=getpass.getuser(),
        host_pub=host_pub,
        client_key=root / "client_ed25519",
        log=root / "sshd.log",
        config=config,
    )
    server.start()
    yield server
    server.stop()


@dataclass
class Upstream:
    bare: Path
    url: str
    work: Path

    def commit(self, files: dict[str, str], message: str, branch: str = "main") -> str:
        """Commit straight into the upstream (not through sshd, so it is not counted)."""
        if branch != "main":
            self.git("fetch", "-q", "origin")
            self.git("checkout", "-q", "-B", branch, f"origin/{branch}")
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        sha = self.git("rev-parse", "HEAD").stdout.strip()
        if branch != "main":
            self.git("checkout", "-q", "main")
        return sha

    def git(self, *args: str) -> subprocess.CompletedProcess[str]:
        """git in the upstream's own work tree (pushes go straight to the bare repo)."""
        return git(*args, cwd=self.work)

    def head(self, ref: str = "refs/heads/main") -> str:
        return git("rev-parse", ref, cwd=self.bare).stdout.strip()

    def ref(self, ref: str) -> str | None:
        proc = git("rev-parse", "--verify", "-q", ref, cwd=self.bare, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None


def new_upstream(root: Path, sshd: Sshd, name: str, *, empty: bool = False) -> Upstream:
    bare = root / "upstreams" / f"{name}.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    work = root / "upstream-work" / name
    git("clone", "-q", str(bare), str(work))
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=work)
    up = Upstream(bare=bare, url=sshd.url(bare), work=work)
    if not empty:
        up.commit({"README.md": f"# {name}\n"}, "initial commit")
    return up


@pytest.fixture
def make_upstream(tmp_path: Path, sshd: Sshd) -> Callable[..., Upstream]:
    return lambda name, empty=False: new_upstream(tmp_path, sshd, name, empty=empty)


@dataclass
class Gate:
    plan: GitGatePlan
    port: int
    base: Path
    log: Path
    agent_home: Path
    proc: subprocess.Popen[bytes] | None = None
    keys: GateKeys | None = None
    clones: list[Path] = field(default_factory=list)

    @property
    def agent_env(self) -> dict[str, str]:
        return {**base_env(), "HOME": str(self.agent_home), "GIT_TERMINAL_PROMPT": "0"}

    def git(
        self, *args: str, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """git as the agent runs it: its ~/.gitconfig rewrites upstreams to the gate."""
        return git(*args, cwd=cwd, env=self.agent_env, check=check)

    def clone(self, upstream: Upstream, dest: Path) -> Path:
        self.git("clone", "-q", upstream.url, str(dest))
        return dest

    def commit(self, clone: Path, files: Mapping[str, str | bytes], message: str) -> str:
        """Write ``files`` into ``clone``, commit everything as the agent; the new HEAD."""
        for name, content in files.items():
            path = clone / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        self.git("add", "-A", cwd=clone)
        self.git("commit", "-q", "-m", message, cwd=clone)
        return self.git("rev-parse", "HEAD", cwd=clone).stdout.strip()

    def push(self, clone: Path, *refspecs: str) -> subprocess.CompletedProcess[str]:
        """``git push origin <refspecs>`` (``main`` by default) as the agent; never raises."""
        return self.git("push", "origin", *(refspecs or ("main",)), cwd=clone, check=False)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None
        if self.keys is not None:
            self.keys.close()
            self.keys = None

    def wait_for_log(self, text: str) -> str:
        """The gate relays its hooks' log asynchronously: wait for a line."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            log = self.log_text()
            if text in log:
                return log
            time.sleep(0.05)
        pytest.fail(f"{text!r} never appeared in the gate log:\n{self.log_text()}")


def start_gate(
    root: Path,
    sshd: Sshd,
    upstreams: Sequence[tuple[str, Upstream]],
    host_key: str | None = None,
    plugins: str = "testsecrets",
    extra_env: dict[str, str] | None = None,
    allow_file: Path | None = None,
) -> Gate:
    """Plan, stage keys and start ``python -m bot_bottle_sidecars.gitgate`` like a launcher."""
    sidecar = root / "side car"
    specs = [
        GateRepoSpec(
            name=name,
            url=up.url,
            host_key=host_key or sshd.host_pub,
            key=GateKey.static(sshd.client_key),
        )
        for name, up in upstreams
    ]
    port = free_port()
    plan = plan_git_gate(specs, gate_host="127.0.0.1", gate_port=port, sidecar_root=sidecar)
    for rel, text in plan.files().items():
        (sidecar / rel).parent.mkdir(parents=True, exist_ok=True)
        (sidecar / rel).write_text(text)
    keys = GateKeys(plan, sidecar / "keys", bottle_slug="test")
    keys.stage()
    home = root / "bot-bottle-home"
    (home / "contrib").mkdir(parents=True, exist_ok=True)
    shutil.copytree(DETECTOR_PLUGIN, home / "contrib" / "testsecrets", dirs_exist_ok=True)
    agent_home = root / "agent-home"
    agent_home.mkdir(exist_ok=True)
    (agent_home / ".gitconfig").write_text(plan.render_gitconfig())
    env = {
        **base_env(),
        "BOT_BOTTLE_HOME": str(home),
        "BOT_BOTTLE_PLUGINS": plugins,
        "GIT_CONFIG_GLOBAL": "/dev/null",
        **(extra_env or {}),
    }
    log = root / "gate.log"
    out = log.open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot_bottle_sidecars.gitgate",
            f"--config={plan.config_path}",
            f"--base={root / 'mir rors'}",
            f"--port={port}",
            "--listen=127.0.0.1",
            *([f"--allow-file={allow_file}"] if allow_file is not None else []),
        ],
        stdout=out,
        stderr=out,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    out.close()
    gate = Gate(plan, port, root / "mir rors", log, agent_home, proc, keys)
    try:
        wait_for_port(port, proc, "git-gate", log)
    except BaseException:
        gate.stop()
        raise
    return gate


@pytest.fixture
def make_gate(tmp_path: Path, sshd: Sshd) -> Iterator[Callable[..., Gate]]:
    gates: list[Gate] = []

    def make(
        upstreams: Sequence[tuple[str, Upstream]],
        *,
        host_key: str | None = None,
        plugins: str = "testsecrets",
        extra_env: dict[str, str] | None = None,
        allow_file: Path | None = None,
    ) -> Gate:
        gate = start_gate(tmp_path, sshd, upstreams, host_key, plugins, extra_env, allow_file)
        gates.append(gate)
        return gate

    yield make
    for gate in gates:
        gate.stop()


#: ``gated_clone(name="app", *, empty=False, **make_gate_options)``.
GatedClone = Callable[..., tuple[Upstream, Gate, Path]]


@pytest.fixture
def gated_clone(
    tmp_path: Path, make_upstream: Callable[..., Upstream], make_gate: Callable[..., Gate]
) -> GatedClone:
    """An upstream, a gate for it (``make_gate``'s options) and the agent's
    clone through the gate at ``tmp_path / "clone"``."""

    def make(
        name: str = "app", *, empty: bool = False, **gate_options: Any
    ) -> tuple[Upstream, Gate, Path]:
        up = make_upstream(name, empty=empty)
        gate = make_gate([(name, up)], **gate_options)
        return up, gate, gate.clone(up, tmp_path / "clone")

    return make
