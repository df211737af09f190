"""What ``bot-bottle validate`` does: check files, collect every problem."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot_bottle.errors import BotBottleError
from bot_bottle.manifest.errors import ManifestError, Problem
from bot_bottle.manifest.store import SUFFIX, AgentRef, Manifest, validate_file


@dataclass
class Report:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def bad_files(self) -> int:
        return len({p.file for p in self.problems})

    def add(self, problems: Sequence[Problem]) -> None:
        for p in problems:
            if p not in self.problems:
                self.problems.append(p)


def validate(manifest: Manifest, files: Sequence[Path] | None = None) -> Report:
    """Check ``files`` (default: every file of ``manifest``).

    Each file is checked on its own (all its errors), then in context: a
    bottle with its ``extends:`` chain, an agent with its bottle.
    """
    report = Report(warnings=manifest.warnings())
    if files is None:
        bottles = [manifest.bottles_dir / f"{n}{SUFFIX}" for n in _names(manifest.bottles_dir)]
        agents = [r for r in manifest.agents() if r.shadowed_by is None]
        for path in bottles:
            _check_bottle(manifest, path, report)
        for ref in agents:
            _check_agent(manifest, ref, report)
        return report
    for path in files:
        if path.parent.name == "bottles":
            # The chain is looked up next to the file (its own home).
            _check_bottle(Manifest(home=path.parent.parent, host=manifest.host), path, report)
        else:
            _check_agent(manifest, AgentRef(path.stem, "home", path), report)
    return report


def _names(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob(f"*{SUFFIX}") if not p.name.startswith("."))


def _check_bottle(manifest: Manifest, path: Path, report: Report) -> None:
    report.checked += 1
    own = validate_file(path, host=manifest.host, kind="bottle")
    report.add(own)
    if own:
        return
    try:
        manifest.bottle(path.stem)
    except ManifestError as exc:
        report.add(exc.problems)
    except BotBottleError as exc:
        report.add([Problem(path, 1, exc.message)])


def _check_agent(manifest: Manifest, ref: AgentRef, report: Report) -> None:
    report.checked += 1
    own = validate_file(ref.path, host=manifest.host, kind="agent")
    report.add(own)
    if own:
        return
    try:
        manifest.resolve(ref)
    except ManifestError as exc:
        report.add(exc.problems)
    except BotBottleError as exc:
        report.add([Problem(ref.path, 1, exc.message)])
