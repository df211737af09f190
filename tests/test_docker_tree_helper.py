"""The working tree's helper container (``workspace_tree.run_helper``) on
the real engine: hand-over, then finish (disarm, hand-back, the bottle's git
dir back to the launcher's uid), the modules passed as source, and a bundle
image pruned since the launch replaced by another one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bot_bottle_docker import tree_owner, workspace_tree

if TYPE_CHECKING:
    import docker

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="a tree of another uid needs root"),
]

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
OWNER, GROUP = 4242, 4343


@pytest.fixture
def tree() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="bb-tree-helper-", dir="/tmp"))
    try:
        top = root / "repo"
        (top / "src").mkdir(parents=True)
        (top / "src" / "a.txt").write_text("a\n")
        (root / "bottle.git" / "objects").mkdir(parents=True)
        for path in [top, *top.rglob("*")]:
            os.chown(path, OWNER, GROUP)
        for path in [root / "bottle.git", *(root / "bottle.git").rglob("*")]:
            os.chown(path, tree_owner.AGENT_UID, GROUP)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_helper_hands_over_and_back_from_any_bundle_image(
    docker_client: docker.DockerClient, base_image: str, tree: Path, tmp_path: Path
) -> None:
    from bot_bottle_docker.images import ensure_bundle_image

    ensure_bundle_image(base_image=base_image, extra_ca=HOST_CA if HOST_CA.exists() else None)
    top = tree / "repo"
    record = workspace_tree.TreeRecord(
        slug="helper-test", cwd=str(top), owner_uid=OWNER, owner_gid=GROUP,
        image="bot-bottle/sidecars:pruned-since-0000", git_dir=str(tree / "bottle.git"),
    )  # fmt: skip
    state = tmp_path / "state"
    state.mkdir()
    assert workspace_tree.hand_over(docker_client, record, state, keep=set(), skip=set())
    assert (top / "src" / "a.txt").stat().st_uid == tree_owner.AGENT_UID
    assert record.handed_over and "src" not in record.at_launch
    # The agent's work: a git dir in src.
    planted = top / "src" / "g"
    (planted / "objects").mkdir(parents=True)
    (planted / "refs").mkdir()
    (planted / "HEAD").write_text("ref: refs/heads/main\n")
    for path in [planted, *planted.rglob("*")]:
        os.chown(path, tree_owner.AGENT_UID, GROUP)  # as the agent would have
    lines: list[str] = []
    workspace_tree.finish(docker_client, record, state, lines.append)
    assert (planted / "HEAD.bot-bottle-disabled").is_file(), lines
    assert any("src/g" in line for line in lines), lines
    assert all(p.lstat().st_uid == OWNER for p in [top, *top.rglob("*")])
    assert all(p.lstat().st_uid == os.getuid() for p in (tree / "bottle.git").rglob("*"))
    assert "finished" in (workspace_tree.TreeRecord.load(state) or record).done
    assert not (state / "tree-task.json").exists()
