"""``bot-bottle doctor``: is this host ready to run bottles? One line a check."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["OK", "WARN", "FAIL"]
MIN_PYTHON = (3, 12)


@dataclass(frozen=True)
class Check:
    level: Level
    what: str
    detail: str
    hint: str | None = None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check Python, Docker, plugins and the state directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def check_python() -> Check:
    import platform
    import sys

    version = platform.python_version()
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("OK", "python", f"Python {version} ({sys.executable})")
    return Check(
        "FAIL",
        "python",
        f"Python {version} is too old",
        "install Python 3.12 or newer and reinstall bot-bottle with it",
    )


def check_backend_hosts(host: Any) -> list[Check]:
    """What each installed backend needs on this host (its engine, the base
    image), in its own words: core knows no engine."""
    from bot_bottle.contracts.backend import DEFAULT_BACKEND

    checks: list[Check] = []
    # The default backend first: its lines are the ones most readers need.
    comps = sorted(host.components("backends"), key=lambda c: (c.name != DEFAULT_BACKEND, c.name))
    for comp in comps:
        try:
            found = comp.create().host_checks()
        except Exception:
            found = []
        checks += [Check(c.level, c.what, c.detail, c.hint) for c in found]
    return checks


def check_state_dir() -> Check:
    import os
    import tempfile
    from pathlib import Path

    from bot_bottle.paths import state_dir

    path = state_dir()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, probe_file = tempfile.mkstemp(dir=path, prefix=".doctor-")
        os.close(fd)
        Path(probe_file).unlink()
    except OSError as exc:
        return Check(
            "FAIL",
            "state",
            f"state directory {path} is not writable: {exc.strerror or exc}",
            "fix its ownership/permissions, or set BOT_BOTTLE_HOME to a writable directory",
        )
    return Check("OK", "state", f"state directory {path} is writable")


def check_plugins(host: Any) -> list[Check]:
    from bot_bottle.hookspecs import FAMILIES
    from bot_bottle.plugins import ENV_BLOCK, Status

    host.collect_all()
    checks: list[Check] = []
    for info in sorted(host.infos.values(), key=lambda i: i.name):
        where = f"{info.distribution} {info.version}" if info.distribution else info.source.value
        if info.status is Status.FAILED:
            checks.append(
                Check(
                    "FAIL",
                    f"plugin {info.name}",
                    f"{where}: {info.error}",
                    f"reinstall or remove it, or disable it with {ENV_BLOCK}={info.name}",
                )
            )
        elif info.status is Status.DISABLED:
            checks.append(Check("OK", f"plugin {info.name}", f"{where}: disabled by environment"))
        else:
            checks.append(Check("OK", f"plugin {info.name}", f"{where}: loaded"))
    for family in FAMILIES:
        for name, comps in host.conflicts(family).items():
            who = ", ".join(c.plugin for c in comps)
            checks.append(
                Check(
                    "FAIL",
                    f"{family[:-1]} {name}",
                    f"registered by several plugins: {who}",
                    "uninstall or disable all but one",
                )
            )
        for comp in host.components(family):
            label = f"{family[:-1].replace('_', ' ')} {comp.name}"
            try:
                avail = comp.create().is_available()
            except Exception as exc:
                checks.append(Check("FAIL", label, f"cannot be used: {exc}", None))
                continue
            if avail.ok:
                checks.append(Check("OK", label, avail.detail or "available"))
            elif family in ("backends", "dlp_accelerators"):
                # A backend installed for another OS (apple_container on
                # Linux) is not a broken host; a backend's own host_checks
                # FAIL when what it needs here is missing. A DLP accelerator
                # that is not built or switched off only makes scans slower.
                checks.append(Check("WARN", label, avail.detail, avail.hint))
            else:
                checks.append(Check("FAIL", label, avail.detail, avail.hint))
    if not host.components("backends"):
        checks.append(
            Check(
                "WARN",
                "backends",
                "no backend plugin is installed, so no bottle can start",
                "install one, e.g. 'pip install bot-bottle-docker'",
            )
        )
    return checks


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle import __version__
    from bot_bottle.plugins import PluginHost

    host = PluginHost().load()
    checks = [
        Check("OK", "bot-bottle", f"bot-bottle {__version__}"),
        check_python(),
        *check_backend_hosts(host),
        *check_plugins(host),
        check_state_dir(),
    ]
    failed = any(c.level == "FAIL" for c in checks)
    if args.json:
        json.dump({"ok": not failed, "checks": [c.__dict__ for c in checks]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for c in checks:
            print(f"{c.level:<4}  {c.what}: {c.detail}")
            if c.hint and c.level != "OK":
                print(f"      -> {c.hint}")
        print()
        print("some checks failed" if failed else "all checks passed")
    return 1 if failed else 0
