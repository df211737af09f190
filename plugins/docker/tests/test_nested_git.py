"""nested_git on real directories and real git: what counts as a git dir,
what is left alone, and that a disarmed one is no repository to git."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bot_bottle_docker.nested_git import DISABLED, disarm, git_dirs


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_new_and_changed_git_dirs_are_disarmed_unchanged_ones_kept(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "kept").mkdir(parents=True)
    _git("init", "-q", cwd=repo)
    _git("init", "-q", cwd=repo / "kept")
    (repo / "edited").mkdir()
    _git("init", "-q", cwd=repo / "edited")
    (repo / "notes").mkdir()
    (repo / "notes" / "HEAD").write_text("a file called HEAD, no repository\n")
    before = git_dirs(repo)
    assert set(before) == {"kept/.git", "edited/.git"}  # not the top level's

    (repo / "new").mkdir()
    _git("init", "-q", cwd=repo / "new")
    _git("init", "-q", "--bare", "bare", cwd=repo)
    _git("config", "core.fsmonitor", "true", cwd=repo / "edited")
    (repo / "link").symlink_to(repo / "new")  # not followed: one entry for it
    done, failed = disarm(repo, before)

    assert sorted(done) == ["bare", "edited/.git", "new/.git"] and failed == []
    assert (repo / "kept" / ".git" / "HEAD").is_file()
    assert (repo / "notes" / "HEAD").is_file()
    assert (repo / ".git" / "HEAD").is_file()
    for rel in done:
        assert (repo / rel / DISABLED).is_file() and not (repo / rel / "HEAD").exists()
    # git now walks past it to the top level's repository.
    top = _git("rev-parse", "--show-toplevel", cwd=repo / "new").stdout.strip()
    assert Path(top) == repo.resolve()


def test_a_read_only_git_dir_is_still_disarmed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    _git("init", "-q", cwd=repo / "sub")
    (repo / "sub" / ".git").chmod(0o555)
    done, failed = disarm(repo, {})
    assert done == ["sub/.git"] and failed == []


def test_an_unreadable_directory_does_not_hide_a_git_dir() -> None:
    """As the workspace's owner (bot-bottle runs as the operator): ``chmod
    111`` lets git open ``hidden/.git`` but not a walk list ``hidden``."""
    tmp_path = Path(tempfile.mkdtemp(prefix="bb-nested-", dir="/tmp"))
    tmp_path.chmod(0o755)
    try:
        _unreadable(tmp_path)
    finally:
        for path in [tmp_path, *tmp_path.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(tmp_path)


def _unreadable(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "hidden").mkdir(parents=True)
    _git("init", "-q", cwd=repo / "hidden")
    (repo / "hidden").chmod(0o111)
    if os.geteuid() == 0:
        for path in [tmp_path, *tmp_path.rglob("*")]:
            os.chown(path, 4242, 4242, follow_symlinks=False)
        (repo / "hidden").chmod(0o111)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child walks as the owner
            try:
                os.setgroups([])
                os.setgid(4242)
                os.setuid(4242)
                os.write(write, repr(sorted(git_dirs(repo))).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        assert os.read(read, 4096).decode() == "['hidden/.git']"
    else:
        assert sorted(git_dirs(repo)) == ["hidden/.git"]


def test_new_gitfiles_and_git_links_are_renamed_old_ones_kept(tmp_path: Path) -> None:
    from bot_bottle_docker.nested_git import GITFILE_DISABLED

    repo = tmp_path / "repo"
    for sub in ("old", "new", "link"):
        (repo / sub).mkdir(parents=True)
    _git("init", "-q", cwd=repo)
    (repo / "old" / ".git").write_text("gitdir: ../.git/modules/old\n")
    before = git_dirs(repo)
    (repo / "new" / ".git").write_text("gitdir: /elsewhere/workspace.git\n")
    (repo / "link" / ".git").symlink_to("/elsewhere/workspace.git")
    done, failed = disarm(repo, before)
    assert sorted(done) == ["link/.git", "new/.git"] and failed == []
    assert (repo / "old" / ".git").is_file()
    assert (repo / "new" / GITFILE_DISABLED).read_text() == "gitdir: /elsewhere/workspace.git\n"
    assert (repo / "link" / GITFILE_DISABLED).is_symlink()
