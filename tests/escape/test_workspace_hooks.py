"""Working-tree files the host repository's own config makes git run.

The host's ``.git`` is out of the agent's reach, but its config may point
back into the shared working tree: husky's ``core.hooksPath = .husky``, an
``include.path`` of a config kept in the repository. A real bottle
(uid-4242 repository configured both ways) rewrites them directly, by moving
their directories aside, and by deleting them; after the bottle the owner
runs ``git status`` and ``git commit`` and nothing the agent wrote runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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

SHARED = "tools/git/shared.gitconfig"
CLEAN = "tools/tidy.sh"


def _configure(scene: Scene) -> None:
    repo = scene.repo
    hook = repo / ".husky" / "pre-commit"
    shared = repo / SHARED
    for path in (hook.parent, shared.parent.parent, shared.parent):
        path.mkdir()
        os.chown(path, OWNER, GROUP)
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    shared.write_text("[alias]\n\tst = status\n")
    clean = repo / CLEAN
    clean.write_text("#!/bin/sh\ncat\n")
    for path in (hook, shared, clean):
        os.chown(path, OWNER, GROUP)
    owner_git(scene, "add", ".husky", "tools")
    owner_git(scene, "commit", "-qm", "husky, a shared config, a filter script")
    owner_git(scene, "config", "core.hooksPath", ".husky")
    owner_git(scene, "config", "include.path", f"../{SHARED}")
    # A clean filter kept in the repository, run on every text file git adds.
    owner_git(scene, "config", "filter.tidy.clean", f"sh {CLEAN}")
    (repo / ".git" / "info" / "attributes").write_text("*.txt filter=tidy\n")


def _attack(scene: Scene) -> str:
    hook = f"#!/bin/sh\\n{payload(scene, 'husky')}\\n"
    cfg = f'[core]\\n\\tfsmonitor = "{payload(scene, "include")}"\\n'
    return f"""
        cd /workspace
        printf '{hook}' > .husky/pre-commit && echo WROTE-HOOK
        printf '{cfg}' >> {SHARED} && echo WROTE-CONFIG
        rm -f {SHARED} && echo REMOVED-CONFIG
        mv .husky .husky-x && echo MOVED-HUSKY
        mv tools tools-x && echo MOVED-TOOLS
        mv tools/git tools/git-x && echo MOVED-GIT
        mkdir -p .husky tools/git
        for h in pre-commit post-commit; do
            printf '{hook}' > .husky/$h && chmod +x .husky/$h && echo ADDED-$h
        done
        printf '{cfg}' > {SHARED} && echo REPLACED-CONFIG
        printf '{payload(scene, "filter")}\\ncat\\n' > {CLEAN} && echo WROTE-FILTER
        echo DONE
    """


def _hook_branches(scene: Scene) -> str:
    """Branches that would run the agent's code once the operator checks
    them out: a new husky post-checkout hook (committed with plumbing: the
    file is read-only in the bottle), a directory laid out as a git dir."""
    hook = f"#!/bin/sh\\n{payload(scene, 'checkout')}\\n"
    return f"""
        set -e
        cd /workspace
        git checkout -qb hooky main
        blob=$(printf '{hook}' | git hash-object -w --stdin)
        git update-index --add --cacheinfo 100755,$blob,.husky/post-checkout
        git commit -qm 'a hook' --no-verify
        git checkout -qf main
        git checkout -qb layout main
        mkdir -p data/refs/heads data/objects
        echo 'ref: refs/heads/main' > data/HEAD
        touch data/refs/heads/.keep data/objects/.keep
        git config -f data/config core.fsmonitor '{payload(scene, "layout")}'
        git add data && git commit -qm 'a layout'
        git checkout -qf main
        echo BRANCHED
    """


@pytest.fixture(scope="module")
def scene(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    with repo_scene("bb-escape-hooks-") as scene:
        _configure(scene)
        with bottle_on_repo(scene, tmp_path_factory.mktemp("bbhome"), "hooks") as b:
            work = "cd /workspace && echo more >> src.txt && git commit -qam work && echo OK"
            for name, script in (
                ("attack", _attack(scene)),
                ("work", work),
                ("branches", _hook_branches(scene)),
            ):
                scene.agent_out[name] = agent_run(b, script)
        yield scene


def test_the_hooks_and_the_included_config_could_not_be_touched(scene: Scene) -> None:
    out = scene.agent_out["attack"]
    assert "DONE" in out, out
    for marker in ("WROTE-HOOK", "WROTE-CONFIG", "REMOVED-CONFIG", "MOVED-HUSKY",
                   "MOVED-TOOLS", "MOVED-GIT", "ADDED-pre-commit", "ADDED-post-commit",
                   "REPLACED-CONFIG", "WROTE-FILTER"):  # fmt: skip
        assert marker not in out, out
    assert (scene.repo / ".husky" / "pre-commit").read_text() == "#!/bin/sh\nexit 0\n"
    assert (scene.repo / SHARED).read_text() == "[alias]\n\tst = status\n"


def test_the_agent_still_works_in_the_rest_of_the_tree(scene: Scene) -> None:
    assert "OK" in scene.agent_out["work"], scene.agent_out["work"]


def test_the_operator_is_told_the_hooks_read_the_agents_files(scene: Scene) -> None:
    """What a hook reads (a Makefile, .pre-commit-config.yaml) no mount can
    know: the launch says so."""
    told = [line for line in scene.progress if "has git hooks (pre-commit)" in line]
    assert told and "review its edits before you commit" in told[0], scene.progress


def test_the_owners_git_runs_nothing_the_agent_wrote(scene: Scene) -> None:
    owner_git(scene, "status")
    (scene.repo / "op.txt").write_text("op\n")
    os.chown(scene.repo / "op.txt", OWNER, GROUP)
    owner_git(scene, "add", "op.txt")
    owner_git(scene, "commit", "-qm", "operator")
    owner_git(scene, "st", check=False)
    assert scene.witnesses() == {}


def test_branches_that_would_run_code_on_checkout_are_refused(scene: Scene) -> None:
    assert "BRANCHED" in scene.agent_out["branches"], scene.agent_out["branches"]
    refs = owner_git(scene, "for-each-ref", "--format=%(refname:short)")
    assert any(r.endswith("/main") and "bot-bottle/" in r for r in refs.split()), refs
    for branch, why in (("hooky", ".husky/post-checkout"), ("layout", "data is laid out")):
        assert not any(r.endswith(f"/{branch}") for r in refs.split()), refs
        refused = [line for line in scene.progress if "refused" in line and branch in line]
        assert refused and why in refused[0], scene.progress
    # Had the hook branch landed, checking it out would have run the hook.
    owner_git(scene, "checkout", "-q", "-b", "review", check=False)
    assert scene.witnesses() == {}
