"""Turning a :class:`Document` into validated models, with located errors.

Two checks, kept apart so the models never import plugins:

1. :func:`parse_bottle` / :func:`parse_agent`: the pydantic models of
   :mod:`bot_bottle.manifest.models`.
2. :func:`check_plugins`: the plugin-owned parts of a bottle against the
   installed plugins — ``agent_provider.template`` and its options (the
   provider's ``options_model``), each repo ``key.provider`` and its options
   (``static`` is core's), and DLP detector names. It reads the raw
   frontmatter, so it runs even when step 1 found problems.

:func:`parse_bottle_checked` runs both and raises one :class:`ManifestError`
listing every problem of the file, each with its line, top to bottom.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from bot_bottle.manifest.document import Document
from bot_bottle.manifest.errors import ManifestError, Problem
from bot_bottle.manifest.models import AgentFile, BottleFile, StaticKeyOptions

if TYPE_CHECKING:
    from bot_bottle.plugins import PluginHost

STATIC_KEY = "static"


def problems_from(
    exc: ValidationError,
    doc: Document,
    prefix: Sequence[str | int] = (),
    known: Sequence[str] = (),
) -> list[Problem]:
    """Locate each pydantic error in ``doc``; ``prefix`` is where the
    validated data sits in the frontmatter (for plugin option blocks), and
    ``known`` the keys a plugin model accepts there (for "did you mean")."""
    errors = exc.errors(include_url=False, include_input=False)
    problems = _problems(errors, doc, prefix, known)
    # pydantic reports in field order; people read a file top to bottom.
    return sorted(problems, key=lambda p: p.line)


def _problems(
    errors: Sequence[Any], doc: Document, prefix: Sequence[Any], known: Sequence[str] = ()
) -> list[Problem]:
    problems: list[Problem] = []
    for error in errors:
        loc: list[Any] = [*prefix, *error["loc"]]
        ctx = error.get("ctx") or {}
        if error["type"] == "unknown_key" and "key" in ctx:
            # The other problems of the block that held the unknown key.
            problems.extend(_problems(ctx.get("nested") or [], doc, loc))
            loc.append(ctx["key"])
            message = str(ctx.get("detail", error["msg"]))
            allowed = ctx.get("allowed")
            if allowed:
                message += f" (allowed here: {allowed})"
        else:
            message = _message(error)
            if error["type"] == "extra_forbidden" and known and len(error["loc"]) == 1:
                # A plugin model's own unknown key: say what was meant.
                key = str(error["loc"][0])
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                if close:
                    message += f" (did you mean {close[0]!r}?)"
                message += f" (allowed here: {', '.join(sorted(known))})"
        where = doc.where(loc)
        problems.append(Problem(doc.path, doc.line_of(loc), message, where))
    return problems


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return f"missing required key {error['loc'][-1]!r}"
    if kind == "extra_forbidden":  # only when a model opts out of our check
        return f"unknown key {error['loc'][-1]!r}"
    msg = str(error["msg"])
    # pydantic prefixes the messages of errors raised in validators.
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind in ("string_type", "bool_type", "int_type", "list_type", "dict_type", "model_type"):
        msg += _yaml_type_hint(kind)
    return msg


def _yaml_type_hint(kind: str) -> str:
    if kind == "bool_type":
        return " (YAML 1.2: write true or false; yes/no/on/off are strings)"
    if kind == "string_type":
        return " (quote the value if it looks like a number, date or boolean)"
    return ""


def parse_bottle(doc: Document) -> BottleFile:
    try:
        return BottleFile.model_validate(doc.data)
    except ValidationError as exc:
        raise ManifestError(problems_from(exc, doc)) from None


def parse_agent(doc: Document) -> AgentFile:
    try:
        return AgentFile.model_validate(doc.data)
    except ValidationError as exc:
        raise ManifestError(problems_from(exc, doc)) from None


@dataclass(frozen=True)
class PluginOptions:
    """A bottle file's plugin-owned options, validated by their plugins."""

    #: The provider's ``options_model`` instance, when the file declares
    #: ``agent_provider``.
    provider: BaseModel | None = None
    #: repo name -> validated key options, for repos whose ``key`` this
    #: file declares (``StaticKeyOptions`` for ``static``).
    keys: dict[str, BaseModel] = field(default_factory=dict)


def check_plugins(doc: Document, host: PluginHost) -> PluginOptions:
    """Check a bottle file's plugin-owned parts against ``host``'s plugins.

    Works on the raw frontmatter, not on a validated :class:`BottleFile`,
    so a file with model errors still gets its plugin problems reported in
    the same pass; shapes the model rejects are skipped here (the model
    reports them).
    """
    data = doc.data
    problems: list[Problem] = []
    provider_options: BaseModel | None = None
    spec = data.get("agent_provider")
    if isinstance(spec, dict) and isinstance(spec.get("template"), str):
        template: str = spec["template"]
        component = _find(host, "agent_providers", template)
        if component is None:
            installed = _names(host, "agent_providers")
            loc = ("agent_provider", "template")
            problems.append(
                Problem(
                    doc.path,
                    doc.line_of(loc),
                    f"no agent provider {template!r} is installed "
                    f"(installed: {installed or 'none'})",
                    "agent_provider.template",
                )
            )
        else:
            options = {k: v for k, v in spec.items() if k != "template"}
            provider_options = _validate_options(
                component, options, doc, ("agent_provider",), problems
            )
    keys: dict[str, BaseModel] = {}
    for i, repo in _items(_get(data, "git_gate", "repos")):
        key = repo.get("key")
        if not (isinstance(key, dict) and isinstance(key.get("provider"), str)):
            continue
        provider: str = key["provider"]
        options = {k: v for k, v in key.items() if k != "provider"}
        loc = ("git_gate", "repos", i, "key")
        validated: BaseModel | None = None
        if provider == STATIC_KEY:
            try:
                validated = validate_options(StaticKeyOptions, options)
            except ValidationError as exc:
                problems.extend(problems_from(exc, doc, loc, known=["path"]))
        else:
            component = _find(host, "key_provisioners", provider)
            if component is None:
                installed = ", ".join(
                    [STATIC_KEY, *sorted(c.name for c in host.components("key_provisioners"))]
                )
                problems.append(
                    Problem(
                        doc.path,
                        doc.line_of((*loc, "provider")),
                        f"no key provisioner {provider!r} is installed (available: {installed})",
                        doc.where((*loc, "provider")),
                    )
                )
            else:
                validated = _validate_options(component, options, doc, loc, problems)
        if validated is not None and isinstance(repo.get("name"), str):
            keys[repo["name"]] = validated
    detectors: set[str] | None = None
    for i, route in _items(_get(data, "egress", "routes")):
        dlp = route.get("dlp")
        if not isinstance(dlp, dict):
            continue
        for direction in ("outbound_detectors", "inbound_detectors"):
            names = dlp.get(direction)
            if not isinstance(names, list):
                continue
            if detectors is None:
                detectors = {c.name for c in host.components("dlp_detectors")}
            for j, name in enumerate(names):
                if isinstance(name, str) and name not in detectors:
                    loc = ("egress", "routes", i, "dlp", direction, j)
                    problems.append(
                        Problem(
                            doc.path,
                            doc.line_of(loc),
                            f"no DLP detector {name!r} is installed "
                            f"(installed: {', '.join(sorted(detectors)) or 'none'})",
                            doc.where(loc),
                        )
                    )
    if problems:
        raise ManifestError(sorted(problems, key=lambda p: p.line))
    return PluginOptions(provider=provider_options, keys=keys)


def parse_bottle_checked(doc: Document, host: PluginHost) -> tuple[BottleFile, PluginOptions]:
    """:func:`parse_bottle` and :func:`check_plugins`, every problem of both."""
    problems: list[Problem] = []
    model: BottleFile | None = None
    plugins: PluginOptions | None = None
    try:
        model = parse_bottle(doc)
    except ManifestError as exc:
        problems.extend(exc.problems)
    try:
        plugins = check_plugins(doc, host)
    except ManifestError as exc:
        problems.extend(exc.problems)
    if problems or model is None or plugins is None:
        raise ManifestError(sorted(problems, key=lambda p: p.line))
    return model, plugins


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _find(host: PluginHost, family: str, name: str) -> Any:
    for component in host.components(family):
        if component.name == name:
            return component
    return None


def _names(host: PluginHost, family: str) -> str:
    return ", ".join(sorted(c.name for c in host.components(family)))


def _validate_options(
    component: Any,
    options: dict[str, Any],
    doc: Document,
    loc: tuple[str | int, ...],
    problems: list[Problem],
) -> BaseModel | None:
    from bot_bottle.errors import BotBottleError

    try:
        # The options model is a class attribute of the component's class;
        # building the component would run plugin code we do not need yet.
        model = options_model_of(component)
    except BotBottleError as exc:
        problems.append(Problem(doc.path, doc.line_of(loc), str(exc), doc.where(loc)))
        return None
    try:
        return validate_options(model, options)
    except ValidationError as exc:
        problems.extend(problems_from(exc, doc, loc, known=list(model.model_fields)))
        return None


def validate_options[M: BaseModel](model: type[M], options: dict[str, Any]) -> M:
    """Validate a plugin's options as strict JSON.

    Strict, so YAML 1.2's ``yes`` stays a string even when the plugin's
    model is lax; JSON mode, so strings still become ``Path``, enums and
    the other types JSON has no literal for (Python-mode strict would
    refuse those and every plugin author would trip over it).
    """
    import json

    # default=str: YAML timestamps and other non-JSON scalars arrive as text.
    return model.model_validate_json(json.dumps(options, default=str), strict=True)


def options_model_of(component: Any) -> type[BaseModel]:
    """The ``options_model`` of a registered component.

    Looked up on the factory when it is a class (no plugin code runs), else
    on the object the factory builds.
    """
    from bot_bottle.errors import PluginError

    factory = component.factory
    model = getattr(factory, "options_model", None) if isinstance(factory, type) else None
    if model is None:
        model = getattr(component.create(), "options_model", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(
            f"{component.family[:-1].replace('_', ' ')} {component.name!r} "
            f"(plugin {component.plugin!r}) has no pydantic options_model",
            hint="this is a bug in that plugin",
        )
    return model
