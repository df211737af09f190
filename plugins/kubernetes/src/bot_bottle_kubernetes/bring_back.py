"""The agent's commits out of the pod, as git objects, scanned; never as files.

There is no shared filesystem and no ``docker exec -i`` to run
``git-upload-pack`` in the bottle with, so before the teardown:

1. the pod's ``/workspace/.git`` comes out as a tar over exec, bounded in
   the pod (``head -c``: the seeded repository plus the bring-back cap),
   checked member by member (:mod:`.transfer`: no ``..``, no absolute path,
   no link leaving the destination, no device) into a private temp dir;
2. a fresh repository is built from it with only what git reads as data:
   the object files (loose objects and ``pack-*.pack``/``.idx``, regular
   files with well-formed names) and the branch refs, parsed here (loose
   ``refs/heads`` files and ``packed-refs``), each name checked with
   ``git check-ref-format`` and each tip a commit. The agent's config,
   hooks, ``alternates``, ``commondir``, commit-graph and symbolic refs are
   never opened by a git process;
3. the same :func:`bot_bottle_sidecars.launch.bring_back.bring_back` the
   Docker backend runs fetches from that repository (``git-upload-pack``
   under bot-bottle's clean environment, into a quarantine, fsck-checked,
   capped), scans each new branch with git-gate's push scan and the
   working tree's guards, and lands clean ones as
   ``refs/heads/bot-bottle/<slug>/<branch>``.

The working-tree files the agent changed stay in the pod and go with it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot_bottle_sidecars.launch import bring_back as bb

from bot_bottle.errors import BotBottleError
from bot_bottle.termtext import visible
from bot_bottle_kubernetes import transfer

WORKSPACE_GIT = "/workspace/.git"
_SHA = re.compile(rb"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_LOOSE_DIR = re.compile(r"[0-9a-f]{2}")
_LOOSE_FILE = re.compile(r"[0-9a-f]{38}(?:[0-9a-f]{24})?")
_PACK_FILE = re.compile(r"pack-[0-9a-f]{40}(?:[0-9a-f]{24})?\.(?:pack|idx)")


@dataclass
class Launch:
    """What bring-back needs from the launch, read on the host before the
    workspace was seeded."""

    target: bb.HostRepo
    #: Bytes of the host's ``.git`` when seeded: the pod's copy starts that large.
    seeded_bytes: int = 0
    #: Working-tree paths the host's git reads as config or code: a branch
    #: that changes one is refused (checking it out would run the agent's code).
    protected: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, cwd: Path, slug: str) -> Launch:
        target = bb.HostRepo.of(cwd, slug)
        if target.host_git is None or target.host_owner is None:
            return cls(target=target)
        from bot_bottle_docker import worktree_guards

        guarded = worktree_guards.guards(cwd, target.host_git, target.host_owner)
        protected = [d.removeprefix("/workspace/") for _s, d, m in guarded if m == "ro"]
        return cls(target=target, seeded_bytes=_tree_bytes(target.host_git), protected=protected)


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def pull_git_dir(run: transfer.Exec, dest: Path, limit: int) -> None:
    """The pod's ``/workspace/.git`` into host ``dest`` (new), at most
    ``limit`` bytes of tar, refused whole when unsafe or over the limit."""
    parent, base = WORKSPACE_GIT.rsplit("/", 1)
    # head bounds what the pod sends (the exec result is held in memory);
    # one byte more than the limit tells "over" from "exactly at".
    script = 'tar -c -f - -C "$1" "$2" | head -c "$0"'
    result = run(["sh", "-c", script, str(limit + 1), parent, base], None)
    if len(result.stdout) > limit:
        raise BotBottleError(
            f"the pod's git directory is larger than {limit // 2**20} MiB "
            "(the seeded repository plus the bring-back cap)",
            hint="set BOT_BOTTLE_BRING_BACK_MAX_MB higher, or have the agent push through git-gate",
        )
    if not result.ok or not result.stdout:
        raise BotBottleError(
            f"reading {WORKSPACE_GIT} from the pod failed (exit {result.exit_code}): "
            f"{visible(result.stderr.decode(errors='replace').strip()[:300])}"
        )
    staging = dest.parent / f".{dest.name}.incoming"
    transfer.unpack(result.stdout, staging)
    produced = staging / base
    if not produced.is_dir() or produced.is_symlink():
        shutil.rmtree(staging, ignore_errors=True)
        raise BotBottleError(f"the pod's archive of {WORKSPACE_GIT} did not hold a directory")
    produced.rename(dest)
    shutil.rmtree(staging, ignore_errors=True)


def rebuild(pod_git: Path, clean: Path, host_objects: Path | None) -> list[str]:
    """A fresh repository at ``clean`` holding only ``pod_git``'s object
    files and branch refs (see the module doc); returns the refs skipped."""
    bb.git(["init", "-q", "--bare"], git_dir=clean)
    src_objects = pod_git / "objects"
    if src_objects.is_dir() and not src_objects.is_symlink():
        for entry in sorted(src_objects.iterdir()):
            if entry.is_symlink() or not entry.is_dir():
                continue
            if _LOOSE_DIR.fullmatch(entry.name):
                pattern = _LOOSE_FILE
            elif entry.name == "pack":
                pattern = _PACK_FILE
            else:
                continue  # info/ (alternates, commit-graph, ...) is not data
            for item in entry.iterdir():
                if pattern.fullmatch(item.name) and item.is_file() and not item.is_symlink():
                    (clean / "objects" / entry.name).mkdir(exist_ok=True)
                    item.replace(clean / "objects" / entry.name / item.name)
    if host_objects is not None:
        # The host's objects are trusted; a pack the agent repacked may be thin
        # against them.
        (clean / "objects" / "info" / "alternates").write_text(f"{host_objects}\n")
    refs = _branch_refs(pod_git)
    skipped: list[str] = []
    candidates: dict[str, str] = {}
    for ref, sha in refs.items():
        ok = bb.git(["check-ref-format", ref], git_dir=clean, check=False).returncode == 0
        if ok:
            candidates[ref] = sha
        else:
            skipped.append(ref)
    if candidates:
        shas = "".join(f"{sha}\n" for sha in candidates.values()).encode()
        kinds = bb.git(["cat-file", "--batch-check=%(objectname) %(objecttype)"],
                       git_dir=clean, stdin=shas).stdout.decode().splitlines()  # fmt: skip
        commits = {line.split(" ")[0] for line in kinds if line.endswith(" commit")}
        commands = []
        for ref, sha in sorted(candidates.items()):
            if sha in commits:
                commands.append(f"create {ref} {sha}\n")
            else:
                skipped.append(ref)
        if commands:
            bb.git(["update-ref", "--stdin"], git_dir=clean, stdin="".join(commands).encode())
    return sorted(skipped)


def _branch_refs(pod_git: Path) -> dict[str, str]:
    """``refs/heads/*`` of ``pod_git`` read as data: ``packed-refs`` lines,
    then loose files (which win, as in git); symbolic refs are not followed."""
    refs: dict[str, str] = {}
    packed = pod_git / "packed-refs"
    if packed.is_file() and not packed.is_symlink():
        for line in packed.read_bytes().splitlines():
            sha, _, name = line.partition(b" ")
            if _SHA.fullmatch(sha) and name.startswith(b"refs/heads/"):
                refs[os.fsdecode(name)] = sha.decode()
    heads = pod_git / "refs" / "heads"
    if heads.is_dir() and not heads.is_symlink():
        for root, dirs, files in os.walk(heads):
            dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
            for name in files:
                path = Path(root) / name
                if path.is_symlink() or not path.is_file() or path.stat().st_size > 200:
                    continue
                sha = path.read_bytes().strip()
                if _SHA.fullmatch(sha):
                    refs["refs/heads/" + path.relative_to(heads).as_posix()] = sha.decode()
    return refs


def bring_back(
    run: transfer.Exec,
    launch: Launch,
    scanner: bb.Scanner,
    progress: Callable[[str], None],
    where: str,
    max_bytes: int | None = None,
) -> bb.BringBackResult:
    """The whole path, in a private temp dir that is gone afterwards; says
    what came back or was refused through ``progress``."""
    target = launch.target
    if target.host_git is None:
        return bb.BringBackResult()
    cap = bb.bring_back_cap() if max_bytes is None else max_bytes
    with tempfile.TemporaryDirectory(prefix="bb-k8s-bring-back-") as tmp:
        work = Path(tmp)
        try:
            pull_git_dir(run, work / "pod.git", launch.seeded_bytes + cap)
            skipped = rebuild(work / "pod.git", work / "clean.git", target.host_git / "objects")
            shutil.rmtree(work / "pod.git")
            result = bb.bring_back(
                target, ["env"], scanner, work / "quarantine.git", max_bytes=cap,
                remote_git_dir=str(work / "clean.git"),
            )  # fmt: skip
        except (BotBottleError, OSError, subprocess.SubprocessError) as exc:
            # The teardown goes on (the pods must go); the operator is told.
            progress(f"warning: the agent's commits were not brought back into {where}: {exc}")
            return bb.BringBackResult(error=str(exc))
    for ref in skipped:
        progress(f"refused, not brought into {where}: {visible(ref)}: not a branch of commits")
    if result.over_cap:
        progress(
            f"error: nothing was brought back into {where}: {result.error} "
            "(hint: set BOT_BOTTLE_BRING_BACK_MAX_MB higher, or have the agent push "
            "through git-gate)"
        )
    elif result.error:
        progress(f"warning: the agent's commits could not be fetched: {result.error}")
    for item in result.items:
        what = "refused, not brought into" if item.refused else "brought back into"
        progress(f"{what} {where}: {item.line()}")
    return result


def guarded_scanner(scan: bb.Scanner, protected: Sequence[str]) -> bb.Scanner:
    """git-gate's scan, then the working tree's guards (as on Docker)."""
    from bot_bottle_docker import worktree_guards

    def scanner(repo: Path, tip: str, branch: str) -> tuple[int, list[str]]:
        commits, problems = scan(repo, tip, branch)
        return commits, [*problems, *worktree_guards.branch_problems(repo, tip, protected)]

    return scanner
