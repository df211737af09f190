"""Git directories the agent makes in the shared working tree, used by the
owner's git *while the bottle runs*.

Teardown disarms what the agent left (``test_workspace_nested``); before
that, ``cd REPO/src && git status`` as the owner would open a ``src/.git``
of the agent's and run its ``core.fsmonitor``. During the bottle's life the
tree belongs to the agent's own uid (``tree_owner``), so git's ownership
check refuses every such directory. A real bottle on a uid-4242 repository
plants each shape (a new ``.git``, a gitfile to a git dir it made, a bare
layout in a new directory and in a directory the owner made, an owner's
directory renamed to ``.git``, a pre-existing nested clone's config); the
owner runs ``git status``, ``log`` and ``diff`` inside each while the bottle
runs: nothing runs. A copy of one, owned by the owner, runs its payload
(the payloads are live).
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

#: Where the owner stands when running git, per planted shape.
PLACES = {
    "new-dotgit": "src",
    "gitfile": "docs",
    "bare-new": "tools",
    "bare-in-owner-dir": "lib",
    "renamed-owner-dir": "web",
    "pre-existing": "vendor/clone",
}


def _plant(scene: Scene) -> str:
    p = lambda name: payload(scene, name)  # noqa: E731
    fsmonitor = lambda gd, name: (  # noqa: E731
        f"git --git-dir={gd} config core.bare false && "
        f"git --git-dir={gd} config core.fsmonitor '{p(name)}'"
    )
    return f"""
        cd /workspace
        (cd src && git init -q && git config core.fsmonitor '{p("new-dotgit")}') \\
            && echo OK new-dotgit
        git init -q --bare .cache/g && {fsmonitor(".cache/g", "gitfile")} \\
            && printf 'gitdir: ../.cache/g\\n' > docs/.git && echo OK gitfile
        git init -q --bare tools && git --git-dir=tools config core.worktree . \\
            && {fsmonitor("tools", "bare-new")} && echo OK bare-new
        # lib/ is the owner's directory: a bare layout inside it.
        git init -q --bare lib && git --git-dir=lib config core.worktree . \\
            && {fsmonitor("lib", "bare-in-owner-dir")} && echo OK bare-in-owner-dir
        # assets/ is the owner's directory: renamed to web/.git, then filled.
        mkdir -p web && mv assets web/.git && git init -q --bare web/.git \\
            && {fsmonitor("web/.git", "renamed-owner-dir")} && echo OK renamed-owner-dir
        git --git-dir=vendor/clone/.git config core.fsmonitor '{p("pre-existing")}' \\
            && echo OK pre-existing
        stat -c '%u %n' src/.git lib web/.git
        echo edit-by-agent >> README.md && echo OK owner-file-written
        echo DONE
    """


def _owned(scene: Scene, uid: int) -> list[str]:
    out = []
    for path in [scene.repo, *scene.repo.rglob("*")]:
        if path.relative_to(scene.repo).parts[:1] == (".git",):
            continue
        if path.lstat().st_uid == uid:
            out.append(str(path.relative_to(scene.repo)))
    return out


@pytest.fixture(scope="module")
def scene(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    from bot_bottle_docker.tree_owner import AGENT_UID

    with repo_scene("bb-escape-during-") as scene:
        for rel in ("src", "docs", "lib", "assets", "vendor"):
            (scene.repo / rel).mkdir()
            (scene.repo / rel / "keep.txt").write_text(f"{rel}\n")
            for path in (scene.repo / rel, scene.repo / rel / "keep.txt"):
                os.chown(path, OWNER, GROUP)
        owner_git(scene, "add", "src", "docs", "lib", "assets")
        owner_git(scene, "commit", "-qm", "directories")
        clone = scene.repo / "vendor" / "clone"
        clone.mkdir()
        os.chown(clone, OWNER, GROUP)
        owner_git(scene, "init", "-q", cwd=clone)
        with bottle_on_repo(scene, tmp_path_factory.mktemp("bbhome"), "during") as b:
            scene.agent_out["plant"] = agent_run(b, _plant(scene))
            scene.agent_out["agent-owned"] = "\n".join(_owned(scene, AGENT_UID))
            # The owner, while the bottle runs, inside each planted directory.
            for name, place in PLACES.items():
                where = scene.repo / place
                out = [owner_git(scene, *cmd, check=False, cwd=where)
                       for cmd in (["status"], ["log", "-1"], ["diff"])]  # fmt: skip
                scene.during[name] = "\n".join(out)
            scene.during["top"] = owner_git(scene, "status", "--porcelain", check=False)
            # A populated submodule's directory stays the owner's (its .git is
            # read-only and pinned in the bottle): git works inside it.
            scene.during["submodule"] = owner_git(scene, "status", check=False,
                                                  cwd=scene.repo / "mod")  # fmt: skip
            # The owner edits a file the agent made; the agent one the owner made.
            made = scene.repo / "tools" / "config"
            with made.open("a") as fh:
                fh.write("# the owner was here\n")
            # Positive control: the agent's src/.git, in a copy the owner
            # owns, outside the tree.
            control = scene.root / "control"
            shutil.copytree(scene.repo / "src", control, symlinks=True)
            for path in [control, *control.rglob("*")]:
                os.chown(path, OWNER, GROUP, follow_symlinks=False)
            owner_git(scene, "status", cwd=control, check=False)
            scene.agent_out["control"] = str(sorted(scene.witnesses()))
            for path in scene.witness.iterdir():
                if path.name == "new-dotgit":
                    path.rename(scene.root / "control-witness")
        yield scene


def test_the_agent_planted_every_shape(scene: Scene) -> None:
    out = scene.agent_out["plant"]
    for name in PLACES:
        assert f"OK {name}" in out, out
    assert "DONE" in out and "OK owner-file-written" in out, out


def test_nothing_the_agent_planted_ran_while_the_bottle_ran(scene: Scene) -> None:
    assert scene.agent_out["control"] == "['new-dotgit']", scene.agent_out
    assert scene.witnesses() == {}
    for name in PLACES:
        assert "dubious ownership" in scene.during[name], (name, scene.during[name])


def test_the_positive_control_ran_as_the_owner(scene: Scene) -> None:
    # git appends the hook's arguments (version, token) to the command.
    ran = (scene.root / "control-witness").read_text().split()
    assert ran[:2] == ["new-dotgit", str(OWNER)], ran


def test_the_tree_was_the_agents_and_the_owners_git_worked_at_the_top(scene: Scene) -> None:
    owned = scene.agent_out["agent-owned"].splitlines()
    for rel in ("src", "src/.git", "lib", "web/.git", "tools", "README.md"):
        assert rel in owned, owned
    assert "." not in owned  # the top holds the owner's .git: git stops there
    said = [line for line in scene.progress if "belongs to the agent's uid 60105" in line]
    assert said and "yours again at teardown" in said[0], scene.progress
    assert "fatal" not in scene.during["top"] and "README.md" in scene.during["top"]
    assert "On branch" in scene.during["submodule"] or "HEAD detached" in scene.during["submodule"]
    assert "dubious" not in scene.during["submodule"], scene.during["submodule"]


def test_after_the_bottle_the_tree_is_the_owners_again_and_disarmed(scene: Scene) -> None:
    from bot_bottle_docker.nested_git import DISABLED
    from bot_bottle_docker.tree_owner import ACCESS, AGENT_UID, DEFAULT

    assert _owned(scene, AGENT_UID) == []
    for path in [scene.repo, *scene.repo.rglob("*")]:
        if path.is_symlink() or path.relative_to(scene.repo).parts[:1] == (".git",):
            continue
        assert not {ACCESS, DEFAULT} & set(os.listxattr(path)), path
    assert "the owner was here" in (scene.repo / "tools" / "config").read_text()
    for git_dir in ("src/.git", "tools", "lib", "web/.git", "vendor/clone/.git"):
        assert (scene.repo / git_dir / DISABLED).is_file(), git_dir
    for place in PLACES.values():
        owner_git(scene, "status", cwd=scene.repo / place, check=False)
    assert scene.witnesses() == {}
    assert (scene.repo / "README.md").read_text().endswith("edit-by-agent\n")


def test_the_owners_git_dir_was_never_handed_over(scene: Scene) -> None:
    """The hand-over touched only the owner's entries: the agent was never
    given the owner's .git (not in the bottle) nor a path of another uid."""
    host_git = scene.repo / ".git"
    assert all(p.lstat().st_uid == OWNER for p in [host_git, *host_git.rglob("*")])
    assert Path(scene.repo).stat().st_uid == OWNER
