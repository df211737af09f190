"""JSON Schema of the two file kinds, for editor completion.

The core models' schemas, with the plugin-owned parts filled in from the
installed plugins: ``agent_provider`` becomes one alternative per provider
(``template`` constant + that provider's ``options_model``), a repo ``key``
one per key provisioner plus core's ``static``, and detector lists an enum
of installed detector names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot_bottle.manifest.models import AgentFile, BottleFile, StaticKeyOptions
from bot_bottle.manifest.parse import STATIC_KEY, options_model_of

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bot_bottle.plugins import PluginHost

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def agent_schema() -> dict[str, Any]:
    schema = AgentFile.model_json_schema()
    schema["$schema"] = DIALECT
    schema["title"] = "bot-bottle agent (YAML frontmatter)"
    return schema


def bottle_schema(host: PluginHost) -> dict[str, Any]:
    schema = BottleFile.model_json_schema()
    schema["$schema"] = DIALECT
    schema["title"] = "bot-bottle bottle (YAML frontmatter)"
    defs: dict[str, Any] = schema.setdefault("$defs", {})

    providers = []
    for component in host.components("agent_providers"):
        model = _model(component)
        if model is not None:
            providers.append(
                _flat(defs, f"provider-{component.name}", "template", component.name, model)
            )
    defs["AgentProviderSpec"] = _alternatives(
        "agent_provider: 'template' names an installed agent provider plugin; the other "
        "keys are that provider's options",
        "template",
        providers,
    )

    keys = [_flat(defs, "key-static", "provider", STATIC_KEY, StaticKeyOptions)]
    for component in host.components("key_provisioners"):
        if component.name == STATIC_KEY:
            continue
        model = _model(component)
        if model is not None:
            keys.append(_flat(defs, f"key-{component.name}", "provider", component.name, model))
    defs["KeySpec"] = _alternatives(
        "key: {provider: static, path} or a key provisioner plugin and its options",
        "provider",
        keys,
    )

    detectors = sorted(c.name for c in host.components("dlp_detectors"))
    dlp = defs.get("RouteDlp", {}).get("properties", {})
    for prop in dlp.values():
        for option in prop.get("anyOf", []):
            if option.get("type") == "array" and detectors:
                option["items"] = {"type": "string", "enum": detectors}
    return schema


def _model(component: Any) -> type[BaseModel] | None:
    from bot_bottle.errors import BotBottleError

    try:
        return options_model_of(component)
    except BotBottleError:
        # A broken plugin leaves its alternative out of the schema; 'plugins
        # list' and 'validate' report it.
        return None


def _flat(
    defs: dict[str, Any], def_name: str, tag: str, value: str, model: type[BaseModel]
) -> dict[str, Any]:
    """``model``'s schema with a constant ``tag`` property added, stored in
    ``defs`` (its own ``$defs`` hoisted, refs rewritten to stay unique)."""
    sub = model.model_json_schema(ref_template="#/$defs/" + def_name + "--{model}")
    for name, definition in sub.pop("$defs", {}).items():
        defs[f"{def_name}--{name}"] = definition
    sub.setdefault("properties", {})
    sub["properties"] = {tag: {"const": value}, **sub["properties"]}
    sub["required"] = [tag, *[r for r in sub.get("required", []) if r != tag]]
    sub["type"] = "object"
    defs[def_name] = sub
    return {"$ref": f"#/$defs/{def_name}"}


def _alternatives(description: str, tag: str, options: list[dict[str, Any]]) -> dict[str, Any]:
    if not options:
        return {
            "type": "object",
            "description": description + " (no plugin of this kind is installed)",
            "required": [tag],
            "properties": {tag: {"type": "string"}},
        }
    return {"description": description, "oneOf": options}
