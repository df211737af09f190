"""The ``--cwd`` tree around a bottle's life: handed to the agent's uid at
launch, and at the end (teardown, or ``cleanup`` after a launcher that died)
the agent's commits brought back, the git dirs it left disarmed and the tree
handed back to its owner (:mod:`tree_owner` says why).

Everything the end needs is recorded in the state dir (:data:`RECORD`) before
the tree changes hands, so ``cleanup`` can finish a bottle whose launcher was
killed: no secret is in it (``cleanup``'s scan of brought-back commits has
the installed detectors, not the bottle's own secret values).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot_bottle_sidecars.launch import bring_back

from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger
from bot_bottle.state import PENDING
from bot_bottle.termtext import visible
from bot_bottle_docker import nested_git, tree_owner, workspace_git

if TYPE_CHECKING:
    import docker

log = get_logger("bot_bottle_docker.workspace_tree")

RECORD = "workspace.json"
_TASK = "tree-task.json"
#: The bundle image's interpreter (the agent image may have none).
_PYTHON = "/opt/bot-bottle/bin/python3"
_TREE = "/tree"
_GIT_DIR = "/bottle-git"
HELPER_CAPS = ["CHOWN", "FOWNER", "DAC_OVERRIDE", "DAC_READ_SEARCH"]


@dataclass
class TreeRecord:
    slug: str
    cwd: str
    owner_uid: int
    owner_gid: int
    #: Whether the tree was handed to tree_owner.AGENT_UID (False: the agent
    #: ran as the owner's uid, the old way; see README "Files and users").
    handed_over: bool = False
    image: str = ""
    container: str = ""
    user: str = ""
    git_dir: str = ""
    host_git: str | None = None
    launch_tips: dict[str, str] = field(default_factory=dict)
    nested_at_launch: list[str] = field(default_factory=list)
    at_launch: dict[str, str] = field(default_factory=dict)
    guarded_ro: list[str] = field(default_factory=list)
    #: The working-tree guards' paths a brought-back branch must not change.
    scan_protected: list[str] = field(default_factory=list)
    created_mountpoint: bool = False
    #: Steps done, so a second run (cleanup after a teardown cut short)
    #: repeats none that must not be repeated.
    done: list[str] = field(default_factory=list)

    def save(self, state_path: Path) -> None:
        tmp = state_path / (RECORD + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        tmp.replace(state_path / RECORD)

    @classmethod
    def load(cls, state_path: Path) -> TreeRecord | None:
        try:
            data = json.loads((state_path / RECORD).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def workspace_with_mountpoint(self) -> workspace_git.WorkspaceGit:
        ws = self.workspace()
        ws.created_mountpoint = self.created_mountpoint
        return ws

    def workspace(self) -> workspace_git.WorkspaceGit:
        host = Path(self.host_git) if self.host_git else None
        owner = bring_back.Owner(self.owner_uid, self.owner_gid) if host else None
        return workspace_git.WorkspaceGit(
            cwd=Path(self.cwd), git_dir=Path(self.git_dir), slug=self.slug, host_git=host,
            host_owner=owner, launch_tips=dict(self.launch_tips),
            nested_at_launch=frozenset(self.nested_at_launch),
        )  # fmt: skip


def layout(ws: workspace_git.WorkspaceGit, guarded_ro: Sequence[str]) -> tuple[set[str], set[str]]:
    """(keep, skip) for :func:`tree_owner.hand_over`: the directories where
    git stops at a ``.git`` the agent cannot touch stay the owner's; guarded
    paths (read-only in the bottle) are not touched."""
    keep = {"."} if ws.host_git is not None else set()
    skip = set(guarded_ro)
    for rel in guarded_ro:
        if Path(rel).name == ".git":
            keep.add(str(Path(rel).parent))
    return keep, skip


#: Runs in the helper: the two stdlib-only modules, from their source text
#: (no host path of the installed package needs to be shared with the engine).
_BOOT = """
import sys, types
pkg = types.ModuleType("bot_bottle_docker")
pkg.__path__ = []
sys.modules["bot_bottle_docker"] = pkg
for name, src in SOURCES:
    mod = types.ModuleType("bot_bottle_docker." + name)
    sys.modules[mod.__name__] = mod
    setattr(pkg, name, mod)
    exec(compile(src, name + ".py", "exec"), mod.__dict__)
sys.modules["bot_bottle_docker.tree_owner"].main()
"""


def _program() -> str:
    sources = [(m.__name__.rsplit(".", 1)[1], Path(m.__file__ or "").read_text())
               for m in (nested_git, tree_owner)]  # fmt: skip
    return f"SOURCES = {sources!r}\n{_BOOT}"


def _image(client: docker.DockerClient, wanted: str) -> str:
    """The bundle image the launch used, or (pruned since: a ``cleanup``
    days later) any bundle image here: the helper needs only its Python."""
    import docker.errors

    try:
        client.images.get(wanted)
        return wanted
    except docker.errors.ImageNotFound:
        tags = [t for i in client.images.list(name="bot-bottle/sidecars") for t in i.tags]
        if not tags:
            raise BotBottleError(
                "no bundle image to run the working tree's helper in",
                hint="run any bottle once (it builds the image), then 'bot-bottle cleanup'",
            ) from None
        return tags[0]


def run_helper(
    client: docker.DockerClient, record: TreeRecord, state_path: Path, task: dict[str, Any]
) -> dict[str, Any]:
    """:func:`tree_owner.main` in a one-shot container of the bundle image:
    root with only the capabilities ownership and ACLs need, no network."""
    import docker.errors

    task_file = state_path / _TASK
    volumes = {record.cwd: {"bind": _TREE, "mode": "rw"}}
    if task["op"] == "finish" and record.git_dir and Path(record.git_dir).is_dir():
        volumes[record.git_dir] = {"bind": _GIT_DIR, "mode": "rw"}
        task = {**task, "git_dir": _GIT_DIR, "launcher_uid": os.getuid(),
                "launcher_gid": os.getgid()}  # fmt: skip
    task_file.write_text(json.dumps({**task, "top": _TREE}))
    try:
        out = client.containers.run(
            _image(client, record.image),
            entrypoint=[_PYTHON, "-c", _program(), "/run/tree-task.json"],
            command=[],
            user="root",
            network_mode="none",
            environment={"PYTHONDONTWRITEBYTECODE": "1"},
            volumes={
                **volumes,
                str(task_file): {"bind": "/run/tree-task.json", "mode": "ro"},
            },
            labels={
                "bot-bottle.backend": "docker",
                "bot-bottle.slug": record.slug,
                "bot-bottle.role": "tree-helper",
            },
            cap_drop=["ALL"],
            cap_add=HELPER_CAPS,
            security_opt=["no-new-privileges"],
            remove=True,
        )
    except docker.errors.ContainerError as exc:
        raw: object = exc.stderr or b""
        err = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        err = err.strip()[-400:]
        raise BotBottleError(
            f"the working tree's ownership could not change: {visible(err)}"
        ) from None
    except docker.errors.DockerException as exc:
        raise BotBottleError(f"the working tree's ownership could not change: {exc}") from None
    finally:
        task_file.unlink(missing_ok=True)
    text = out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)
    lines = text.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise BotBottleError("the working tree's helper answered nothing readable") from None


def hand_over(client: docker.DockerClient, record: TreeRecord, state_path: Path,
              keep: set[str], skip: set[str]) -> bool:  # fmt: skip
    """The tree to the agent's uid; False (nothing changed) without ACLs."""
    record.handed_over = True  # recorded first: a launcher killed midway is undone by cleanup
    record.save(state_path)
    result = run_helper(client, record, state_path, {
        "op": "hand_over", "agent_uid": tree_owner.AGENT_UID, "owner_uid": record.owner_uid,
        "keep": sorted(keep), "skip": sorted(skip),
    })  # fmt: skip
    if not result.get("acl"):
        record.handed_over = False
        record.save(state_path)
        return False
    record.at_launch = dict(result.get("at_launch") or {})
    record.save(state_path)
    log.info("tree_handed_over", cwd=record.cwd, entries=result.get("entries"))
    return True


def finish(
    client: docker.DockerClient,
    record: TreeRecord,
    state_path: Path,
    progress: Callable[[str], None],
) -> None:
    """Once the agent's container is gone: the git dirs it left disarmed,
    then the tree handed back (one helper run, so no git dir of the agent's
    is ever the owner's and armed); without a hand-over, the disarm alone."""
    if "finished" in record.done:
        return
    where = visible(record.cwd)
    at_launch = dict(record.at_launch)
    if record.handed_over:
        try:
            result = run_helper(client, record, state_path, {
                "op": "finish", "agent_uid": tree_owner.AGENT_UID,
                "owner_uid": record.owner_uid, "disarm": True, "at_launch": at_launch,
            })  # fmt: skip
        except BotBottleError as exc:
            # The state dir (this record) stays for 'bot-bottle cleanup'.
            (state_path / PENDING).write_text(
                f"the working tree {record.cwd} was not given back to its owner\n"
            )
            progress(f"warning: {exc}; {where} may still belong to uid {tree_owner.AGENT_UID}: "
                     "run 'bot-bottle cleanup' to retry")  # fmt: skip
            raise
        done, failed = list(result.get("disarmed", [])), list(result.get("failed", []))
    else:
        done, failed = nested_git.disarm(Path(record.cwd), at_launch)
    record.done.append("finished")
    record.save(state_path)
    (state_path / PENDING).unlink(missing_ok=True)
    report_disarmed(record.cwd, done, failed, progress)


def unfinished(state_path: Path) -> TreeRecord | None:
    """The record of a bottle whose tree was not given back (its launcher
    died before teardown, or teardown failed there)."""
    record = TreeRecord.load(state_path)
    return record if record is not None and "finished" not in record.done else None


def report_disarmed(
    cwd: str, done: Sequence[str], failed: Sequence[str], progress: Callable[[str], None]
) -> None:
    where = visible(cwd)
    if done:
        names = ", ".join(visible(n) for n in done[:10])
        progress(
            f"warning: disabled git directories the agent made or changed in {where}: "
            f"{names} (their HEAD is now {nested_git.DISABLED}; review their config and "
            "hooks before renaming it back)"
        )
    if failed:
        names = ", ".join(visible(n) for n in failed[:10])
        progress(
            f"warning: could not disable git directories the agent made in {where}: "
            f"{names}; do not run git inside them before reviewing their config"
        )
    log.info("git_dirs_disarmed", disarmed=list(done), failed=list(failed))


def owner_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid
