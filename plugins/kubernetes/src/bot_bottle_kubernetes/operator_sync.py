"""The operator's paths for a cluster bottle: a mirror of the bundle pod's
supervise queue and daemon logs on the host, kept by the launcher over
``pods/exec``.

On Docker the host's queue directory (``default_queue_dir(slug)``) is
mounted into the bundle and the logs directory is the history's, so the
console, ``proposals list/approve/reject`` and ``logs --follow`` read and
write host files. A pod has no host directory, so the launcher keeps those
same host files in step, every :data:`INTERVAL` seconds while the bottle runs
and once more at teardown:

* **pod -> host**: each ``<id>.proposal.json`` (the name checked against the
  proposal id pattern, at most :data:`MAX_FILE` bytes) the host does not have
  yet is written atomically into the host queue; the host tooling validates
  every file on each read, as it does the files the Docker bundle writes.
  Responses in the pod are never taken: the host's are the decisions.
* **host -> pod**: each ``<id>.response.json`` the operator wrote (with its
  ``audit`` record, by the unchanged host tooling) for a proposal whose pod
  copy has none is copied into the pod's queue under a temporary name and
  renamed into place (``mv``), so supervise reads all of it or nothing.
* **logs**: each ``*.jsonl`` file of the bundle's log directory is appended
  to its host copy in the history (bytes past the host copy's end, when the
  host copy is a prefix), so ``logs --follow``, which follows files by inode
  and offset, sees new lines; a file that is no longer an extension of the
  host copy (rotation) replaces it.

Every archive out of the pod goes through :mod:`.transfer`'s checks.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from bot_bottle_sidecars.layout import LOG_DIR, QUEUE_DIR

from bot_bottle.contracts.supervise import PROPOSAL_ID_RE, atomic_write
from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger
from bot_bottle_kubernetes import transfer

log = get_logger("bot_bottle_kubernetes.operator_sync")

#: Seconds between two passes; an answer reaches the agent within about this.
INTERVAL = 2.0
#: A proposal file is a few kilobytes (the Dockerfile cap is 256 KiB).
MAX_FILE = 2 * 2**20
_PROPOSAL = ".proposal.json"
_RESPONSE = ".response.json"


class QueueMirror:
    """The bundle pod's queue and logs, mirrored to ``queue`` and ``logs`` on the host."""

    def __init__(
        self, run: transfer.Exec, queue: Path, logs: Path, *, interval: float | None = None
    ) -> None:
        self.run = run
        self.queue = queue
        self.logs = logs
        self.interval = INTERVAL if interval is None else interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The last pass's failure, if any (a pod not up yet, a refused archive).
        self.last_error = ""

    # -- one pass ------------------------------------------------------------

    def sync_once(self) -> None:
        """Queue and logs, each tried even when the other fails; raises the
        first failure."""
        errors: list[Exception] = []
        for part in (self.sync_queue, self.sync_logs):
            try:
                part()
            except (BotBottleError, OSError) as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def sync_queue(self) -> None:
        self.queue.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(prefix="bb-k8s-queue-") as tmp:
            pod_queue = Path(tmp) / "queue"
            pod_queue.mkdir()
            transfer.pull_tree(self.run, QUEUE_DIR, pod_queue)
            self._take_proposals(pod_queue)
            self._push_responses(pod_queue)

    def _take_proposals(self, pod_queue: Path) -> None:
        for path in sorted(pod_queue.iterdir()):
            pid = path.name.removesuffix(_PROPOSAL)
            if not (path.name.endswith(_PROPOSAL) and PROPOSAL_ID_RE.fullmatch(pid)):
                continue
            if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_FILE:
                continue
            dest = self.queue / path.name
            if not dest.exists():
                atomic_write(dest, path.read_bytes())

    def _push_responses(self, pod_queue: Path) -> None:
        for response in sorted(self.queue.glob(f"*{_RESPONSE}")):
            pid = response.name.removesuffix(_RESPONSE)
            if not PROPOSAL_ID_RE.fullmatch(pid) or response.is_symlink():
                continue
            if not (pod_queue / f"{pid}{_PROPOSAL}").is_file():
                continue
            if (pod_queue / response.name).exists():
                continue
            self._write_in_pod(response.name, response.read_bytes())

    def _write_in_pod(self, name: str, data: bytes) -> None:
        part = f".{name}.part"
        with tempfile.TemporaryDirectory(prefix="bb-k8s-answer-") as tmp:
            local = Path(tmp) / part
            local.write_bytes(data)
            local.chmod(0o644)
            transfer.copy_in(self.run, local, f"{QUEUE_DIR}/{part}")
        moved = self.run(["mv", "-f", "--", f"{QUEUE_DIR}/{part}", f"{QUEUE_DIR}/{name}"], None)
        if not moved.ok:
            raise BotBottleError(
                f"could not put {name} into the bundle's queue (exit {moved.exit_code}): "
                f"{moved.stderr.decode(errors='replace').strip()[:200]}"
            )

    def sync_logs(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(prefix="bb-k8s-logs-") as tmp:
            pod_logs = Path(tmp) / "logs"
            pod_logs.mkdir()
            for rel in transfer.pull_tree(self.run, LOG_DIR, pod_logs):
                if "/" in rel or ".jsonl" not in rel:
                    continue
                data = (pod_logs / rel).read_bytes()
                dest = self.logs / rel
                have = dest.read_bytes() if dest.is_file() and not dest.is_symlink() else None
                if have is not None and data.startswith(have):
                    if len(data) > len(have):
                        with dest.open("ab") as out:
                            out.write(data[len(have) :])
                elif have != data:
                    atomic_write(dest, data, mode=0o600)

    # -- the loop --------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bb-k8s-queue", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync_once()
                self.last_error = ""
            except (BotBottleError, OSError) as e:
                # The bundle's directories may not exist yet; the teardown's
                # last pass reports what still fails.
                self.last_error = str(e)
                log.debug("queue_sync_failed", error=self.last_error)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


def keep_orphan_history(kube: Any, slug: str) -> None:
    """``cleanup`` of a bottle whose launcher died (SIGKILL): what its mirror
    had not copied yet (the last logs, proposals and their answers) out of
    the bundle pod into the bottle's history before the pod goes, and the
    history marked ended, as the teardown would have. Only for a bottle of
    this home (its history is here); a failure is a warning."""
    from bot_bottle.contracts.supervise import default_queue_dir
    from bot_bottle.history import BottleHistory
    from bot_bottle_kubernetes.backend import keep_history
    from bot_bottle_kubernetes.render import names

    history = BottleHistory.for_slug(slug)
    if not history.exists() or history.ended:
        return
    queue = default_queue_dir(slug)
    keep_history(kube, names(slug)["sidecars"], history.logs_dir, queue)
    history.end(queue)
