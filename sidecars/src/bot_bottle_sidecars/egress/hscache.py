"""Compile the DLP detectors' Hyperscan databases into a directory, once.

The bundle image runs ``python -m bot_bottle_sidecars.egress.hscache
/opt/bot-bottle/hscache`` (``hscache`` in its interpreter's prefix, where
:data:`bot_bottle.dlp.prefilter.cache_dir` looks) after its packages are
installed; each bottle's egress then loads the token rules' database (~0.4 s of CPU
to compile) instead of compiling it at every start. Only sets that do not
depend on the bottle are here (a bottle's own known secrets are not), and
a database the running CPU or library cannot load is compiled as before.
"""

from __future__ import annotations

import sys
from pathlib import Path


def build(directory: Path) -> int:
    from bot_bottle.dlp import prefilter, views  # views: its gate is a set too
    from bot_bottle.plugins import PluginHost
    from bot_bottle_sidecars.egress.dlp import DetectorScanner

    del views
    if not prefilter.available():
        return 0
    host = PluginHost().load()
    names = sorted(c.name for c in host.components("dlp_detectors"))
    # Held until saved: warm() finds prefilters through weak references.
    scanner = DetectorScanner(lambda n: host.create("dlp_detectors", n), ())
    scanner.preload(names)
    prefilter.warm(background=False)
    written = prefilter.save(directory)
    del scanner
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m bot_bottle_sidecars.egress.hscache DIR\n")
        return 2
    sys.stdout.write(f"hscache: {build(Path(args[0]))} Hyperscan database(s) in {args[0]}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
