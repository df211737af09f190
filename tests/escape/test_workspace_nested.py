"""Git directories the agent leaves in the shared working tree.

The host's ``.git`` is out of the agent's reach, but git finds a repository
from wherever the operator stands: after the bottle, ``cd REPO/src && git
status`` (or a prompt that runs git on ``cd``) would open a ``src/.git`` the
agent made, a gitfile's target, a directory laid out as a bare repository,
or a pre-existing nested repository whose config the agent edited, and run
its ``core.fsmonitor`` as the owner. A real bottle (uid-4242 repository) plants
all four; after teardown the owner runs git inside each and nothing runs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.escape.workspace_kit import (
    GROUP,
    MARKS,
    OWNER,
    Scene,
    agent_run,
    bottle_on_repo,
    owner_git,
    payload,
    repo_scene,
)

pytestmark = MARKS

#: Where the owner stands when running git, per planted directory.
PLACES = ("src", "tools", "docs", ".cache/g", "vendor/lib")


def _plant(scene: Scene) -> str:
    p = lambda name: payload(scene, name)  # noqa: E731
    return f"""
        set -e
        cd /workspace
        mkdir -p src && (cd src && git init -q && git config core.fsmonitor '{p("new-dotgit")}')
        git init -q --bare tools
        git --git-dir=tools config core.bare false
        git --git-dir=tools config core.worktree .
        git --git-dir=tools config core.fsmonitor '{p("bare-in-place")}'
        git init -q --bare .cache/g
        git --git-dir=.cache/g config core.bare false
        git --git-dir=.cache/g config core.fsmonitor '{p("gitfile")}'
        mkdir -p docs && printf 'gitdir: ../.cache/g\\n' > docs/.git
        git --git-dir=vendor/lib/.git config core.fsmonitor '{p("pre-existing")}'
        chmod 555 src/.git
        echo PLANTED
    """


@pytest.fixture(scope="module")
def scene(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    with repo_scene("bb-escape-nested-") as scene:
        # The owner's own nested clone (not a submodule): its git dir is in the
        # shared working tree.
        lib = scene.repo / "vendor" / "lib"
        lib.mkdir(parents=True)
        for path in (lib.parent, lib):
            os.chown(path, OWNER, GROUP)
        owner_git(scene, "init", "-q", cwd=lib)
        with bottle_on_repo(scene, tmp_path_factory.mktemp("bbhome"), "nested") as b:
            scene.agent_out["plant"] = agent_run(b, _plant(scene))
        yield scene


def test_the_agent_planted_every_variant(scene: Scene) -> None:
    assert "PLANTED" in scene.agent_out["plant"], scene.agent_out["plant"]


def test_git_run_inside_a_planted_directory_runs_nothing_after_the_bottle(scene: Scene) -> None:
    for place in PLACES:
        owner_git(scene, "status", cwd=scene.repo / place, check=False)
        owner_git(scene, "log", "-1", cwd=scene.repo / place, check=False)
    assert scene.witnesses() == {}


def test_the_planted_directories_are_disabled_reported_and_kept(scene: Scene) -> None:
    from bot_bottle_docker.nested_git import DISABLED

    for git_dir in ("src/.git", "tools", ".cache/g", "vendor/lib/.git"):
        assert (scene.repo / git_dir / DISABLED).is_file(), git_dir
        assert not (scene.repo / git_dir / "HEAD").exists(), git_dir
        assert "fsmonitor" in (scene.repo / git_dir / "config").read_text(), git_dir
    warning = [line for line in scene.progress if "disabled git directories" in line]
    assert warning, scene.progress
    for rel in ("src/.git", "tools", ".cache/g", "vendor/lib/.git"):
        assert rel in warning[0], warning


def test_a_planted_directory_would_have_run_code(scene: Scene) -> None:
    """Positive control: one of them with its HEAD back runs the payload as
    the owner, so the clean witness directory above means something."""
    from bot_bottle_docker.nested_git import DISABLED

    control = scene.root / "control"
    shutil.copytree(scene.repo / "src", control, symlinks=True)
    (control / ".git" / DISABLED).rename(control / ".git" / "HEAD")
    for path in [control, *control.rglob("*")]:
        os.chown(path, OWNER, GROUP, follow_symlinks=False)
    owner_git(scene, "status", cwd=control, check=False)
    ran = scene.witnesses()
    assert "new-dotgit" in ran and ran["new-dotgit"].split()[1] == str(OWNER), ran
    for name in list(ran):
        (scene.witness / name).unlink()


@pytest.fixture(scope="module")
def sub_scene(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """``--cwd`` a subdirectory of the owner's repository: no ``.git`` of its
    own, so git takes a ``HEAD``/``objects``/``refs`` layout there (the
    agent's ``/workspace`` top level) for the repository."""
    with repo_scene("bb-escape-nested-sub-") as scene:
        pkg = scene.repo / "pkg"
        pkg.mkdir()
        (pkg / "mod.txt").write_text("pkg\n")
        for path in (pkg, pkg / "mod.txt"):
            os.chown(path, OWNER, GROUP)
        owner_git(scene, "add", "pkg")
        owner_git(scene, "commit", "-qm", "pkg")
        script = f"""
            set -e
            cd /workspace
            mkdir -p objects refs/heads
            echo 'ref: refs/heads/main' > HEAD
            git config -f config core.repositoryformatversion 0
            git config -f config core.bare false
            git config -f config core.worktree .
            git config -f config core.fsmonitor '{payload(scene, "top-level")}'
            echo PLANTED
        """
        home = tmp_path_factory.mktemp("bbhome")
        with bottle_on_repo(scene, home, "nestedsub", cwd=pkg) as b:
            scene.agent_out["plant"] = agent_run(b, script)
        yield scene


def test_the_workspace_top_level_laid_out_as_a_git_dir_runs_nothing(sub_scene: Scene) -> None:
    from bot_bottle_docker.nested_git import DISABLED

    assert "PLANTED" in sub_scene.agent_out["plant"], sub_scene.agent_out["plant"]
    pkg = sub_scene.repo / "pkg"
    owner_git(sub_scene, "status", cwd=pkg, check=False)
    owner_git(sub_scene, "log", "-1", cwd=pkg, check=False)
    assert sub_scene.witnesses() == {}
    assert (pkg / DISABLED).is_file() and "fsmonitor" in (pkg / "config").read_text()
    # The owner's own repository is what git finds there now.
    top = owner_git(sub_scene, "rev-parse", "--show-toplevel", cwd=pkg).strip()
    assert Path(top) == sub_scene.repo


@pytest.fixture(scope="module")
def kept_scene(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """The state dir kept after the bottle (the launcher keeps it when the
    agent exits non-zero): the bottle's git dir in it holds the agent's
    config. The agent reads its host path from /proc/self/mountinfo and
    points a gitfile and a ``.git`` link in the working tree at it."""
    from bot_bottle.state import StateDir

    with repo_scene("bb-escape-nested-kept-") as scene:
        home = scene.root / "bbhome"  # the owner reaches the kept state dir, as an operator would
        script = f"""
            set -e
            cd /workspace
            host=$(awk '$5 == "/workspace/.git" {{print $4}}' /proc/self/mountinfo)
            echo "HOST-PATH $host"
            git config core.fsmonitor '{payload(scene, "state-dir")}'
            mkdir -p docs lnk
            echo "gitdir: $host" > docs/.git
            ln -s "$host" lnk/.git
            echo PLANTED
        """
        mp = pytest.MonkeyPatch()
        mp.setattr(StateDir, "remove", lambda self: None)  # kept, as after a non-zero exit
        try:
            with bottle_on_repo(scene, home, "nestedkept") as b:
                scene.control_git_dir = StateDir.for_slug(b.plan.slug).path / "workspace.git"
                scene.agent_out["plant"] = agent_run(b, script)
        finally:
            mp.undo()
        # What bot-bottle run by the operator leaves: the state dir theirs.
        kept = scene.control_git_dir
        for path in [home, *home.rglob("*")]:
            os.chown(path, OWNER, GROUP, follow_symlinks=False)
        for path in [home, *kept.parents]:
            if path.is_relative_to(home):
                path.chmod(0o755)
        yield scene


def test_links_to_the_kept_state_dir_run_nothing(kept_scene: Scene) -> None:
    scene = kept_scene
    assert "PLANTED" in scene.agent_out["plant"], scene.agent_out["plant"]
    assert scene.control_git_dir is not None and scene.control_git_dir.is_dir()
    assert f"HOST-PATH {scene.control_git_dir}" in scene.agent_out["plant"]
    for place in ("docs", "lnk"):
        owner_git(scene, "status", cwd=scene.repo / place, check=False)
    assert scene.witnesses() == {}
    from bot_bottle_docker.nested_git import GITFILE_DISABLED

    for place in ("docs", "lnk"):
        gone = scene.repo / place / GITFILE_DISABLED
        assert gone.is_symlink() or gone.is_file(), place
