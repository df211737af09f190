"""Snapshots: a bottle's agent frozen by its backend's freezer, plus a record.

``~/.bot-bottle/snapshots/<name>.json`` (written atomically) holds what a
resume needs besides the image: the agent, the *effective* bottle manifest
the bottle ran with (after ``extends:``), the egress routes live at commit
time (the console may have added some to the running bottle), provider,
backend, the frozen image's ref, created_at, the parent snapshot (a bottle
resumed from one), the names -- never values -- of the credentials the
bottle binds, and the approved capability blocks (Dockerfile snippets).

Nothing secret is frozen: the freezer leaves out scratch space and the
bottle CA, never freezes the container's environment, and hands every file
the bottle added or changed to :func:`secret_scan` (the DLP pipeline's
outbound detectors plus the bottle's own secret values, ``known_secrets``):
a finding refuses the commit, naming the paths.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _random
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot_bottle.contracts.backend import DEFAULT_BACKEND
from bot_bottle.errors import BotBottleError
from bot_bottle.paths import home_dir

if TYPE_CHECKING:
    from bot_bottle.contracts.freezer import FileScan, Freezer, FrozenImage
    from bot_bottle.manifest.models import Bottle
    from bot_bottle.manifest.store import ResolvedAgent
    from bot_bottle.plan import BottlePlan
    from bot_bottle.plugins import PluginHost
    from bot_bottle.secrets import Secret
    from bot_bottle.state import StateDir

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SUFFIX = ".json"
#: In a bottle's state dir: the capability blocks the console approved.
CAPABILITIES = "capabilities.json"
#: Repository of the frozen images (the tag is ``<home id>-<name>``).
IMAGE_REPOSITORY = "bot-bottle/snapshot"
#: Repository of the derived images a resume builds with capability blocks.
CAPABILITY_REPOSITORY = "bot-bottle/snapshot-capabilities"
L_SNAPSHOT = "bot-bottle.snapshot"


class Capability(BaseModel):
    """An approved capability block: a Dockerfile snippet run on resume."""

    model_config = ConfigDict(extra="ignore")
    proposal: str | int
    dockerfile: str
    approved_at: str
    comment: str | None = None


class SnapshotRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    agent: str
    #: The effective bottle (``manifest.models.Bottle``, JSON form).
    bottle: dict[str, Any]
    #: The egress config's routes live at commit time (rendered form), when known.
    routes: list[dict[str, Any]] | None = None
    provider: str
    backend: str
    image: str
    created_at: str
    parent: str | None = None
    #: The bottle the snapshot was taken from.
    source_slug: str
    #: Names of the host variables / prompts / keys the bottle binds; no value.
    credentials: list[str] = Field(default_factory=list)
    capabilities: list[Capability] = Field(default_factory=list)
    label: str | None = None

    def frozen(self) -> FrozenImage:
        from bot_bottle.contracts.freezer import FrozenImage

        return FrozenImage(backend=self.backend, ref=self.image, created_at=self.created_at)

    def effective_bottle(self) -> Bottle:
        from bot_bottle.manifest.models import Bottle

        try:
            return Bottle.model_validate(self.bottle)
        except ValidationError as exc:
            raise BotBottleError(
                f"snapshot {self.name}: its bottle manifest is not valid any more: "
                f"{exc.errors()[0].get('msg', exc)}",
                hint="resume it with --use-current-manifest",
            ) from None


# -- the store ----------------------------------------------------------------------


def snapshots_dir(environ: Mapping[str, str] | None = None) -> Path:
    return home_dir(dict(environ) if environ is not None else None) / "snapshots"


def work_dir() -> Path:
    """Private scratch space of commits (a filtered export is written here)."""
    path = snapshots_dir() / ".work"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise BotBottleError(
            f"{name!r} is not a valid snapshot name",
            hint="lower-case letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    return name


def record_path(name: str) -> Path:
    return snapshots_dir() / f"{check_name(name)}{SUFFIX}"


def save_record(record: SnapshotRecord) -> Path:
    """Write atomically: a reader sees the old record or the new, never half."""
    path = record_path(record.name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{record.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(record.model_dump_json(indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def has_record(name: str) -> bool:
    return NAME_RE.match(name) is not None and record_path(name).is_file()


def load_record(name: str) -> SnapshotRecord:
    path = record_path(name)
    try:
        return SnapshotRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BotBottleError(
            f"no snapshot called {name!r}", hint="'bot-bottle snapshots' lists them"
        ) from None
    except (OSError, ValidationError) as exc:
        raise BotBottleError(f"cannot read snapshot record {path}: {exc}") from None


def all_records() -> list[SnapshotRecord]:
    out: list[SnapshotRecord] = []
    try:
        paths = sorted(snapshots_dir().glob(f"*{SUFFIX}"))
    except OSError:
        return []
    for path in paths:
        try:
            out.append(SnapshotRecord.model_validate_json(path.read_text(encoding="utf-8")))
        except (OSError, ValidationError):
            continue  # a broken record is shown by name in 'snapshots', not fatal here
    return out


def remove_record(name: str) -> None:
    record_path(name).unlink(missing_ok=True)


def image_tag(name: str) -> str:
    from bot_bottle.state import home_id

    return f"{IMAGE_REPOSITORY}:{home_id()[:8]}-{name}"


# -- what a commit reads from a bottle ---------------------------------------------------


def credential_names(bottle: Bottle) -> list[str]:
    """Names (never values) of what the bottle binds from outside itself."""
    from bot_bottle.manifest.env import EnvKind, env_kind

    names: set[str] = set()
    for route in bottle.egress.routes:
        if route.auth is not None:
            names.add(route.auth.token_ref)
    for name, spec in bottle.env.items():
        if env_kind(spec) is not EnvKind.LITERAL:
            names.add(name)
    for repo in bottle.repos:
        names.add(f"git-gate key of {repo.name} ({repo.key.provider})")
    return sorted(names)


def live_routes(state: StateDir) -> list[dict[str, Any]] | None:
    """The routes of the bottle's rendered egress config (what egress enforces
    now, console changes included); None when the file is gone."""
    from bot_bottle.state import LIVE_EGRESS_CONFIG, ROUTES

    live = state.run_dir / LIVE_EGRESS_CONFIG
    path = live if live.is_file() else state.path / ROUTES  # kept by preserve()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    routes = data.get("routes") if isinstance(data, dict) else None
    return routes if isinstance(routes, list) else None


def read_capabilities(state: StateDir) -> list[Capability]:
    path = state.path / CAPABILITIES
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise BotBottleError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, list):
        raise BotBottleError(f"{path} is not a JSON list of approved capability blocks")
    try:
        return [Capability.model_validate(item) for item in data]
    except ValidationError as exc:
        raise BotBottleError(f"{path}: an entry is malformed: {exc.errors()[0]['msg']}") from None


def agent_with_bottle(host: PluginHost, agent_name: str, bottle: Bottle) -> ResolvedAgent:
    """The agent as the manifest has it now (prompt, skills, git identity),
    running in ``bottle`` (the snapshot's policy)."""
    import dataclasses

    from bot_bottle.manifest.parse import options_model_of, validate_options
    from bot_bottle.manifest.store import Manifest, ResolvedBottle

    agent = Manifest.discover(host=host).agent(agent_name)
    template = bottle.agent_provider.template
    component = next((c for c in host.components("agent_providers") if c.name == template), None)
    if component is None:
        raise BotBottleError(
            f"the snapshot's agent provider {template!r} is not installed",
            hint="'bot-bottle plugins' lists the installed ones",
        )
    try:
        options = validate_options(options_model_of(component), dict(bottle.agent_provider.options))
    except ValidationError as exc:
        raise BotBottleError(
            f"the snapshot's {template} options are no longer valid: {exc.errors()[0]['msg']}",
            hint="resume with --use-current-manifest",
        ) from None
    resolved = ResolvedBottle(
        bottle=bottle, provider_options=options, key_options={}, files=agent.resolved_bottle.files
    )
    return dataclasses.replace(agent, resolved_bottle=resolved)


def planned_secrets(
    agent: ResolvedAgent, host: PluginHost, host_env: Mapping[str, str], *, backend: str
) -> list[Secret]:
    """The secret values a launch of ``agent`` would hand its sidecars, read
    again from the host (for a bottle whose sidecars are gone). A prompted
    value cannot be known: it gets a random stand-in."""
    from bot_bottle.plan import make_plan

    provider = host.create("agent_providers", agent.bottle.agent_provider.template)
    plan = make_plan(
        agent,
        provider,
        backend=backend,
        host=host,
        host_env=host_env,
        ask=lambda _n: _random.token_hex(16),
    )
    return [*plan.egress_tokens.values(), *plan.gitgate_secrets.values()]


def secret_scan(host: PluginHost, known: Sequence[Secret]) -> FileScan:
    """A :data:`~bot_bottle.contracts.freezer.FileScan` over the DLP
    pipeline's outbound detectors with ``known`` as the known secrets;
    blocking findings only (a warning does not refuse a commit)."""
    from bot_bottle.contracts.dlp import Action, Direction, Location
    from bot_bottle.dlp.pipeline import ScanPipeline

    pipeline = ScanPipeline.from_host(host, Direction.OUTBOUND)
    known = tuple(known)

    def scan(path: str, chunks: Iterable[bytes]) -> list[str]:
        stream = pipeline.stream(Location(part="file_content", name=path), known_secrets=known)
        found = []
        for chunk in chunks:
            found += stream.feed(chunk)
        found += stream.finish()
        return [f.describe() for f in found if f.action is Action.BLOCK]

    return scan


# -- commit --------------------------------------------------------------------------------


def commit_bottle(
    slug: str,
    name: str | None,
    *,
    host: PluginHost,
    host_env: Mapping[str, str] | None = None,
    progress: Callable[[str], object] = lambda _l: None,
) -> SnapshotRecord:
    """Freeze bottle ``slug`` (running, or preserved after a non-zero exit)
    into snapshot ``name`` (default: the slug)."""
    from bot_bottle import audit
    from bot_bottle.contracts.provider import GUEST_CA_PATH
    from bot_bottle.manifest.models import Bottle
    from bot_bottle.plan import check_slug
    from bot_bottle.state import StateDir, now_iso

    check_slug(slug)
    name = check_name(name or slug)
    state = StateDir.for_slug(slug)
    meta = state.metadata()
    if not meta:
        raise BotBottleError(
            f"no bottle {slug} in {state.path.parent}",
            hint="'bot-bottle list active' shows the running bottles",
        )
    if has_record(name):
        raise BotBottleError(
            f"a snapshot called {name!r} exists already",
            hint="pick another --name, or 'bot-bottle snapshots rm NAME' first",
        )
    backend = str(meta.get("backend") or DEFAULT_BACKEND)
    freezer: Freezer = host.create("freezers", backend)
    if isinstance(meta.get("bottle_manifest"), dict):
        bottle = Bottle.model_validate(meta["bottle_manifest"])
    else:
        # Started by something that did not record it: the manifest as it is now.
        from bot_bottle.manifest.store import Manifest

        bottle = Manifest.discover(host=host).agent(str(meta["agent"])).bottle
    known = freezer.bottle_secrets(slug)
    if not known:
        try:
            agent = agent_with_bottle(host, str(meta["agent"]), bottle)
            env = os.environ if host_env is None else host_env
            known = planned_secrets(agent, host, env, backend=backend)
        except BotBottleError as exc:
            progress(f"warning: the bottle's secrets cannot be read again ({exc}); "
                     "scanning with the DLP detectors only")  # fmt: skip
    progress(f"committing {slug} as snapshot {name} (scanning what changed)")
    frozen = freezer.commit(
        slug,
        ref=image_tag(name),
        scan=secret_scan(host, known),
        ca_cert_path=GUEST_CA_PATH,
        labels={L_SNAPSHOT: name},
    )
    record = SnapshotRecord(
        name=name,
        agent=str(meta["agent"]),
        bottle=bottle.model_dump(mode="json"),
        routes=live_routes(state),
        provider=str(meta.get("provider") or bottle.agent_provider.template),
        backend=backend,
        image=frozen.ref,
        created_at=now_iso(),
        parent=meta.get("snapshot") if isinstance(meta.get("snapshot"), str) else None,
        source_slug=slug,
        credentials=credential_names(bottle),
        capabilities=read_capabilities(state),
        label=meta.get("label") if isinstance(meta.get("label"), str) else None,
    )
    save_record(record)
    audit.record("snapshot-commit", bottle=slug, snapshot=name, image=frozen.ref)
    return record


# -- resume -----------------------------------------------------------------------------------


def manifest_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Lines ``key: old -> new`` for every leaf that differs."""
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += manifest_diff(a, b, path + ".")
        else:
            before, after = json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True)
            out.append(f"{path}: {before} -> {after}")
    return out


def with_live_routes(plan: BottlePlan, routes: list[dict[str, Any]] | None) -> BottlePlan:
    """Add the routes the bottle had live at commit (console approvals) that
    its manifest lacks. Only credential-free ones: a token slot belongs to
    one launch's numbering, and a credential comes from the manifest only."""
    import dataclasses

    from bot_bottle.egress.config import Route

    if not routes or plan.egress_config is None:
        return plan
    have = {r.host for r in plan.egress_config.routes}
    extra = []
    for raw in routes:
        try:
            route = Route.model_validate(raw)
        except ValidationError:
            continue
        if route.host not in have and route.auth is None:
            extra.append(route)
            have.add(route.host)
    if not extra:
        return plan
    config = plan.egress_config.model_copy(update={"routes": (*plan.egress_config.routes, *extra)})
    return dataclasses.replace(plan, egress_config=config)


def capability_dockerfile(capabilities: Sequence[Capability], user: str) -> str:
    """FROM the snapshot image, the approved snippets as root, then back to
    the image's user."""
    # Not a frozen image itself (cleanup's dangling list is of those); it
    # keeps the snapshot's name label, so removing the snapshot finds it.
    lines = [
        "ARG BASE_IMAGE",
        "FROM ${BASE_IMAGE}",
        'LABEL "bot-bottle.frozen"="derived"',
        "USER root",
    ]
    for cap in capabilities:
        lines.append(f"# capability block {cap.proposal} (approved {cap.approved_at})")
        lines.append(cap.dockerfile.strip())
    if user:
        lines.append(f"USER {user}")
    return "\n".join(lines) + "\n"


def resume_image(
    record: SnapshotRecord,
    *,
    host: PluginHost,
    extra_ca: Path | None,
    progress: Callable[[str], None],
) -> str:
    """The image a resume boots: the snapshot's, or one derived from it with
    the approved capability blocks (content-tagged, built once, cached) by
    the freezer of the snapshot's backend."""
    if not record.capabilities:
        return record.image
    freezer: Freezer = host.create("freezers", record.backend)
    caps = record.capabilities
    return freezer.derive(
        # By tag (the builder resolves FROM by name); the fingerprint is of
        # the image id behind it.
        image_tag(record.name),
        lambda user: capability_dockerfile(caps, user),
        repository=CAPABILITY_REPOSITORY,
        extra_ca=extra_ca,
        progress=progress,
    )
