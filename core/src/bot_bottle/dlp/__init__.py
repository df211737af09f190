"""The DLP scan pipeline shared by egress and git-gate.

Detectors are plugins (``bot_bottle_register_dlp_detectors``, contract in
:mod:`bot_bottle.contracts.dlp`); this package decodes what is scanned once
and runs the selected detectors over it:

* :class:`ScanPipeline` -- ``scan_request``, ``scan_response``,
  ``scan_bytes``, ``stream`` (chunked bodies, with carry-over) and
  ``redact`` (for log lines);
* :func:`load_detectors` -- a route's selection (list of names, ``False``,
  or ``None`` for every installed detector of that direction);
* :func:`verdict` -- ``block`` / ``warn`` / ``none`` for a list of findings;
* ``pipeline.use_accelerator(host)`` -- the decoded views' runs found by a
  plugin's native run finder (``dlp_accelerators``), if one is available
  (:func:`load_detectors` calls it).

Egress::

    pipeline = ScanPipeline.from_host(host, Direction.OUTBOUND, route_selection)
    findings = pipeline.scan_request(
        flow.request.method, flow.request.url, flow.request.headers.fields,
        flow.request.raw_content, known_secrets=bottle_secrets,
    )
    if verdict(findings) is Verdict.BLOCK: ...  # 403 naming each f.describe()

git-gate, per file of each new commit (line numbers are filled in)::

    pipeline.scan_bytes(blob, Location("file_content", name=path, commit=sha))
    pipeline.scan_bytes(message, Location("commit_message", commit=sha))

Importing this package loads re2 (and brotli on first use); keep it out of
modules that ``bot-bottle --help`` imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot_bottle.dlp.content import UndecodableError
    from bot_bottle.dlp.pipeline import (
        PIPELINE,
        ScanPipeline,
        Selection,
        Verdict,
        load_detectors,
        verdict,
    )


def __getattr__(name: str) -> Any:
    # Loaded on first use: the launcher imports a submodule of this package
    # (``prefilter``, through a detector it builds to read its direction)
    # and never scans; the pipeline's modules cost it ~12 ms of CPU.
    if name == "UndecodableError":
        from bot_bottle.dlp import content

        return content.UndecodableError
    if name in __all__:
        from bot_bottle.dlp import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PIPELINE",
    "ScanPipeline",
    "Selection",
    "UndecodableError",
    "Verdict",
    "load_detectors",
    "verdict",
]
