"""A bottle's objects on the cluster: create under one anchor, renew a Lease, tear down.

The anchor is created first; every other object gets an ``ownerReference``
to it before it is created, so deleting the anchor with a cascading
``propagationPolicy`` removes the whole bottle, and nothing can exist
without an owner for long (the garbage collector takes it). A Lease the
launcher renews tells a live bottle from one whose launcher died: an
expired Lease marks an orphan, found and removed from labels alone, also
after the launcher was SIGKILLed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bot_bottle.contracts.backend import ActiveBottle, CleanupItem
from bot_bottle_kubernetes.cluster import ApiFailure, Kube, KubeError

log = logging.getLogger(__name__)

BACKEND = "kubernetes"
#: Every object of a bottle carries these two labels; ``cleanup`` needs no more.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "bot-bottle"
LABEL_SLUG = "bot-bottle/slug"
#: Marks the anchor (the owner of everything else) and the Lease.
LABEL_ROLE = "bot-bottle/role"
OURS = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

#: The kinds a bottle creates, swept by label at teardown and cleanup so an
#: object whose owner reference never got set is not left behind either.
SWEPT_KINDS = ("Pod", "NetworkPolicy", "Secret", "ConfigMap", "Service", "Lease")

LEASE_SECONDS = 60
#: An expired Lease is an orphan only after this much more: a launcher
#: stalled by a slow API call is not reaped mid-launch.
ORPHAN_GRACE = timedelta(seconds=30)


def micro_time(when: datetime) -> str:
    """Kubernetes ``MicroTime`` (RFC 3339 with microseconds, UTC)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def holder_identity() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def lease_expired(lease: Mapping[str, Any], now: datetime) -> bool:
    spec = lease.get("spec") or {}
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    if renewed is None:
        return True
    duration = timedelta(seconds=int(spec.get("leaseDurationSeconds") or LEASE_SECONDS))
    return now > renewed + duration + ORPHAN_GRACE


def owner_reference(anchor: Mapping[str, Any]) -> dict[str, Any]:
    meta = anchor["metadata"]
    return {
        "apiVersion": anchor["apiVersion"],
        "kind": anchor["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def slug_of(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_SLUG)


# -- selectors -----------------------------------------------------------------


def selector_selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a ``LabelSelector`` matches ``labels`` (empty selects all)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return True  # an operator we do not know: assume it selects (refuse)
    return True


# -- launch and teardown -------------------------------------------------------


class BottleObjects:
    """Creates a bottle's objects, anchor first; removes them on :meth:`teardown`."""

    def __init__(self, kube: Kube, slug: str) -> None:
        self.kube = kube
        self.slug = slug
        self.anchor: dict[str, Any] | None = None
        self.created: list[dict[str, Any]] = []
        self._renewer: LeaseRenewer | None = None

    def create_anchor(self, anchor: Mapping[str, Any]) -> dict[str, Any]:
        self._check(anchor)
        self.anchor = self.kube.create(anchor)
        self.created.append(self.anchor)
        return self.anchor

    def create_owned(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj`` owned by the anchor (its reference replaces the
        render's placeholder, whose uid was not known yet)."""
        if self.anchor is None:
            raise KubeError("the anchor must exist before anything it owns")
        self._check(obj)
        owned = _with_owner(obj, owner_reference(self.anchor))
        if owned["kind"] == "Lease":
            owned = _acquired(owned)
        made = self.kube.create(owned)
        self.created.append(made)
        return made

    def create(
        self,
        objects: Sequence[Mapping[str, Any]],
        *,
        progress: Callable[[str], None] = lambda _m: None,
    ) -> list[dict[str, Any]]:
        """Create ``objects`` in order; the first is the anchor, the rest get
        its owner reference. NetworkPolicies go before any Pod so no pod of
        the bottle ever runs unfenced. On any failure, what exists is removed."""
        if not objects:
            raise KubeError("nothing to create")
        rest = sorted(objects[1:], key=lambda o: 1 if o["kind"] == "Pod" else 0)
        try:
            self.create_anchor(objects[0])
            for obj in rest:
                progress(f"create {obj['kind']}/{obj['metadata']['name']}")
                self.create_owned(obj)
        except BaseException:
            self.teardown()
            raise
        return self.created

    def _check(self, obj: Mapping[str, Any]) -> None:
        if slug_of(obj) != self.slug:
            raise KubeError(
                f"refusing to create {obj['kind']}/{obj['metadata']['name']}: "
                f"it does not carry the label {LABEL_SLUG}={self.slug}"
            )

    def start_renewing(self, interval: float | None = None) -> None:
        lease = next((o for o in self.created if o["kind"] == "Lease"), None)
        if lease is None:
            return
        self._renewer = LeaseRenewer(self.kube, str(lease["metadata"]["name"]), interval)
        self._renewer.start()

    def teardown(self) -> list[str]:
        """Delete the anchor (cascading), then sweep by label; return failures."""
        if self._renewer is not None:
            self._renewer.stop()
            self._renewer = None
        return remove_bottle(self.kube, self.slug, self.anchor)


def _with_owner(obj: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, Any]:
    owned = dict(obj)
    meta = dict(owned["metadata"])
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("name") != ref["name"]]
    meta["ownerReferences"] = [*refs, dict(ref)]
    owned["metadata"] = meta
    return owned


def _acquired(lease: Mapping[str, Any]) -> dict[str, Any]:
    now = micro_time(datetime.now(UTC))
    spec = dict(lease.get("spec") or {})
    spec.setdefault("leaseDurationSeconds", LEASE_SECONDS)
    spec["holderIdentity"] = holder_identity()
    spec["acquireTime"] = now
    spec["renewTime"] = now
    return {**lease, "spec": spec}


def remove_bottle(kube: Kube, slug: str, anchor: Mapping[str, Any] | None) -> list[str]:
    """Delete a bottle: the anchor with Foreground cascade, then anything
    still labelled with its slug. Returns what could not be removed."""
    failures: list[str] = []
    anchors = [anchor] if anchor is not None else []
    if not anchors:
        anchors = [
            o
            for kind in ("ConfigMap",)
            for o in kube.list(kind, f"{OURS},{LABEL_SLUG}={slug},{LABEL_ROLE}=anchor")
        ]
    for a in anchors:
        try:
            kube.delete(str(a["kind"]), str(a["metadata"]["name"]), propagation="Foreground")
        except KubeError as e:
            failures.append(f"{a['kind']}/{a['metadata']['name']}: {e}")
            log.warning("teardown of %s failed: %s", a["metadata"]["name"], e)
    for kind in SWEPT_KINDS:
        try:
            leftovers = kube.list(kind, f"{OURS},{LABEL_SLUG}={slug}")
        except KubeError as e:
            failures.append(f"list {kind}: {e}")
            log.warning("teardown sweep of %s failed: %s", kind, e)
            continue
        for obj in leftovers:
            try:
                kube.delete(kind, str(obj["metadata"]["name"]), propagation="Background")
            except KubeError as e:
                failures.append(f"{kind}/{obj['metadata']['name']}: {e}")
                log.warning("teardown of %s/%s failed: %s", kind, obj["metadata"]["name"], e)
    return failures


class LeaseRenewer(threading.Thread):
    """Renews the bottle's Lease every third of its duration until stopped."""

    def __init__(self, kube: Kube, name: str, interval: float | None = None) -> None:
        super().__init__(name=f"lease-{name}", daemon=True)
        self.kube = kube
        self.lease_name = name
        self.interval = interval or LEASE_SECONDS / 3
        self._stop = threading.Event()
        self.renewals = 0
        self.last_error: str | None = None

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                renew_lease(self.kube, self.lease_name)
                self.renewals += 1
                self.last_error = None
            except KubeError as e:
                # Keep trying: a missed renewal only makes the bottle look
                # orphaned after the grace, and the next one fixes it.
                self.last_error = str(e)
                log.warning("lease %s not renewed: %s", self.lease_name, e)

    def stop(self) -> None:
        self._stop.set()
        if self.is_alive():
            self.join(timeout=5)


def renew_lease(kube: Kube, name: str, attempts: int = 3) -> dict[str, Any]:
    """Read-modify-write with the resourceVersion; a conflict re-reads."""
    for _ in range(attempts):
        lease = kube.get("Lease", name)
        if lease is None:
            raise KubeError(f"lease {name} is gone (the bottle was removed)")
        lease["spec"] = {**(lease.get("spec") or {}), "renewTime": micro_time(datetime.now(UTC))}
        try:
            return kube.replace(lease)
        except ApiFailure as e:
            if e.status != 409:
                raise
    raise KubeError(f"lease {name}: kept conflicting after {attempts} attempts")


# -- enumeration ---------------------------------------------------------------


def bottles(kube: Kube) -> dict[str, dict[str, Any]]:
    """slug -> {"anchor": obj | None, "lease": obj | None} from labels alone."""
    found: dict[str, dict[str, Any]] = {}
    for anchor in kube.list("ConfigMap", f"{OURS},{LABEL_ROLE}=anchor"):
        if slug := slug_of(anchor):
            found.setdefault(slug, {"anchor": None, "lease": None})["anchor"] = anchor
    for lease in kube.list("Lease", OURS):
        if slug := slug_of(lease):
            found.setdefault(slug, {"anchor": None, "lease": None})["lease"] = lease
    return found


def active(kube: Kube, now: datetime | None = None) -> list[ActiveBottle]:
    now = now or datetime.now(UTC)
    out = []
    for slug, parts in sorted(bottles(kube).items()):
        lease, anchor = parts["lease"], parts["anchor"]
        if anchor is None or lease is None or lease_expired(lease, now):
            continue
        notes = anchor["metadata"].get("annotations") or {}
        out.append(
            ActiveBottle(
                backend=BACKEND,
                slug=slug,
                agent=str(notes.get("bot-bottle/agent", "")),
                label=notes.get("bot-bottle/label") or None,
                started_at=str(
                    notes.get("bot-bottle/started")
                    or anchor["metadata"].get("creationTimestamp", "")
                ),
                services=tuple(
                    s for s in str(notes.get("bot-bottle/services", "")).split(",") if s
                ),
            )
        )
    return out


def orphans(kube: Kube, now: datetime | None = None) -> list[CleanupItem]:
    """Bottles whose Lease expired (or is missing past the grace): their launcher is gone."""
    now = now or datetime.now(UTC)
    items = []
    for slug, parts in sorted(bottles(kube).items()):
        lease, anchor = parts["lease"], parts["anchor"]
        if lease is not None and not lease_expired(lease, now):
            continue
        if lease is None and anchor is not None:
            born = parse_time(anchor["metadata"].get("creationTimestamp"))
            if born is not None and now < born + timedelta(seconds=LEASE_SECONDS) + ORPHAN_GRACE:
                continue  # a launch in progress has not created its Lease yet
        obj = anchor or lease
        assert obj is not None
        items.append(
            CleanupItem(
                backend=BACKEND,
                kind="bottle",
                name=str(obj["metadata"]["name"]),
                slug=slug,
                extra={"namespace": kube.namespace, "kind": str(obj["kind"])},
            )
        )
    return items


def cleanup(kube: Kube, items: Sequence[CleanupItem]) -> list[CleanupItem]:
    removed = []
    for item in items:
        if item.backend != BACKEND or item.slug is None:
            continue
        anchor = kube.get("ConfigMap", item.name) if item.extra.get("kind") == "ConfigMap" else None
        if not remove_bottle(kube, item.slug, anchor):
            removed.append(item)
    return removed
