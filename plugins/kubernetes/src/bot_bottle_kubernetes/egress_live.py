"""Live egress route changes for a cluster bottle, over ``pods/exec`` into the bundle pod.

On Docker the egress config is a file in a host directory the bundle
mounts; core rewrites it, SIGHUPs the bundle and reads the daemon's table
back (:class:`bot_bottle.contracts.backend.EgressControl`). A pod has no host
directory, and a ConfigMap volume picks an update up only after the
kubelet's sync period (a minute or more), too slow for an operator waiting
on an approval. So:

* the bundle pod's egress daemon reads its config from :data:`LIVE_DIR`, an
  emptyDir (root's, 0755) that the ``egress-config`` init container seeds
  from the etc ConfigMap (:func:`live_init_plan`, :func:`seed_container`);
  the ConfigMap stays the launch's record, the emptyDir is what changes;
* :class:`KubeEgressControl` reads that file with ``cat``, writes a new one
  with the same tar-over-exec copy the launcher uses (a temporary name in the
  same directory, then ``mv``: the daemon reads all of it or the old file),
  SIGHUPs the bundle's init (PID 1, which forwards it to egress), reads the
  daemon's ``/routes`` with the same request the Docker backend makes, and
  reads egress's log records from the file init keeps in the pod.

Core's :mod:`bot_bottle.supervision.live_egress` does the rest exactly as for
Docker: validation, the audit record, the read-back, the old file put back
when the daemon refuses the new one. No credential travels: a live route
carries none.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bot_bottle_sidecars.layout import EGRESS_CONFIG, ETC, LOG_DIR, PY

from bot_bottle.contracts.backend import EgressControl
from bot_bottle.errors import BotBottleError
from bot_bottle.plan import PROXY_PORT
from bot_bottle.termtext import visible
from bot_bottle_kubernetes import transfer

#: The bundle pod's writable egress directory (an emptyDir), and the file in it.
LIVE_DIR = "/var/lib/bot-bottle/egress"
LIVE_CONFIG = f"{LIVE_DIR}/egress.json"
#: The egress daemon's log as init keeps it in the pod (``logsink``).
EGRESS_LOG = f"{LOG_DIR}/egress.jsonl"
#: The tail of the log read for events: recent reloads and refusals.
EVENTS_BYTES = 256 * 1024
#: A rendered config is a few KiB; a table this large is an error, not a read.
MAX_CONFIG = 4 * 2**20

#: The introspection request the Docker backend makes (no proxy: egress is
#: on the bundle's loopback, its introspection name pinned there).
FETCH = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(sys.argv[1], timeout=5) as r:
    sys.stdout.write(r.read(1048576).decode())
"""


def live_init_plan(text: str) -> str:
    """The init plan with egress reading :data:`LIVE_CONFIG` instead of the
    ConfigMap's read-only copy."""
    plan = json.loads(text)
    for daemon in plan.get("daemons", []):
        argv = daemon.get("argv") or []
        if daemon.get("name") == "egress" and "--config" in argv:
            i = argv.index("--config")
            if argv[i + 1 : i + 2] == [EGRESS_CONFIG]:
                argv[i + 1] = LIVE_CONFIG
    return json.dumps(plan, indent=2)


def seed_container(image: str, pull_policy: str) -> dict[str, Any]:
    """The init container copying the launch's egress config into the
    writable directory: root's and 0755, the file 0644, so the egress daemon
    reads it and only root (init, an operator's exec) writes it (an emptyDir
    starts world-writable)."""
    seed = f"{ETC}/{EGRESS_CONFIG.removeprefix(ETC + '/')}"
    steps = [
        f"cp {seed} {LIVE_CONFIG}",
        f"chmod 0644 {LIVE_CONFIG}",
        f"chmod 0755 {LIVE_DIR}",
    ]
    return {
        "name": "egress-config",
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["sh", "-euc", " && ".join(steps)],
        "volumeMounts": [
            {"name": "etc", "mountPath": ETC, "readOnly": True},
            {"name": "egress-live", "mountPath": LIVE_DIR},
        ],
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            # Root owns the emptyDir and the copy: no capability needed.
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _tail(result: Any) -> str:
    text = result.stderr.decode("utf-8", "replace").strip()
    return visible(text.splitlines()[-1][:300]) if text else f"exit {result.exit_code}"


class KubeEgressControl(EgressControl):
    """The egress daemon of bottle ``slug``, reached through ``run`` (plain
    execs as root in the bundle pod's container)."""

    def __init__(self, slug: str, run: transfer.Exec) -> None:
        self.slug = slug
        self.run = run

    def _failed(self, what: str, result: Any) -> BotBottleError:
        return BotBottleError(
            f"cannot {what} of bottle {self.slug} in its bundle pod: {_tail(result)}",
            hint="is the bottle still running? 'bot-bottle list active'",
        )

    def read_config(self) -> bytes:
        result = self.run(["head", "-c", str(MAX_CONFIG + 1), "--", LIVE_CONFIG], None)
        if not result.ok:
            raise self._failed("read the egress config", result)
        if len(result.stdout) > MAX_CONFIG:
            raise BotBottleError(f"bottle {self.slug}'s egress config is over {MAX_CONFIG} bytes")
        return result.stdout

    def write_config(self, data: bytes) -> None:
        part = posixpath.join(LIVE_DIR, ".egress.json.part")
        with tempfile.TemporaryDirectory(prefix="bb-k8s-egress-") as tmp:
            local = Path(tmp) / posixpath.basename(part)
            local.write_bytes(data)
            # The daemon's user reads it; tar -x as root keeps the mode.
            local.chmod(0o644)
            transfer.copy_in(self.run, local, part)
        moved = self.run(["mv", "-f", "--", part, LIVE_CONFIG], None)
        if not moved.ok:
            raise self._failed("replace the egress config", moved)

    def signal_reload(self) -> None:
        # PID 1 of the container is the bundle's init; it forwards SIGHUP to
        # egress (Docker's `kill` reaches the same process).
        result = self.run(["sh", "-c", "kill -HUP 1"], None)
        if not result.ok:
            raise self._failed("signal the sidecars", result)

    def live_routes(self) -> dict[str, Any]:
        from bot_bottle.egress.config import EgressConfig

        host = EgressConfig.parse(self.read_config()).introspection_host
        result = self.run([PY, "-c", FETCH, f"http://{host}:{PROXY_PORT}/routes"], None)
        if not result.ok:
            raise BotBottleError(
                f"cannot read the live egress table of bottle {self.slug}: {_tail(result)}",
                hint="the egress daemon may be restarting; try again in a few seconds",
            )
        try:
            data = json.loads(result.stdout or b"{}")
        except ValueError:
            raise BotBottleError(
                f"the egress daemon of bottle {self.slug} answered /routes with no JSON"
            ) from None
        return data if isinstance(data, dict) else {}

    def events(self, since: float | None = None) -> list[dict[str, Any]]:
        result = self.run(["tail", "-c", str(EVENTS_BYTES), "--", EGRESS_LOG], None)
        if not result.ok:
            raise self._failed("read the egress log", result)
        lines = result.stdout.decode("utf-8", "replace").splitlines()
        if len(result.stdout) >= EVENTS_BYTES and lines:
            lines = lines[1:]  # the first line may be cut
        return _records(lines, since)


def _records(lines: Sequence[str], since: float | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if since is not None:
            when = _when(record)
            # ts has second resolution: keep the whole second ``since`` falls in.
            if when is None or when < int(since):
                continue
        out.append(record)
    return out


def _when(record: dict[str, Any]) -> float | None:
    """Unix time of a kept record: init's ``timestamp``, else the daemon's ``ts``."""
    for key in ("timestamp", "ts"):
        value = record.get(key)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def control_for(backend: Any, slug: str) -> KubeEgressControl | None:
    """The control of ``slug`` when it runs on the backend's cluster (a live
    Lease), else None (core then asks the other backends)."""
    from bot_bottle_kubernetes.backend import bundle_exec
    from bot_bottle_kubernetes.cluster import KubeError
    from bot_bottle_kubernetes.lifecycle import active
    from bot_bottle_kubernetes.render import names

    try:
        kube = backend._kube_or_none()
        if kube is None or slug not in {b.slug for b in active(kube)}:
            return None
    except KubeError:
        return None
    return KubeEgressControl(slug, bundle_exec(kube, names(slug)["sidecars"]))
