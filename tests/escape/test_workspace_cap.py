"""Bring-back's size cap: the bottle sends the pack of the agent's commits,
and the host writes it only up to ``BOT_BOTTLE_BRING_BACK_MAX_MB`` (the
file-size limit of the fetch). Over it, a clear error, and nothing of the
agent's commits reaches the host repository."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.escape.workspace_kit import Scene, agent_run, bottle_on_repo, owner_git, repo_scene

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="a repository of another uid needs root"),
]

SCRIPT = """
    set -e
    cd /workspace
    head -c 3000000 /dev/urandom > big.bin
    git add big.bin
    git commit -qm 'three MB of noise'
    git rev-parse HEAD
"""


def _objects(scene: Scene) -> set[str]:
    out = owner_git(scene, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    return set(out.split())


@pytest.fixture(scope="module")
def scene(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    with repo_scene("bb-escape-cap-") as scene:
        scene.agent_out["objects-before"] = " ".join(sorted(_objects(scene)))
        mp = pytest.MonkeyPatch()
        mp.setenv("BOT_BOTTLE_BRING_BACK_MAX_MB", "1")
        try:
            with bottle_on_repo(scene, tmp_path_factory.mktemp("bbhome"), "cap") as b:
                scene.slug = b.plan.slug
                scene.agent_out["commit"] = agent_run(b, SCRIPT)
        finally:
            mp.undo()
        yield scene


def test_over_the_cap_nothing_is_brought_back_and_the_error_says_why(scene: Scene) -> None:
    sha = scene.agent_out["commit"].strip().splitlines()[-1]
    assert len(sha) == 40, scene.agent_out["commit"]
    lines = [line for line in scene.progress if "nothing was brought back" in line]
    assert lines and lines[0].startswith("error:"), scene.progress
    assert "larger than the cap of 1 MiB" in lines[0]
    assert "BOT_BOTTLE_BRING_BACK_MAX_MB" in lines[0]
    assert owner_git(scene, "for-each-ref", "refs/heads/bot-bottle/") == ""
    assert _objects(scene) == set(scene.agent_out["objects-before"].split())
    assert sha not in _objects(scene)
