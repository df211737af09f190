"""The hooks' view of the config, written by the daemon after it validated it.

Hooks run once per git request, so their start-up time is on every fetch and
push the agent makes. The daemon validates the config (pydantic) once at
start and writes this plain JSON into its private state directory; hooks read
it with the standard library only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot_bottle.gitgate.config import GateConfig


@dataclass(frozen=True)
class RepoRuntime:
    name: str
    upstream: str
    known_hosts: str


@dataclass(frozen=True)
class Runtime:
    repos: dict[str, RepoRuntime]
    detectors: tuple[str, ...] | None
    connect_timeout: int
    #: The operator's allow list (``bot_bottle.gitgate.allow``), read on every push.
    allow_file: str | None = None

    @classmethod
    def from_config(cls, config: GateConfig, *, allow_file: str | None = None) -> Runtime:
        return cls(
            repos={r.name: RepoRuntime(r.name, r.upstream, r.known_hosts) for r in config.repos},
            detectors=config.detectors,
            connect_timeout=config.connect_timeout,
            allow_file=allow_file,
        )

    def write(self, path: Path) -> None:
        data = {
            "repos": [asdict(r) for r in self.repos.values()],
            "detectors": list(self.detectors) if self.detectors is not None else None,
            "connect_timeout": self.connect_timeout,
            "allow_file": self.allow_file,
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Runtime:
        data = json.loads(path.read_text(encoding="utf-8"))
        detectors = data.get("detectors")
        return cls(
            repos={r["name"]: RepoRuntime(**r) for r in data["repos"]},
            detectors=tuple(detectors) if detectors is not None else None,
            connect_timeout=int(data["connect_timeout"]),
            allow_file=data.get("allow_file"),
        )
