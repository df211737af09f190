"""Git directories the agent leaves in the shared working tree (issue 13).

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
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bottle_kit import launched, write_agent
from tests.escape.test_workspace_git import (
    BOTTLE_MD,
    GROUP,
    OWNER,
    Scene,
    _make_repo,
    _payload,
    owner_git,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="a repository of another uid needs root"),
]

#: Where the owner stands when running git, per planted directory.
PLACES = ("src", "tools", "docs", ".cache/g", "vendor/lib")


def _plant(scene: Scene) -> str:
    p = lambda name: _payload(scene, name)  # noqa: E731
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
    import bot_bottle_docker.backend as backend_mod

    root = Path(tempfile.mkdtemp(prefix="bb-escape-nested-", dir="/tmp"))
    root.chmod(0o755)
    scene = Scene(root=root, repo=root / "repo", witness=root / "witness",
                  owner_home=root / "owner-home")  # fmt: skip
    _make_repo(scene)
    # The owner's own nested clone (not a submodule): its git dir is in the
    # shared working tree.
    lib = scene.repo / "vendor" / "lib"
    lib.mkdir(parents=True)
    for path in (lib.parent, lib):
        os.chown(path, OWNER, GROUP)
    owner_git(scene, "init", "-q", cwd=lib)
    home = tmp_path_factory.mktemp("bbhome")
    write_agent(home, "nested", BOTTLE_MD)
    mp = pytest.MonkeyPatch()
    mp.setattr(backend_mod, "_stderr_progress", scene.progress.append)
    try:
        with launched(home, "nested", host_env=dict(os.environ), cwd=scene.repo) as b:
            from bot_bottle import provider_kit as kit

            argv = kit.agent_argv(b.plan.provider_plan, ["bash", "-c", _plant(scene)])
            r = b.running.exec(argv, user="root")
            scene.agent_out["plant"] = (r.stdout + r.stderr).decode("utf-8", "replace")
        yield scene
    finally:
        mp.undo()
        shutil.rmtree(root, ignore_errors=True)


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
    import bot_bottle_docker.backend as backend_mod

    root = Path(tempfile.mkdtemp(prefix="bb-escape-nested-sub-", dir="/tmp"))
    root.chmod(0o755)
    scene = Scene(root=root, repo=root / "repo", witness=root / "witness",
                  owner_home=root / "owner-home")  # fmt: skip
    _make_repo(scene)
    pkg = scene.repo / "pkg"
    pkg.mkdir()
    (pkg / "mod.txt").write_text("pkg\n")
    for path in (pkg, pkg / "mod.txt"):
        os.chown(path, OWNER, GROUP)
    owner_git(scene, "add", "pkg")
    owner_git(scene, "commit", "-qm", "pkg")
    home = tmp_path_factory.mktemp("bbhome")
    write_agent(home, "nestedsub", BOTTLE_MD)
    mp = pytest.MonkeyPatch()
    mp.setattr(backend_mod, "_stderr_progress", scene.progress.append)
    script = f"""
        set -e
        cd /workspace
        mkdir -p objects refs/heads
        echo 'ref: refs/heads/main' > HEAD
        git config -f config core.repositoryformatversion 0
        git config -f config core.bare false
        git config -f config core.worktree .
        git config -f config core.fsmonitor '{_payload(scene, "top-level")}'
        echo PLANTED
    """
    try:
        with launched(home, "nestedsub", host_env=dict(os.environ), cwd=pkg) as b:
            from bot_bottle import provider_kit as kit

            argv = kit.agent_argv(b.plan.provider_plan, ["bash", "-c", script])
            r = b.running.exec(argv, user="root")
            scene.agent_out["plant"] = (r.stdout + r.stderr).decode("utf-8", "replace")
        yield scene
    finally:
        mp.undo()
        shutil.rmtree(root, ignore_errors=True)


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
    import bot_bottle_docker.backend as backend_mod
    from bot_bottle.state import StateDir

    root = Path(tempfile.mkdtemp(prefix="bb-escape-nested-kept-", dir="/tmp"))
    root.chmod(0o755)
    scene = Scene(root=root, repo=root / "repo", witness=root / "witness",
                  owner_home=root / "owner-home")  # fmt: skip
    _make_repo(scene)
    home = root / "bbhome"  # the owner reaches the kept state dir, as an operator would
    write_agent(home, "nestedkept", BOTTLE_MD)
    mp = pytest.MonkeyPatch()
    mp.setattr(backend_mod, "_stderr_progress", scene.progress.append)
    mp.setattr(StateDir, "remove", lambda self: None)  # kept, as after a non-zero exit
    script = f"""
        set -e
        cd /workspace
        host=$(awk '$5 == "/workspace/.git" {{print $4}}' /proc/self/mountinfo)
        echo "HOST-PATH $host"
        git config core.fsmonitor '{_payload(scene, "state-dir")}'
        mkdir -p docs lnk
        echo "gitdir: $host" > docs/.git
        ln -s "$host" lnk/.git
        echo PLANTED
    """
    try:
        with launched(home, "nestedkept", host_env=dict(os.environ), cwd=scene.repo) as b:
            from bot_bottle import provider_kit as kit

            scene.control_git_dir = StateDir.for_slug(b.plan.slug).path / "workspace.git"
            argv = kit.agent_argv(b.plan.provider_plan, ["bash", "-c", script])
            r = b.running.exec(argv, user="root")
            scene.agent_out["plant"] = (r.stdout + r.stderr).decode("utf-8", "replace")
        mp.undo()
        # What bot-bottle run by the operator leaves: the state dir theirs.
        kept = scene.control_git_dir
        for path in [home, *home.rglob("*")]:
            os.chown(path, OWNER, GROUP, follow_symlinks=False)
        for path in [home, *kept.parents]:
            if path.is_relative_to(home):
                path.chmod(0o755)
        yield scene
    finally:
        mp.undo()
        shutil.rmtree(root, ignore_errors=True)


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
