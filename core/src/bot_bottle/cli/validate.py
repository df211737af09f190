"""``bot-bottle validate [FILE...]``: every problem in the manifest files.

Without files: every bottle and agent the operator has (and the current
repository's agents), each file on its own and each agent with its bottle
chain. Exit status 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot_bottle.termtext import visible


def add_parser(sub: Any) -> None:
    p = sub.add_parser("validate", help="check bottle and agent files; report every error")
    p.add_argument("files", nargs="*", metavar="FILE", help="files to check (default: all)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot_bottle.manifest.store import Manifest
    from bot_bottle.manifest.validation import validate

    manifest = Manifest.discover()
    files = [Path(f) for f in args.files]
    report = validate(manifest, files or None)
    for warning in report.warnings:
        print(f"warning: {visible(warning)}")
    for problem in report.problems:
        print(f"error: {visible(str(problem))}")
    if report.problems:
        print(
            f"{len(report.problems)} problem(s) in {report.bad_files} of {report.checked} file(s)"
        )
        return 1
    print(f"{report.checked} file(s) OK")
    return 0
