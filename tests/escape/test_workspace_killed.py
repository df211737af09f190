"""A launcher killed (SIGKILL) while its bottle runs on a ``--cwd`` repository
does no teardown: the tree stays the agent uid's, the git dirs the agent
made stay armed, its commits stay in the bottle. ``bot-bottle cleanup``
finishes what the teardown would have done, from the state dir's record:
the agent's commit is brought back (scanned) while its container still runs,
the container goes, the git dirs it made are disarmed and the tree is the
owner's again. Before cleanup, and after, the owner's git inside the
agent's ``src/.git`` runs nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.escape.workspace_kit import Scene, owner_git, payload, repo_scene

if TYPE_CHECKING:
    import docker

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="a repository of another uid needs root"),
]

BB = [sys.executable, "-m", "bot_bottle"]
#: (scene, env, slug, cleanup's result, what the owner saw before cleanup)
Killed = tuple[Scene, dict[str, str], str, "subprocess.CompletedProcess[str]", list[str]]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _script(scene: Scene) -> str:
    return f"""
        set -e
        cd /workspace
        (cd src && git init -q && git config core.fsmonitor '{payload(scene, "killed")}')
        echo agent-work > work.txt
        git add work.txt
        git -c user.name=Agent -c user.email=agent@example.test commit -qm 'agent work'
        touch .planted
        exec sleep 600
    """


def _owned_by(root: Path, uid: int) -> list[str]:
    return [str(p.relative_to(root)) for p in [root, *root.rglob("*")]
            if p.relative_to(root).parts[:1] != (".git",) and p.lstat().st_uid == uid]  # fmt: skip


@pytest.fixture(scope="module")
def killed(
    docker_client: docker.DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Killed]:
    from bot_bottle_docker.tree_owner import AGENT_UID

    env = dict(os.environ)
    env["BOT_BOTTLE_HOME"] = str(tmp_path_factory.mktemp("killed") / "home")
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    subprocess.run([*BB, "init"], env=env, check=True, capture_output=True)
    with repo_scene("bb-escape-killed-") as scene:
        (scene.repo / "src").mkdir()
        os.chown(scene.repo / "src", 4242, 4343)
        proc = subprocess.Popen(
            [*BB, "run", "demo", "--cwd", str(scene.repo), "--", "bash", "-c", _script(scene)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        slug = ""
        try:
            deadline = time.monotonic() + 300
            while not (scene.repo / ".planted").exists():
                assert proc.poll() is None, proc.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "the agent never planted"
                time.sleep(0.2)
            states = list((Path(env["BOT_BOTTLE_HOME"]) / "state").iterdir())
            slug = states[0].name
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            # The owner, with the launcher dead: src/.git is the agent uid's.
            before = [owner_git(scene, "status", cwd=scene.repo / "src", check=False),
                      str(_owned_by(scene.repo, AGENT_UID)), str(scene.witnesses())]  # fmt: skip
            cleaned = subprocess.run([*BB, "cleanup", "--yes"], env=env, capture_output=True,
                                     text=True, timeout=300, check=False)  # fmt: skip
            yield scene, env, slug, cleaned, before
        finally:
            if proc.poll() is None:
                proc.kill()
            for c in docker_client.containers.list(
                all=True, filters={"label": f"bot-bottle.slug={slug or '-'}"}
            ):
                c.remove(force=True)


def test_before_cleanup_the_tree_is_the_agents_and_nothing_runs(killed: Killed) -> None:
    _scene, _env, _slug, _cleaned, before = killed
    status, owned, witnesses = before
    assert "dubious ownership" in status, status
    assert "'src/.git'" in owned, owned
    assert witnesses == "{}"


def test_cleanup_brings_the_commit_back_disarms_and_hands_the_tree_back(killed: Killed) -> None:
    from bot_bottle_docker.nested_git import DISABLED
    from bot_bottle_docker.tree_owner import AGENT_UID

    scene, _env, slug, cleaned, _before = killed
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert "workspace" in cleaned.stdout, cleaned.stdout
    assert _owned_by(scene.repo, AGENT_UID) == []
    assert (scene.repo / "src" / ".git" / DISABLED).is_file()
    owner_git(scene, "status", cwd=scene.repo / "src", check=False)
    assert scene.witnesses() == {}
    log = owner_git(scene, "log", "-1", "--format=%s", f"bot-bottle/{slug}/main")
    assert log.strip() == "agent work"
    shown = owner_git(scene, "show", f"bot-bottle/{slug}/main:work.txt")
    assert shown == "agent-work\n"


def test_cleanup_leaves_nothing_of_the_bottle(
    killed: Killed, docker_client: docker.DockerClient
) -> None:
    _scene, env, slug, _cleaned, _before = killed
    left = docker_client.containers.list(all=True, filters={"label": f"bot-bottle.slug={slug}"})
    assert left == []
    assert not (Path(env["BOT_BOTTLE_HOME"]) / "state" / slug).exists()
    again = subprocess.run([*BB, "cleanup", "--yes"], env=env, capture_output=True, text=True,
                           timeout=120, check=False)  # fmt: skip
    assert "workspace" not in again.stdout, again.stdout


def test_cleanup_keeps_a_state_dir_its_backend_could_not_finish(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """A backend that could not give a tree back leaves ``cleanup-pending``
    in the state dir: cleanup keeps the record (and says so) to retry."""
    import json

    from bot_bottle.state import PENDING

    home = tmp_path / "home"
    state = home / "state" / "demo-pend01"
    state.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (state / "metadata.json").write_text(json.dumps({"backend": "docker", "pid": int(dead)}))
    (state / PENDING).write_text("the working tree /x was not given back to its owner\n")
    env = {**os.environ, "BOT_BOTTLE_HOME": str(home)}
    r = subprocess.run([*BB, "cleanup", "--yes"], env=env, capture_output=True, text=True,
                       timeout=120, check=False)  # fmt: skip
    assert f"keeping {state}: the working tree /x was not given back" in r.stderr, r.stderr
    assert r.returncode == 1 and state.is_dir()
