"""The agent's commits brought back also when the launcher does not tear down itself.

The launcher's teardown brings the commits back (:mod:`.bring_back`) before
the pods go. Two other ends exist: ``stop`` (the console's, or any
process's ``backend.stop``) deletes the agent pod under a running launcher,
and a SIGKILLed launcher leaves the bottle for ``cleanup``. Both must bring
the commits back first, through the same scanned path, as the Docker
backend's ``cleanup`` does for a dead launcher's ``--cwd`` tree
(``workspace.json`` in the state dir and the ``cleanup-pending`` marker).

So once the workspace is seeded, before the agent runs, the launcher writes :data:`RECORD` into
the bottle's state dir: what bring-back needs (the host repository, its
owner and branch tips at launch, the seeded size, the working-tree guards'
paths, the namespace and the agent pod), no secret, and the state dir's
``cleanup-pending`` marker says why the state is kept. Whoever ends the
bottle first brings the commits back under the record's lock and marks it:

* the launcher's teardown: with the bottle's own secret values in the scan
  (git-gate's known-secrets detector), as before;
* ``stop`` and ``cleanup``: with the installed detectors, the working-tree
  guards and the bottle's secret values read back from the bundle's Secret
  in the cluster (never kept on disk here; the Secret lives until the
  bottle's objects go, which is after this). Docker's ``cleanup`` cannot do
  that (its values were only in the dead launcher's memory); a cluster can;

then the agent pod goes. When it did come back (refused branches included:
they were scanned and reported), the record and the marker are removed. When
it could not (the pod already gone, the exec failed, the archive refused),
the record keeps the reason and the marker stays: ``cleanup`` lists the
bottle's ``--cwd`` with that reason, once, and removes the record when the
operator confirms. Nothing unscanned is ever landed: every path goes
through :func:`bring_back.bring_back`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot_bottle_sidecars.launch import bring_back as bb

from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger
from bot_bottle.state import PENDING, StateDir
from bot_bottle.termtext import visible
from bot_bottle_kubernetes import bring_back as workspace_back

if TYPE_CHECKING:
    from bot_bottle_kubernetes.cluster import Kube

log = get_logger("bot_bottle_kubernetes.pending_back")

RECORD = "k8s-workspace.json"
#: The kind of ``cleanup`` item a leftover record is listed as (Docker's word).
ITEM_KIND = "workspace"
_LOCK = "k8s-workspace.lock"


@dataclass
class WorkspaceRecord:
    slug: str
    cwd: str
    namespace: str
    agent_pod: str
    host_git: str | None = None
    owner_uid: int | None = None
    owner_gid: int | None = None
    launch_tips: dict[str, str] = field(default_factory=dict)
    seeded_bytes: int = 0
    protected: list[str] = field(default_factory=list)
    #: Who brought the commits back ("teardown", "stop", "cleanup"), once done.
    done_by: str = ""
    #: Why the commits could not be brought back ("" while not tried or done).
    failed: str = ""
    #: What stop/cleanup said (refs brought back, branches refused and why;
    #: no secret: findings name rule and place), repeated by the launcher,
    #: whose terminal the operator watches (the console's stop has none).
    report: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, launch: workspace_back.Launch, *, cwd: Path, namespace: str, agent_pod: str
    ) -> WorkspaceRecord:
        target = launch.target
        owner = target.host_owner
        return cls(
            slug=target.slug,
            cwd=str(cwd),
            namespace=namespace,
            agent_pod=agent_pod,
            host_git=str(target.host_git) if target.host_git is not None else None,
            owner_uid=owner.uid if owner is not None else None,
            owner_gid=owner.gid if owner is not None else None,
            launch_tips=dict(target.launch_tips),
            seeded_bytes=launch.seeded_bytes,
            protected=list(launch.protected),
        )

    def launch(self) -> workspace_back.Launch:
        owner = None
        if self.owner_uid is not None and self.owner_gid is not None:
            owner = bb.Owner(self.owner_uid, self.owner_gid)
        target = bb.HostRepo(
            slug=self.slug,
            host_git=Path(self.host_git) if self.host_git else None,
            host_owner=owner,
            launch_tips=dict(self.launch_tips),
        )
        return workspace_back.Launch(
            target=target, seeded_bytes=self.seeded_bytes, protected=list(self.protected)
        )

    @property
    def finished(self) -> bool:
        return bool(self.done_by)

    # -- on disk ---------------------------------------------------------------

    def save(self, state_path: Path) -> None:
        state_path.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = state_path / (RECORD + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        tmp.replace(state_path / RECORD)
        if self.failed:
            pending = f"the agent's commits were not brought back into {self.cwd}: {self.failed}\n"
        else:
            pending = f"the agent's commits in its pod are not yet brought back into {self.cwd}\n"
        (state_path / PENDING).write_text(pending)

    @classmethod
    def load(cls, state_path: Path) -> WorkspaceRecord | None:
        try:
            data = json.loads((state_path / RECORD).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def clear(state_path: Path) -> None:
        for name in (RECORD, PENDING, _LOCK):
            (state_path / name).unlink(missing_ok=True)


def state_path(slug: str) -> Path:
    return StateDir.for_slug(slug).path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One bring-back at a time per bottle (a stop racing the teardown)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def record_launch(
    launch: workspace_back.Launch, *, cwd: Path, namespace: str, agent_pod: str
) -> WorkspaceRecord | None:
    """Written once the workspace is seeded, before the agent runs; None when
    ``cwd`` is no repository."""
    if launch.target.host_git is None:
        return None
    record = WorkspaceRecord.of(launch, cwd=cwd, namespace=namespace, agent_pod=agent_pod)
    record.save(state_path(record.slug))
    return record


def bring_back_once(
    slug: str,
    run: Any,
    scanner: bb.Scanner,
    progress: Callable[[str], None],
    *,
    by: str,
    pod_exists: Callable[[], bool],
) -> bool:
    """Bring ``slug``'s commits back unless someone already did; returns
    whether they came back (now or before). The record keeps the outcome."""
    path = state_path(slug)
    with locked(path):
        record = WorkspaceRecord.load(path)
        if record is None:
            return True
        where = visible(record.cwd)
        if record.finished:
            if by == "stop":
                # Another stop got here first: the record stays for the
                # launcher's teardown, which repeats its report (or cleanup).
                return True
            if by == "teardown":
                progress(f"the agent's commits were brought back into {where} by {record.done_by}")
                for line in record.report:
                    progress(f"  {line}")
            WorkspaceRecord.clear(path)
            return True
        if record.failed:
            return False
        if not pod_exists():
            record.failed = "the agent's pod was gone before they were read out of it"
            progress(f"warning: the agent's commits were not brought back into {where}: "
                     f"{record.failed}")  # fmt: skip
            record.save(path)
            return False
        said: list[str] = []

        def tell(line: str) -> None:
            said.append(line)
            progress(line)

        result = workspace_back.bring_back(run, record.launch(), scanner, tell, where)
        record.report = said[-50:]
        if result.error:
            record.failed = visible(result.error)
            record.save(path)
            return False
        record.done_by = by
        if by == "teardown":
            WorkspaceRecord.clear(path)
        else:
            # Kept (done) until the launcher's teardown or cleanup sees it.
            record.save(path)
            (path / PENDING).unlink(missing_ok=True)
        return True


def teardown(
    slug: str, run: Any, scanner: bb.Scanner, progress: Callable[[str], None], pod_exists: Any
) -> None:
    """The launcher's end: bring back (full scan) unless stop did; a failure
    leaves the record (and the state dir) for the operator."""
    ok = bring_back_once(slug, run, scanner, progress, by="teardown", pod_exists=pod_exists)
    if not ok:
        progress(
            f"hint: the state of {slug} is kept with the reason; 'bot-bottle cleanup' lists it"
        )


def installed_scanner(record: WorkspaceRecord, secrets: list[Any] | None = None) -> bb.Scanner:
    """``stop``/``cleanup``'s scan: the installed detectors, the guards and
    the bottle's own secret values (from :func:`cluster_secrets`)."""
    return workspace_back.guarded_scanner(bb.default_scanner(secrets or []), record.protected)


def cluster_secrets(kube: Kube, slug: str) -> list[Any]:
    """The bottle's secret values as the bundle's ``env`` Secret holds them
    (route tokens, egress secrets, git-gate's known secrets), for a scan
    whose launcher is not there to hand them over. None when the Secret is
    gone or unreadable: the scan then has the installed detectors only, and
    says so."""
    import base64

    from bot_bottle.secrets import Secret
    from bot_bottle_docker.freezer import SECRET_ENV_PREFIXES
    from bot_bottle_kubernetes.render import names

    try:
        secret = kube.get("Secret", names(slug)["env"])
    except BotBottleError:
        return []
    out: list[Any] = []
    for key, value in ((secret or {}).get("data") or {}).items():
        if str(key).startswith(SECRET_ENV_PREFIXES) and value:
            with contextlib.suppress(ValueError):
                out.append(Secret(base64.b64decode(value).decode("utf-8")))
    return out


def agent_exec(kube: Kube, pod: str) -> Callable[..., Any]:
    from bot_bottle_kubernetes.launcher import AGENT_CONTAINER

    def run(argv: Any, stdin: bytes | None) -> Any:
        return kube.exec(pod, AGENT_CONTAINER, list(argv), stdin=stdin)

    return run


def pod_exists(kube: Kube, pod: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            obj = kube.get("Pod", pod)
        except BotBottleError:
            return True  # unknown: let the read say what is wrong
        phase = ((obj or {}).get("status") or {}).get("phase")
        return obj is not None and phase in (None, "Pending", "Running")

    return check


def before_removal(kube: Kube, slug: str, progress: Callable[[str], None], *, by: str) -> None:
    """``stop``/``cleanup``: bring the commits back from the agent pod while
    it is still there (never raises: the removal goes on, the record says
    what happened)."""
    path = state_path(slug)
    record = WorkspaceRecord.load(path)
    if record is None or record.finished or record.failed:
        return
    if record.namespace != kube.namespace:
        return
    progress(f"bringing the agent's commits back into {visible(record.cwd)} before the pod goes")
    try:
        secrets = cluster_secrets(kube, slug)
        if not secrets:
            progress(
                "note: the bottle's Secret is gone or holds no value: the commits are "
                "scanned with the installed detectors only"
            )
        bring_back_once(
            slug,
            agent_exec(kube, record.agent_pod),
            installed_scanner(record, secrets),
            progress,
            by=by,
            pod_exists=pod_exists(kube, record.agent_pod),
        )
    except (BotBottleError, OSError) as exc:
        log.warning("bring_back_before_removal_failed", slug=slug, error=str(exc))
        progress(f"warning: the agent's commits were not brought back: {exc}")


def leftovers() -> list[tuple[str, WorkspaceRecord]]:
    """(slug, record) of bottles whose launcher is gone and whose record is
    still there: commits not yet brought back, or a failure to report."""
    from bot_bottle.state import all_states

    out = []
    for state in all_states():
        record = WorkspaceRecord.load(state.path)
        if record is not None and not state.owner_alive:
            out.append((state.slug, record))
    return out


def describe(record: WorkspaceRecord) -> str:
    where = visible(record.cwd)
    if record.failed:
        return f"{where} (the agent's commits were not brought back: {record.failed})"
    if record.finished:
        return f"{where} (commits brought back by {record.done_by})"
    return f"{where} (the agent's commits not yet brought back)"


def settle(slug: str, progress: Callable[[str], None]) -> bool:
    """``cleanup`` of a listed record: it was reported; remove it unless the
    commits can still come back (the bottle's pod is still there)."""
    path = state_path(slug)
    record = WorkspaceRecord.load(path)
    if record is None:
        return True
    if not (record.finished or record.failed):
        return False
    if record.failed:
        progress(f"warning: {describe(record)}")
    WorkspaceRecord.clear(path)
    return True


def leftover_items() -> list[Any]:
    """``find_orphans``' items for :func:`leftovers`."""
    from bot_bottle.contracts.backend import CleanupItem
    from bot_bottle_kubernetes.render import BACKEND

    return [CleanupItem(BACKEND, ITEM_KIND, describe(record), slug) for slug, record in leftovers()]


def settle_items(items: Any, progress: Callable[[str], None]) -> list[Any]:
    """The listed records ``cleanup`` may now remove (see :func:`settle`)."""
    return [i for i in items if i.kind == ITEM_KIND and i.slug and settle(i.slug, progress)]


def unfinished(items: Any) -> list[tuple[str, str]]:
    """(namespace, slug) of listed records whose commits were not tried yet
    and whose bottle is not itself listed (``cleanup`` tries them first)."""
    bottles = {i.slug for i in items if i.kind != ITEM_KIND}
    out = []
    for item in items:
        if item.kind != ITEM_KIND or not item.slug or item.slug in bottles:
            continue
        record = WorkspaceRecord.load(state_path(item.slug))
        if record is not None and not (record.finished or record.failed):
            out.append((record.namespace, item.slug))
    return out
