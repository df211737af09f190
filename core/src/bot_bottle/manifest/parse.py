"""Turning a :class:`Document` into validated models, with located errors.

Two steps, kept apart so the models never import plugins:

1. :func:`parse_bottle` / :func:`parse_agent`: the pydantic models of
   :mod:`bot_bottle.manifest.models`.
2. :func:`check_plugins`: the plugin-owned parts of a bottle against the
   installed plugins — ``agent_provider.template`` and its options (the
   provider's ``options_model``), each repo ``key.provider`` and its options
   (``static`` is core's), and DLP detector names.

Both raise :class:`ManifestError` listing every problem found in the file,
each with its line.
"""

from __future__ import annotations

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
    exc: ValidationError, doc: Document, prefix: Sequence[str | int] = ()
) -> list[Problem]:
    """Locate each pydantic error in ``doc``; ``prefix`` is where the
    validated data sits in the frontmatter (for plugin option blocks)."""
    problems = _problems(exc.errors(include_url=False, include_input=False), doc, prefix)
    # pydantic reports in field order; people read a file top to bottom.
    return sorted(problems, key=lambda p: p.line)


def _problems(errors: Sequence[Any], doc: Document, prefix: Sequence[Any]) -> list[Problem]:
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


def check_plugins(bottle: BottleFile, doc: Document, host: PluginHost) -> PluginOptions:
    """Check ``bottle``'s plugin-owned parts against ``host``'s plugins."""
    problems: list[Problem] = []
    provider_options: BaseModel | None = None
    if bottle.agent_provider is not None:
        spec = bottle.agent_provider
        component = _find(host, "agent_providers", spec.template)
        if component is None:
            installed = _names(host, "agent_providers")
            loc = ("agent_provider", "template")
            problems.append(
                Problem(
                    doc.path,
                    doc.line_of(loc),
                    f"no agent provider {spec.template!r} is installed "
                    f"(installed: {installed or 'none'})",
                    "agent_provider.template",
                )
            )
        else:
            provider_options = _validate_options(
                component, spec.options, doc, ("agent_provider",), problems
            )
    keys: dict[str, BaseModel] = {}
    for i, repo in enumerate(bottle.git_gate.repos):
        if repo.key is None:
            continue
        loc = ("git_gate", "repos", i, "key")
        options: BaseModel | None = None
        if repo.key.provider == STATIC_KEY:
            try:
                options = validate_options(StaticKeyOptions, repo.key.options)
            except ValidationError as exc:
                problems.extend(problems_from(exc, doc, loc))
        else:
            component = _find(host, "key_provisioners", repo.key.provider)
            if component is None:
                installed = ", ".join(
                    [STATIC_KEY, *sorted(c.name for c in host.components("key_provisioners"))]
                )
                problems.append(
                    Problem(
                        doc.path,
                        doc.line_of((*loc, "provider")),
                        f"no key provisioner {repo.key.provider!r} is installed "
                        f"(available: {installed})",
                        doc.where((*loc, "provider")),
                    )
                )
            else:
                options = _validate_options(component, repo.key.options, doc, loc, problems)
        if options is not None:
            keys[repo.name] = options
    detectors: set[str] | None = None
    for i, route in enumerate(bottle.egress.routes):
        for direction in ("outbound_detectors", "inbound_detectors"):
            names = getattr(route.dlp, direction)
            if not isinstance(names, list):
                continue
            if detectors is None:
                detectors = {c.name for c in host.components("dlp_detectors")}
            for j, name in enumerate(names):
                if name not in detectors:
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
        raise ManifestError(problems)
    return PluginOptions(provider=provider_options, keys=keys)


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
        problems.extend(problems_from(exc, doc, loc))
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
