"""A real bottle on a real repository of another user, for the workspace-git
escape tests (``test_workspace_git``, ``_hooks``, ``_nested``).

The repository belongs to a normal user (uid 4242, not the test's root), as
an operator's checkout does, and the bottle gets it as ``--cwd``. Every
payload the agent plants appends to a witness file at a *host* path that
does not exist in the bottle, so a line there means a host process ran it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.bottle_kit import Launched, launched, write_agent

OWNER, GROUP = 4242, 4343
#: Every workspace test module's ``pytestmark``: a real bottle, and root to
#: own the repository as another uid.
MARKS = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="a repository of another uid needs root"),
]
BOTTLE_MD = """\
---
agent_provider:
  template: shell
git_user:
  name: Agent
  email: agent@example.test
---
"""


@dataclass
class Scene:
    root: Path  # 0755, so the owner reaches everything below
    repo: Path
    witness: Path
    owner_home: Path
    slug: str = ""
    agent_out: dict[str, str] = field(default_factory=dict)
    during: dict[str, str] = field(default_factory=dict)
    progress: list[str] = field(default_factory=list)
    host_git_before: dict[str, bytes] = field(default_factory=dict)
    control_git_dir: Path | None = None

    def witnesses(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted(self.witness.iterdir())}


def _owner_env(scene: Scene) -> dict[str, str]:
    return {"HOME": str(scene.owner_home), "PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def owner_git(scene: Scene, *args: str, check: bool = True, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd or scene.repo, env=_owner_env(scene), capture_output=True,
        text=True, user=OWNER, group=GROUP, extra_groups=[], check=False, timeout=60,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, f"git {args}: {proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def payload(scene: Scene, name: str) -> str:
    # The witness directory exists on the host only: in the bottle this fails.
    return f"echo {name} $(id -u) >> {scene.witness}/{name}"


def make_repo(scene: Scene) -> None:
    repo = scene.repo
    repo.mkdir()
    home = scene.owner_home
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Owner\n\temail = owner@host.test\n")
    scene.witness.mkdir()
    scene.witness.chmod(0o777)
    for path in (repo, home):
        os.chown(path, OWNER, GROUP)
    owner_git(scene, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    (repo / "src.txt").write_text("one\n")
    for name in ("README.md", "src.txt"):
        os.chown(repo / name, OWNER, GROUP)
    owner_git(scene, "add", ".")
    # An unpopulated submodule: a gitlink in the index, an empty directory.
    owner_git(scene, "commit", "-qm", "initial")
    head = owner_git(scene, "rev-parse", "HEAD").strip()
    owner_git(scene, "update-index", "--add", "--cacheinfo", f"160000,{head},sub")
    (repo / ".gitmodules").write_text('[submodule "sub"]\n\tpath = sub\n\turl = ./sub\n')
    os.chown(repo / ".gitmodules", OWNER, GROUP)
    owner_git(scene, "add", ".gitmodules")
    owner_git(scene, "commit", "-qm", "a submodule")
    (repo / "sub").mkdir()
    os.chown(repo / "sub", OWNER, GROUP)
    # A populated submodule: mod/.git is a gitfile into .git/modules/mod.
    src = scene.root / "modsrc"
    src.mkdir()
    os.chown(src, OWNER, GROUP)
    owner_git(scene, "init", "-q", "-b", "main", cwd=src)
    owner_git(scene, "commit", "-q", "--allow-empty", "-m", "mod", cwd=src)
    owner_git(scene, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(src), "mod")
    owner_git(scene, "commit", "-qm", "a populated submodule")
    # The operator's own config runs files of the working tree (husky-style
    # hooks, a tracked .gitconfig included, a script alias).
    (repo / ".githooks").mkdir()
    (repo / ".githooks" / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    (repo / "scripts").mkdir()
    (repo / "scripts" / "lint.sh").write_text("#!/bin/sh\necho lint-ok\n")
    (repo / ".gitconfig").write_text("[core]\n\tautocrlf = false\n")
    for path in (".githooks", ".githooks/pre-commit", "scripts", "scripts/lint.sh", ".gitconfig"):
        os.chown(repo / path, OWNER, GROUP)
    for path in (".githooks/pre-commit", "scripts/lint.sh"):
        (repo / path).chmod(0o755)
    owner_git(scene, "config", "core.hooksPath", ".githooks")
    owner_git(scene, "config", "include.path", "../.gitconfig")
    owner_git(scene, "config", "alias.lint", "!./scripts/lint.sh")
    owner_git(scene, "add", ".githooks", "scripts", ".gitconfig")
    owner_git(scene, "commit", "-qm", "operator tooling")


@contextmanager
def repo_scene(prefix: str) -> Iterator[Scene]:
    """The owner's repository (:func:`make_repo`) under a fresh 0755 directory
    in /tmp (the owner must reach it, which pytest's tmp dirs do not allow),
    removed on exit."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    scene = Scene(root=root, repo=root / "repo", witness=root / "witness",
                  owner_home=root / "owner-home")  # fmt: skip
    try:
        make_repo(scene)
        yield scene
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def bottle_on_repo(
    scene: Scene, home: Path, agent_name: str, cwd: Path | None = None
) -> Iterator[Launched]:
    """A shell-provider bottle with ``--cwd`` the scene's repository (or
    ``cwd`` in it); the launch's progress lines go to ``scene.progress``."""
    import bot_bottle_docker.backend as backend_mod

    write_agent(home, agent_name, BOTTLE_MD)
    mp = pytest.MonkeyPatch()
    mp.setattr(backend_mod, "_stderr_progress", scene.progress.append)
    try:
        with launched(home, agent_name, host_env=dict(os.environ), cwd=cwd or scene.repo) as b:
            yield b
    finally:
        mp.undo()


def agent_run(b: Launched, script: str) -> str:
    """``bash -c script`` as the agent (through the provider's argv, started
    by root so it may drop to the agent); its output, stdout then stderr."""
    from bot_bottle import provider_kit as kit

    argv = kit.agent_argv(b.plan.provider_plan, ["bash", "-c", script])
    r = b.running.exec(argv, user="root")
    return (r.stdout + r.stderr).decode("utf-8", "replace")
