"""What ``list agents`` shows: each agent resolved on its own, failures kept.

Every agent is resolved (its file and bottle chain, with the plugin checks)
so "ok" means "would launch as far as the manifest goes". One
:class:`~bot_bottle.manifest.store.Manifest` is shared, so bottles used by
many agents are parsed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot_bottle.errors import BotBottleError
from bot_bottle.manifest.document import read_document
from bot_bottle.manifest.errors import ManifestError
from bot_bottle.manifest.store import AgentRef, Manifest


@dataclass(frozen=True)
class AgentRow:
    name: str
    source: str
    path: str
    bottle: str | None
    status: str  # ok | broken | shadowed
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "path": self.path,
            "bottle": self.bottle,
            "broken": self.status == "broken",
            "status": self.status,
            "reason": self.reason,
        }


def list_agents(manifest: Manifest) -> list[AgentRow]:
    rows = []
    for ref in manifest.agents():
        if ref.shadowed_by is not None:
            rows.append(
                AgentRow(
                    ref.name,
                    ref.source,
                    str(ref.path),
                    _bottle_name(manifest, ref),
                    "shadowed",
                    f"the home agent {ref.shadowed_by} has the same name and wins",
                )
            )
            continue
        try:
            agent = manifest.resolve(ref)
        except BotBottleError as exc:
            reason = str(exc.problems[0]) if isinstance(exc, ManifestError) else exc.message
            if isinstance(exc, ManifestError) and len(exc.problems) > 1:
                reason += f" (and {len(exc.problems) - 1} more; see 'bot-bottle validate')"
            rows.append(
                AgentRow(
                    ref.name,
                    ref.source,
                    str(ref.path),
                    _bottle_name(manifest, ref),
                    "broken",
                    reason,
                )
            )
            continue
        rows.append(AgentRow(ref.name, ref.source, str(ref.path), agent.bottle.name, "ok"))
    return rows


def _bottle_name(manifest: Manifest, ref: AgentRef) -> str | None:
    """The ``bottle:`` of a file that may not parse as a whole."""
    try:
        if ref.source == "repo" and manifest.repo is not None:
            manifest.check_inside_repo(ref.path, manifest.repo)
        value = read_document(ref.path).data.get("bottle")
    except ManifestError:
        return None
    return value if isinstance(value, str) else None
