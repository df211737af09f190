"""The plugin host: finds, loads and queries bot-bottle plugins.

Plugins come from two places and are treated the same way afterwards:

* entry points in group ``bot_bottle`` of installed distributions (built-ins
  included: they are distributions like any third-party plugin);
* drop-in directories ``~/.bot-bottle/contrib/<name>/`` holding ``plugin.py``
  (imported as ``bot_bottle_contrib.<name>.plugin``, so it can import its
  siblings relatively).

Loading is tolerant: a plugin that fails to import or register, or whose hook
raises, is recorded with its error and left out; the CLI keeps working, and
says so: one ``warning:`` line on stderr per failed plugin, once per process.
``BOT_BOTTLE_STRICT_PLUGINS=1`` turns such failures into errors (debugging).
Where a loss would weaken a security check (a DLP detector), the caller
asks :meth:`PluginHost.require_family` and refuses to go on instead.

Selection, applied before anything is imported:

* ``BOT_BOTTLE_PLUGINS=a,b``: load only these (plugin or distribution names);
  set but empty loads none.
* ``BOT_BOTTLE_DISABLED_PLUGINS=c,d``: never load these.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TypeVar, cast

import pluggy

from bot_bottle import PROJECT_NAME, hookspecs
from bot_bottle.errors import PluginConflictError, PluginError, UnknownPluginError
from bot_bottle.hookspecs import FAMILIES, Registration
from bot_bottle.log import get_logger
from bot_bottle.paths import contrib_dir

ENTRY_POINT_GROUP = PROJECT_NAME
ENV_ALLOW = "BOT_BOTTLE_PLUGINS"
ENV_BLOCK = "BOT_BOTTLE_DISABLED_PLUGINS"
ENV_STRICT = "BOT_BOTTLE_STRICT_PLUGINS"
CONTRIB_PACKAGE = "bot_bottle_contrib"
CONTRIB_ENTRY_MODULE = "plugin.py"
_HOOK_PREFIX = "bot_bottle_"
_CONTRIB_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")

T = TypeVar("T")
log = None  # bound lazily; structlog is not needed unless something is logged
#: (plugin, error) pairs already warned about in this process.
_WARNED: set[tuple[str, str]] = set()


def _log() -> Any:
    global log
    if log is None:
        log = get_logger("bot_bottle.plugins")
    return log


class Status(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    FAILED = "failed"


class Source(StrEnum):
    ENTRY_POINT = "entry point"
    CONTRIB = "contrib"
    REGISTERED = "registered"  # registered in-process (tests, embedding)


@dataclass
class PluginInfo:
    """What ``plugins list`` shows for one plugin."""

    name: str
    source: Source
    entry_point: str
    distribution: str | None = None
    version: str | None = None
    status: Status = Status.ACTIVE
    hooks: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "source": self.source.value,
            "entry_point": self.entry_point,
            "status": self.status.value,
            "hooks": list(self.hooks),
            "components": {k: list(v) for k, v in self.components.items()},
            "error": self.error,
        }


@dataclass(frozen=True)
class Component:
    """A registration together with the plugin that offered it."""

    family: str
    name: str
    description: str
    plugin: str
    distribution: str | None
    factory: Callable[[], Any]

    def create(self) -> Any:
        try:
            return self.factory()
        except Exception as exc:
            raise PluginError(
                f"{self.family[:-1].replace('_', ' ')} {self.name!r} from plugin "
                f"{self.plugin!r} failed to start: {_describe(exc)}",
                hint="run 'bot-bottle plugins list' and reinstall or disable that plugin "
                f"({ENV_BLOCK}={self.plugin})",
            ) from exc


def _suggest(hook: str) -> str:
    close = difflib.get_close_matches(hook, FAMILIES.values(), n=1)
    return f"{hook!r} (did you mean {close[0]!r}?)" if close else repr(hook)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _split_env(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class PluginHost:
    """Owns a pluggy ``PluginManager`` and the record of every plugin it saw."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        contrib: Path | None = None,
        load_entry_points: bool = True,
    ) -> None:
        env = os.environ if environ is None else environ
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._allow = _split_env(env.get(ENV_ALLOW))
        self._block = _split_env(env.get(ENV_BLOCK)) or set()
        self._strict = env.get(ENV_STRICT, "").lower() in ("1", "true", "yes")
        self._contrib = contrib if contrib is not None else contrib_dir(dict(env))
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._collected: dict[str, tuple[dict[str, Component], dict[str, list[Component]]]] = {}

    # -- loading -----------------------------------------------------------

    def load(self) -> PluginHost:
        """Discover and register every selected plugin. Idempotent."""
        if self._loaded:
            return self
        self._loaded = True
        if self._load_entry_points:
            eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
            for ep in eps:
                self._load_entry_point(ep)
        self._load_contrib()
        return self

    def _selected(self, *names: str | None) -> bool:
        wanted = {n for n in names if n}
        if wanted & self._block:
            return False
        return self._allow is None or bool(wanted & self._allow)

    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = ep.dist
        info = PluginInfo(
            name=ep.name,
            source=Source.ENTRY_POINT,
            entry_point=ep.value,
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
        )
        if ep.name in self.infos:
            info.status = Status.FAILED
            other = self.infos[ep.name]
            info.error = (
                f"plugin name {ep.name!r} is also used by {other.distribution or other.entry_point}"
            )
            self.infos[f"{ep.name} ({info.distribution})"] = info
            self._fail(info, None)
            return
        self.infos[ep.name] = info
        if not self._selected(ep.name, info.distribution):
            info.status = Status.DISABLED
            return
        try:
            obj = ep.load()
        except BaseException as exc:
            self._import_failed(info, exc)
            return
        self._register(info, obj)

    def _load_contrib(self) -> None:
        root = self._contrib
        if not root.is_dir():
            return
        for path in sorted(root.iterdir()):
            if not path.is_dir() or path.name.startswith((".", "_")):
                continue
            name = path.name
            info = PluginInfo(
                name=name,
                source=Source.CONTRIB,
                entry_point=str(path / CONTRIB_ENTRY_MODULE),
            )
            if name in self.infos:
                info.status = Status.FAILED
                info.error = f"plugin name {name!r} is already used by an installed plugin"
                self.infos[f"{name} (contrib)"] = info
                self._fail(info, None)
                continue
            self.infos[name] = info
            if not self._selected(name):
                info.status = Status.DISABLED
                continue
            if not _CONTRIB_NAME_RE.fullmatch(name):
                info.status = Status.FAILED
                info.error = "directory name must start with a letter and hold only [A-Za-z0-9_-]"
                self._fail(info, None)
                continue
            if not (path / CONTRIB_ENTRY_MODULE).is_file():
                info.status = Status.FAILED
                info.error = f"no {CONTRIB_ENTRY_MODULE} in {path}"
                self._fail(info, None)
                continue
            try:
                module = _import_contrib(path)
            except BaseException as exc:
                self._import_failed(info, exc)
                continue
            self._register(info, module)

    def register(self, obj: object, name: str) -> PluginInfo:
        """Register an in-process plugin object (tests, embedding)."""
        info = PluginInfo(name=name, source=Source.REGISTERED, entry_point=repr(obj))
        self.infos[name] = info
        self._loaded = True
        self._register(info, obj)
        self._collected.clear()
        return info

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)
        self._collected.clear()

    def _register(self, info: PluginInfo, obj: object) -> None:
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:
            info.status = Status.FAILED
            info.error = f"registration failed: {_describe(exc)}"
            self._fail(info, exc)
            return
        callers = self.pm.get_hookcallers(obj) or []
        unknown = sorted(c.name for c in callers if c.spec is None)
        if unknown:
            # pluggy accepts hookimpls without a spec (they may be for another
            # project version); for us that is a typo that would silently
            # do nothing, so say so.
            self.pm.unregister(obj)
            info.status = Status.FAILED
            info.error = "registration failed: unknown hook " + ", ".join(
                _suggest(name) for name in unknown
            )
            self._fail(info, None)
            return
        info.hooks = sorted(c.name.removeprefix(_HOOK_PREFIX) for c in callers)

    def _import_failed(self, info: PluginInfo, exc: BaseException) -> None:
        # A plugin's import may fail any way at all (SystemExit too); only
        # the operator's Ctrl-C goes on up.
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        info.status = Status.FAILED
        info.error = f"import failed: {_describe(exc)}"
        self._fail(info, exc)

    def _fail(self, info: PluginInfo, exc: BaseException | None) -> None:
        _log().debug(
            "plugin failed", plugin=info.name, distribution=info.distribution, error=info.error
        )
        if self._strict:
            raise PluginError(f"plugin {info.name!r}: {info.error}") from exc
        _warn_failed(info)

    # -- querying ------------------------------------------------------------

    def _collect(self, family: str) -> tuple[dict[str, Component], dict[str, list[Component]]]:
        if family in self._collected:
            return self._collected[family]
        self.load()
        hook = getattr(self.pm.hook, FAMILIES[family])
        by_name: dict[str, list[Component]] = {}
        # Call each implementation on its own: one plugin raising must not
        # hide the components of the others.
        for impl in hook.get_hookimpls():
            info = self.infos.get(impl.plugin_name)
            try:
                records = impl.function()
                records = list(cast(Iterable[Registration[Any]], records or []))
                for rec in records:
                    if not isinstance(rec, Registration) or not rec.name:
                        raise TypeError(f"expected Registration records, got {rec!r}")
            except Exception as exc:
                if info is not None:
                    info.status = Status.FAILED
                    info.error = f"{FAMILIES[family]} raised: {_describe(exc)}"
                    self._fail(info, exc)
                continue
            for rec in records:
                comp = Component(
                    family=family,
                    name=rec.name,
                    description=rec.description,
                    plugin=impl.plugin_name,
                    distribution=info.distribution if info else None,
                    factory=rec.factory,
                )
                by_name.setdefault(rec.name, []).append(comp)
                if info is not None:
                    info.components.setdefault(family, []).append(rec.name)
        unique = {n: c[0] for n, c in sorted(by_name.items()) if len(c) == 1}
        conflicts = {n: c for n, c in sorted(by_name.items()) if len(c) > 1}
        self._collected[family] = (unique, conflicts)
        return unique, conflicts

    def components(self, family: str) -> list[Component]:
        """Every component of ``family`` that exactly one plugin offers, by name."""
        return list(self._collect(family)[0].values())

    def conflicts(self, family: str) -> dict[str, list[Component]]:
        return self._collect(family)[1]

    def component(self, family: str, name: str) -> Component:
        """The component called ``name``; errors list what is installed."""
        unique, conflicts = self._collect(family)
        if name in conflicts:
            who = " and ".join(
                f"{c.plugin} ({c.distribution or 'contrib'})" for c in conflicts[name]
            )
            raise PluginConflictError(
                f"{name!r} is registered by more than one plugin: {who}",
                hint=f"uninstall one of them or disable it with {ENV_BLOCK}",
            )
        if name not in unique:
            known = ", ".join(sorted(unique)) or "none"
            label = family.replace("_", " ")
            raise UnknownPluginError(
                f"no {label[:-1]} named {name!r} is installed (installed {label}: {known})",
                hint="see 'bot-bottle plugins list'; install the plugin that provides it",
            )
        return unique[name]

    def create(self, family: str, name: str) -> Any:
        """Build the component called ``name`` (runs its factory)."""
        return self.component(family, name).create()

    def collect_all(self) -> None:
        """Query every family once so that every plugin's components and
        hook failures are recorded in ``infos``."""
        for family in FAMILIES:
            self._collect(family)

    def failed(self) -> list[PluginInfo]:
        return [i for i in self.infos.values() if i.status is Status.FAILED]

    def require_family(self, family: str) -> None:
        """Refuse to use ``family``'s default set when it is not whole: a name
        two plugins register (both would be left out) or a plugin whose
        ``family`` hook failed (its components are missing). For families
        whose loss weakens a check (DLP detectors): an error, never a
        silently smaller set."""
        _, conflicts = self._collect(family)
        label = family.replace("_", " ")[:-1]
        for name, comps in conflicts.items():
            who = " and ".join(f"{c.plugin} ({c.distribution or 'contrib'})" for c in comps)
            raise PluginConflictError(
                f"{label} {name!r} is registered by more than one plugin: {who}; neither would run",
                hint=f"uninstall one of them or disable it with {ENV_BLOCK}",
            )
        # A plugin whose family hook raised is known to hold components of
        # this family. One that failed to import may or may not: that is the
        # warning every command prints (refusing every scan because some
        # unrelated plugin is broken would make the warning useless).
        hook = FAMILIES[family]
        broken = [i for i in self.failed() if i.error and hook in i.error]
        if broken:
            info = broken[0]
            raise PluginError(
                f"plugin {info.name!r} ({info.distribution or 'contrib'}) failed, so its "
                f"{label}s are missing: {info.error}",
                hint=f"fix or reinstall it, or disable it with {ENV_BLOCK}={info.name}",
            )


def _warn_failed(info: PluginInfo) -> None:
    """One stderr line per failed plugin per process (as conda warns)."""
    key = (info.name, info.error or "")
    if key in _WARNED:
        return
    _WARNED.add(key)
    from bot_bottle.termtext import visible

    where = info.distribution or "contrib"
    print(  # noqa: T201 -- a user-facing warning, not a debug print
        f"warning: plugin '{visible(info.name)}' ({visible(where)}) failed and is left out: "
        f"{visible(info.error or 'unknown error')}",
        file=sys.stderr,
    )


def _import_contrib(path: Path) -> types.ModuleType:
    """Import ``<path>/plugin.py`` as ``bot_bottle_contrib.<name>.plugin``."""
    parent = sys.modules.get(CONTRIB_PACKAGE)
    if parent is None:
        parent = types.ModuleType(CONTRIB_PACKAGE)
        parent.__path__ = []
        sys.modules[CONTRIB_PACKAGE] = parent
    pkg_name = f"{CONTRIB_PACKAGE}.{path.name.replace('-', '_')}"
    init = path / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            pkg_name, init, submodule_search_locations=[str(path)]
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {init}")
        package = importlib.util.module_from_spec(spec)
        sys.modules[pkg_name] = package
        spec.loader.exec_module(package)
    else:
        # A folder without __init__.py is still imported as a package so that
        # plugin.py can import its siblings relatively.
        package = types.ModuleType(pkg_name)
        package.__path__ = [str(path)]
        package.__spec__ = importlib.machinery.ModuleSpec(pkg_name, None, is_package=True)
        package.__spec__.submodule_search_locations = [str(path)]
        sys.modules[pkg_name] = package
    try:
        return importlib.import_module(f"{pkg_name}.plugin")
    except BaseException:
        sys.modules.pop(pkg_name, None)
        sys.modules.pop(f"{pkg_name}.plugin", None)
        raise
