"""nested_git on real directories and real git: what counts as a git dir,
what is left alone, and that a disarmed one is no repository to git."""

from __future__ import annotations

import os
import subprocess
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
