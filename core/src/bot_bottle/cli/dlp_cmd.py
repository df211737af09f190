"""``bot-bottle dlp scan``: run the installed DLP detectors over files or stdin.

The same pipeline egress and git-gate use (same decoding, same detector
selection), so users can try their own detectors and rules. Exits 1 when
something would be blocked, 0 otherwise (warnings included).
"""

from __future__ import annotations

import argparse
from typing import Any

EXIT_BLOCKED = 1
EXIT_ERROR = 2
_CHUNK = 1024 * 1024


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dlp", help="data-loss prevention: test detectors on files")
    psub = p.add_subparsers(dest="dlp_command", metavar="SUBCOMMAND")
    scan = psub.add_parser(
        "scan",
        help="scan files or stdin with the installed DLP detectors, as egress would",
        description="Scan files (or stdin, '-') with the installed DLP detectors, decoding "
        "them as egress does. Prints findings (secrets redacted) and exits 1 when "
        "something would be blocked, 2 on bad input (unknown detector, unreadable file).",
    )
    scan.add_argument("files", nargs="*", metavar="FILE", help="files to scan; '-' or none: stdin")
    scan.add_argument(
        "--direction",
        choices=("outbound", "inbound"),
        default="outbound",
        help="scan as a request leaving the bottle (default) or a response entering it",
    )
    scan.add_argument(
        "--detector",
        action="append",
        metavar="NAME",
        help="use only this detector (repeatable); default: every installed one",
    )
    scan.add_argument(
        "--content-encoding",
        metavar="CODINGS",
        help="the input is compressed as this Content-Encoding says (gzip, deflate, br, zstd)",
    )
    scan.add_argument(
        "--secret-env",
        action="append",
        metavar="VAR",
        default=[],
        help="treat the value of environment variable VAR as a known secret (repeatable; "
        "values are read from the environment so they never appear on the command line)",
    )
    scan.add_argument("--json", action="store_true", help="machine-readable output")
    scan.set_defaults(handler=run_scan)
    p.set_defaults(handler=lambda _args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_scan(args: argparse.Namespace) -> int:
    import sys

    from bot_bottle.errors import BotBottleError

    # Errors exit 2 so that scripts can tell them from "would block" (1).
    try:
        return _scan(args)
    except BotBottleError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        return EXIT_ERROR


def _scan(args: argparse.Namespace) -> int:
    import io
    import json
    import os
    import sys
    from pathlib import Path

    from bot_bottle.contracts.dlp import Direction, Finding, Location
    from bot_bottle.dlp import ScanPipeline, Verdict, verdict
    from bot_bottle.errors import BotBottleError
    from bot_bottle.plugins import PluginHost
    from bot_bottle.secrets import Secret

    secrets = []
    for var in args.secret_env:
        value = os.environ.get(var)
        if value is None:
            raise BotBottleError(
                f"--secret-env {var}: no such environment variable",
                hint=f"export {var} before running the scan",
            )
        secrets.append(Secret(value))

    direction = Direction(args.direction)
    pipeline = ScanPipeline.from_host(PluginHost().load(), direction, args.detector)
    if not pipeline.detectors:
        sys.stderr.write(
            f"warning: no {direction.value} DLP detectors are installed; nothing was scanned\n"
            "hint: install bot-bottle-dlp or see 'bot-bottle plugins list'\n"
        )

    def scan_one(name: str, reader: Any, size: int | None) -> list[Finding]:
        location = Location("body") if name == "-" else Location("file_content", name=name)
        if size is not None and size <= pipeline.max_decoded_bytes:
            return pipeline.scan_bytes(
                reader.read(),
                location,
                content_encoding=args.content_encoding,
                known_secrets=secrets,
            )
        # Larger than a whole-body scan takes: stream it.
        stream = pipeline.stream(
            location, content_encoding=args.content_encoding, known_secrets=secrets
        )
        found: list[Finding] = []
        while chunk := reader.read(_CHUNK):
            found += stream.feed(chunk)
        return found + stream.finish()

    results: list[tuple[str, Finding]] = []
    for name in args.files or ["-"]:
        if name == "-":
            data = sys.stdin.buffer.read()
            found = scan_one(name, io.BytesIO(data), len(data))
        else:
            path = Path(name)
            try:
                with path.open("rb") as fh:
                    found = scan_one(name, fh, path.stat().st_size)
            except OSError as exc:
                raise BotBottleError(
                    f"cannot read {name}: {exc.strerror or exc}",
                    hint="pass readable files, or '-' for stdin",
                ) from None
        results += [(name, f) for f in found]

    overall = verdict(f for _, f in results)
    if args.json:
        doc = {
            "verdict": overall.value,
            "detectors": [d.name for d in pipeline.detectors],
            "findings": [_to_json(name, f) for name, f in results],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for name, f in results:
            where = name if name != "-" else "<stdin>"
            if f.location.line is not None:
                where += f":{f.location.line}"
            print(
                f"{where}: {f.action.value.upper()} {f.detector}/{f.rule}: {f.snippet}"
                + (f" ({f.location.decoded}-encoded)" if f.location.decoded else "")
            )
        blocks = sum(1 for _, f in results if f.action.value == "block")
        if results:
            print(f"{len(results)} finding(s), {blocks} would block")
        else:
            print("no findings")
    return EXIT_BLOCKED if overall is Verdict.BLOCK else 0


def _to_json(name: str, f: Any) -> dict[str, Any]:
    loc = f.location
    return {
        "file": None if name == "-" else name,
        "detector": f.detector,
        "rule": f.rule,
        "action": f.action.value,
        "location": {
            "part": loc.part,
            "name": loc.name,
            "line": loc.line,
            "offset": loc.offset,
            "length": loc.length,
            "decoded": loc.decoded,
        },
        "snippet": f.snippet,
    }
