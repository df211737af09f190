"""The Docker backend end to end through the CLI: run, exit codes, state, labels,
list active, cleanup after SIGKILL, SIGTERM teardown, no engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BB = [sys.executable, "-m", "bot_bottle"]


@pytest.fixture
def home(
    tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env["BOT_BOTTLE_HOME"] = str(tmp_path / "home")
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    subprocess.run([*BB, "init"], env=env, check=True, capture_output=True)
    yield env
    # Whatever a test left behind (it should be nothing) goes, found by label.
    for c in docker_client.containers.list(all=True, filters={"label": "bot-bottle.backend"}):
        if (tmp_path / "home/state" / c.labels.get("bot-bottle.slug", "-")).exists():
            c.remove(force=True)


def _bb(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BB, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _labelled(client: docker.DockerClient, slug_prefix: str) -> list[str]:
    names = [
        c.name or ""
        for c in client.containers.list(all=True, filters={"label": "bot-bottle.agent=demo"})
    ]
    return [n for n in names if n.startswith(slug_prefix)]


def test_run_propagates_the_exit_code_and_cleans_up(
    home: dict[str, str], docker_client: docker.DockerClient
) -> None:
    ok = _bb(home, "run", "demo", "--", "sh", "-c", "curl -sS http://_egress.local/routes")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["routes"][0]["host"] == "pypi.org"
    state = Path(home["BOT_BOTTLE_HOME"]) / "state"
    assert list(state.iterdir()) == []
    bad = _bb(home, "run", "demo", "--", "sh", "-c", "exit 7")
    assert bad.returncode == 7, bad.stderr
    (kept,) = list(state.iterdir())
    assert (kept / "preserve").exists()
    assert json.loads((kept / "metadata.json").read_text())["agent"] == "demo"
    assert not (kept / "run").exists()
    # Of the preserved bottle only its agent is left, stopped, for commit/resume.
    leftover = docker_client.containers.list(
        all=True, filters={"label": f"bot-bottle.slug={kept.name}"}
    )
    assert [(c.labels["bot-bottle.role"], c.status) for c in leftover] == [("agent", "exited")]
    leftover[0].remove(force=True)


def test_list_active_sigterm_teardown_and_cleanup_after_sigkill(
    home: dict[str, str], docker_client: docker.DockerClient
) -> None:
    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*BB, "run", "demo", "--label", "lifecycle", "--", "sleep", "600"],
            env=home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_active() -> dict[str, object]:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            r = _bb(home, "list", "active", "--json")
            rows = [a for a in json.loads(r.stdout)["active"] if a["label"] == "lifecycle"]
            if rows:
                return rows[0]
            time.sleep(0.5)
        pytest.fail("the bottle never showed up in 'list active'")

    proc = start()
    try:
        row = wait_active()
        assert row["agent"] == "demo" and row["backend"] == "docker"
        slug = str(row["slug"])
        flt: dict[str, Any] = {"label": f"bot-bottle.slug={slug}"}
        deadline = time.monotonic() + 60
        while True:  # list active shows a bottle from its agent container on
            containers = docker_client.containers.list(filters=flt)
            roles = {c.labels["bot-bottle.role"] for c in containers}
            if roles == {"agent", "sidecars", "relay"} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert roles == {"agent", "sidecars", "relay"}
        # SIGTERM while the agent runs: everything goes, state too.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert docker_client.containers.list(all=True, filters=flt) == []
        assert docker_client.networks.list(filters=flt) == []
    finally:
        if proc.poll() is None:
            proc.kill()

    proc = start()
    try:
        slug = str(wait_active()["slug"])
    finally:
        proc.kill()  # SIGKILL: no teardown at all
        proc.wait()
    flt: dict[str, Any] = {"label": f"bot-bottle.slug={slug}"}
    assert docker_client.containers.list(all=True, filters=flt)
    r = _bb(home, "cleanup", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert slug in r.stdout
    assert docker_client.containers.list(all=True, filters=flt) == []
    assert docker_client.networks.list(filters=flt) == []
    assert not (Path(home["BOT_BOTTLE_HOME"]) / "state" / slug).exists()


def test_no_docker_engine_is_a_clear_error_before_anything(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["BOT_BOTTLE_HOME"] = str(tmp_path / "home")
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-such.sock"
    subprocess.run([*BB, "init"], env=env, check=True, capture_output=True)
    r = _bb(env, "run", "demo", "--", "true")
    assert r.returncode == 1
    assert "error: backend 'docker' is not available" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "home/state").exists() or not any((tmp_path / "home/state").iterdir())


def test_dry_run_creates_nothing(home: dict[str, str]) -> None:
    r = _bb(home, "start", "demo", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["plan"]["agent"] == "demo"
    assert doc["backend"]["agent_network"].startswith("none")
    assert doc["plan"]["resources"]["bundle"] == "memory 1g, pids 512, cpus 1.0"
    # The preflight shows each container's limits before anything starts.
    text = _bb(home, "start", "demo", "--dry-run")
    assert text.returncode == 0, text.stderr
    assert "  limits agent: memory 4g, pids 4096, cpus 2.0\n" in text.stderr
    assert "  limits relay: memory 256m, pids 64, cpus 0.5\n" in text.stderr
    assert not (Path(home["BOT_BOTTLE_HOME"]) / "state").exists()


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# The forked child only calls execve, so the multi-threaded fork is safe here.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_start_attaches_a_real_tty_and_follows_window_size(home: dict[str, str]) -> None:
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: bot-bottle start on a terminal
        os.execve(BB[0], [*BB, "start", "demo", "--yes"], home)  # noqa: S606 - argv, no shell wanted
    _set_winsize(fd, 40, 100)
    out = b""

    def read_until(token: bytes, timeout: float = 180) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while token not in out:
            assert time.monotonic() < deadline, out[-2000:].decode("utf-8", "replace")
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break

    try:
        read_until(b"$ ")  # the bottle's login shell prompt
        os.write(fd, b"tty; echo T-$((20+1))\n")
        read_until(b"T-21")
        assert b"/dev/pts/" in out
        # docker exec -it sets the initial size just after the process
        # starts, racing a fast shell on a loaded machine: ask until it lands.
        attempt = 0
        for attempt in range(20):
            os.write(fd, b"stty size; echo M1-$((20+%d))\n" % attempt)
            read_until(b"M1-%d" % (20 + attempt))
            if b"40 100" in out.split(b"T-21")[-1]:
                break
            time.sleep(0.25)
        assert b"40 100" in out.split(b"T-21")[-1], out[-2000:]
        _set_winsize(fd, 50, 120)  # SIGWINCH to docker exec -it, which resizes
        time.sleep(1)
        os.write(fd, b"stty size; echo M2-$((20+2))\n")
        read_until(b"M2-22")
        assert b"50 120" in out.split(b"M1-%d" % (20 + attempt))[-1]
        os.write(fd, b"exit 3\n")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 3
    # Non-zero exit: state kept with a preserve marker.
    (kept,) = list((Path(home["BOT_BOTTLE_HOME"]) / "state").iterdir())
    assert (kept / "preserve").exists()


def test_sigterm_during_launch_removes_what_was_created(
    home: dict[str, str], docker_client: docker.DockerClient
) -> None:
    state = Path(home["BOT_BOTTLE_HOME"]) / "state"
    proc = subprocess.Popen(
        [*BB, "run", "demo", "--", "true"],
        env=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait for the first container of this bottle: launch is under way.
        deadline = time.monotonic() + 180
        slug = None
        while slug is None and time.monotonic() < deadline and proc.poll() is None:
            dirs = list(state.iterdir()) if state.exists() else []
            if dirs:
                flt: dict[str, Any] = {"label": f"bot-bottle.slug={dirs[0].name}"}
                if docker_client.containers.list(all=True, filters=flt):
                    slug = dirs[0].name
            time.sleep(0.05)
        assert slug is not None, "the launch never created a container"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    flt = {"label": f"bot-bottle.slug={slug}"}
    assert docker_client.containers.list(all=True, filters=flt) == []
    assert docker_client.networks.list(filters=flt) == []
    assert not (state / slug).exists()


def test_a_mistyped_provider_dockerfile_is_an_error_line_and_creates_nothing(
    home: dict[str, str], docker_client: docker.DockerClient
) -> None:
    """The launch builds the agent image through the one path
    (``ensure_agent_image``): a ``dockerfile:`` option naming no file is an
    ``error:``/``hint:`` pair, not an internal error."""
    root = Path(home["BOT_BOTTLE_HOME"])
    missing = root / "nope" / "Dockerfile"
    (root / "bottles" / "typo.md").write_text(
        f"---\nagent_provider:\n  template: claude\n  dockerfile: {missing}\n---\n"
    )
    (root / "agents" / "typo.md").write_text("---\nbottle: typo\n---\nhi\n")
    r = _bb(home, "run", "typo", "--", "true")
    assert r.returncode == 1, r.stderr
    assert f"error: the Dockerfile of agent provider 'claude' does not exist: {missing}" in r.stderr
    assert "hint: fix the path in the bottle's agent_provider.dockerfile" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert list((root / "state").iterdir()) == []
    flt: dict[str, Any] = {"label": "bot-bottle.agent=typo"}
    assert docker_client.containers.list(all=True, filters=flt) == []


def test_an_image_build_failure_names_the_log_and_creates_nothing(
    tmp_path: Path,
    bot_bottle_home: Path,
    docker_client: docker.DockerClient,
    base_image: str,
) -> None:
    from bot_bottle.contracts.provider import ImageSpec
    from bot_bottle.imagebuild import ImageBuildError
    from bot_bottle.launcher import execute
    from bot_bottle.manifest.store import Manifest
    from bot_bottle.plan import make_plan
    from bot_bottle.plugins import PluginHost
    from bot_bottle_docker.backend import DockerBackend
    from bot_bottle_shell.provider import ShellProvider

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {base_image}\nRUN echo broken-build-{os.getpid()} && exit 3\n")

    class BrokenShell(ShellProvider):
        def image(self, options: object) -> ImageSpec:  # type: ignore[override]
            return ImageSpec(dockerfile=dockerfile)

    (bot_bottle_home / "bottles").mkdir()
    (bot_bottle_home / "agents").mkdir()
    (bot_bottle_home / "bottles/b.md").write_text("---\nagent_provider:\n  template: shell\n---\n")
    (bot_bottle_home / "agents/a.md").write_text("---\nbottle: b\n---\n")
    host = PluginHost().load()
    agent = Manifest(home=bot_bottle_home, host=host).agent("a")
    provider = BrokenShell()
    plan = make_plan(agent, provider, backend="docker", host=host, host_env={})
    with pytest.raises(ImageBuildError) as err:
        execute(plan, backend=DockerBackend(), provider=provider, mode="run", argv=["true"])
    hint = err.value.hint or ""
    assert "failed" in err.value.message and "the full build output is in" in hint
    log = Path(hint.rsplit(" ", 1)[-1])
    assert log.exists() and f"broken-build-{os.getpid()}" in log.read_text()
    flt: dict[str, Any] = {"label": f"bot-bottle.slug={plan.slug}"}
    assert docker_client.containers.list(all=True, filters=flt) == []
    assert docker_client.networks.list(filters=flt) == []
    assert not (bot_bottle_home / "state" / plan.slug).exists()


def test_sigterm_during_an_image_build_stops_the_build(
    home: dict[str, str], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """SIGTERM while the agent image builds (a drop-in provider whose Dockerfile
    sleeps): the launcher exits and the build it started stops too, instead
    of running on in the daemon after the launcher is gone."""
    import shutil
    import uuid

    from tests.conftest import REPO

    bb_home = Path(home["BOT_BOTTLE_HOME"])
    shutil.copytree(REPO / "examples/contrib/generic-cli", bb_home / "contrib/generic-cli")
    marker = f"bbtest-slow-build-{uuid.uuid4().hex[:8]}"
    dockerfile = tmp_path / "slow" / "Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text(f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN sleep 300 && echo {marker}\n")
    (bb_home / "bottles/slow.md").write_text(
        f"---\nagent_provider:\n  template: generic-cli\n  dockerfile: {dockerfile}\n---\n"
    )
    (bb_home / "agents/slow.md").write_text("---\nbottle: slow\n---\n")

    def building() -> list[str]:
        # sparse: the list call alone (inspecting each races build containers
        # that come and go).
        cs = docker_client.containers.list(all=True, sparse=True)
        return [str(c.id) for c in cs if marker in str(c.attrs.get("Command", ""))]

    proc = subprocess.Popen(
        [*BB, "run", "slow", "--", "true"], env=home,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not building():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the build never started its RUN step"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    deadline = time.monotonic() + 30
    while building() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert building() == [], "the build's RUN container outlived the launcher"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert not [line for line in ps.stdout.splitlines() if str(dockerfile.parent) in line]


def test_the_agent_writes_a_workspace_owned_by_another_uid(
    home: dict[str, str], tmp_path: Path
) -> None:
    """--cwd owned by another uid than the image's 1000 (4242 when the tests
    run as root, as in CI; else the invoking user's own): the tree is handed
    to the agent's own uid for the bottle's life (tree_owner), the agent
    writes the owner's files and its own, and afterwards every file is the
    owner's again. A root-owned workspace (checked when the tests run as
    root) stays read-only, with a warning saying why."""
    from bot_bottle_docker.tree_owner import AGENT_UID

    root = os.geteuid() == 0
    uid, gid = (4242, 4343) if root else (os.getuid(), os.getgid())
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("from the host\n")
    if root:
        os.chown(ws, uid, gid)
        os.chown(ws / "a.txt", uid, gid)
    script = "id -u; echo agent >> a.txt; echo new > b.txt; git config --global x.y z"
    r = _bb(home, "run", "demo", "--cwd", str(ws), "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[0] == str(AGENT_UID)
    assert (ws / "a.txt").read_text() == "from the host\nagent\n"
    st = (ws / "b.txt").stat()
    assert (st.st_uid, st.st_gid) == (uid, gid)
    assert (ws.stat().st_uid, ws.stat().st_gid) == (uid, gid)
    # The mountpoint of the bottle's own git dir is gone again.
    assert not (ws / ".git").exists()

    if not root:
        return  # a root-owned directory to mount needs root (CI runs as root)
    # Root's own directory: the agent must never be given uid 0.
    root_ws = tmp_path / "root-ws"
    root_ws.mkdir()
    r = _bb(home, "run", "demo", "--cwd", str(root_ws), "--", "touch", "c.txt")
    assert r.returncode != 0
    assert "owned by root" in r.stderr and "Permission denied" in r.stderr
    assert not (root_ws / "c.txt").exists()


def test_cleanup_leaves_a_live_bottle_of_another_home_alone(
    home: dict[str, str], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """Two homes (or two users) on one engine: cleanup in one must not reap
    the other's running bottle, whose state it cannot see; once that
    bottle's launcher is dead (same boot), it may."""
    from bot_bottle.state import launcher_id

    other = {**home, "BOT_BOTTLE_HOME": str(tmp_path / "other-home")}
    subprocess.run([*BB, "init"], env=other, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*BB, "run", "demo", "--", "sleep", "600"], env=other,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    flt: dict[str, Any] = {"label": f"bot-bottle.launcher={launcher_id(proc.pid)}"}
    try:
        deadline = time.monotonic() + 180
        while len(docker_client.containers.list(filters=flt)) < 3:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the other home's bottle never came up"
            time.sleep(0.2)
        r = _bb(home, "cleanup", "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(docker_client.containers.list(filters=flt)) == 3, r.stdout
        assert proc.poll() is None
    finally:
        proc.kill()  # SIGKILL: its bottle is now an orphan
        proc.wait()
    r = _bb(home, "cleanup", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert docker_client.containers.list(all=True, filters=flt) == []
    assert docker_client.networks.list(filters=flt) == []


def test_the_agent_commits_but_cannot_plant_code_in_the_workspaces_git(
    home: dict[str, str], tmp_path: Path
) -> None:
    """A --cwd repository: the agent commits in the bottle's own git dir
    (mounted over the host's .git); what it plants there never reaches the
    host's .git, and its commit comes back as ``bot-bottle/<slug>/main``,
    leaving the operator's own branch where it was. (tests/escape/
    test_workspace_git.py attacks this from every side.)"""
    import shutil

    # Reachable by the repository's owner, who writes the brought-back objects.
    top = Path(tempfile.mkdtemp(prefix="bb-cwd-", dir="/tmp"))
    top.chmod(0o755)
    ws = top / "repo"
    ws.mkdir()
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.name", "Op"],
                 ["git", "config", "user.email", "op@host.test"],
                 ["git", "commit", "-q", "--allow-empty", "-m", "operator"]):  # fmt: skip
        subprocess.run(argv, cwd=ws, env=env, check=True)
    shutil.rmtree(ws / ".git" / "hooks")
    config_before = (ws / ".git" / "config").read_bytes()
    if os.geteuid() == 0:  # a normal user's repository (the agent takes its uid)
        for path in [ws, *ws.rglob("*")]:
            os.chown(path, 4242, 4343)
    attacks = {
        "fsmonitor": "git config core.fsmonitor 'touch /workspace/pwned'",
        "hook": "mkdir -p .git/hooks && echo 'touch /workspace/pwned' > .git/hooks/post-checkout",
        "attributes": "mkdir -p .git/info && echo '* filter=evil' > .git/info/attributes",
    }
    script = "; ".join(
        f"{{ {cmd}; }} 2>/dev/null && echo PLANTED-{name}" for name, cmd in attacks.items()
    )
    script += (
        "; echo work > f.txt && git add f.txt && git commit -qm 'agent work' && echo COMMITTED"
    )
    r = _bb(home, "run", "demo", "--cwd", str(ws), "--", "sh", "-c", script)
    assert "COMMITTED" in r.stdout, r.stdout + r.stderr
    assert "PLANTED-fsmonitor" in r.stdout  # in the bottle's git dir, not the host's
    assert (ws / ".git" / "config").read_bytes() == config_before
    assert not (ws / ".git" / "hooks").exists()
    assert not (ws / ".git" / "info" / "attributes").exists()
    git = ["git", "-c", "safe.directory=*"]
    refs = subprocess.run([*git, "for-each-ref", "--format=%(refname:short) %(subject)"],
                          cwd=ws, env=env, capture_output=True, text=True, check=True)  # fmt: skip
    lines = sorted(refs.stdout.splitlines())
    assert len(lines) == 2 and lines[1] == "main operator", lines
    assert lines[0].startswith("bot-bottle/demo-") and lines[0].endswith("/main agent work")
    assert "brought back" in r.stderr and "/main ->" in r.stderr, r.stderr
    shutil.rmtree(top)
