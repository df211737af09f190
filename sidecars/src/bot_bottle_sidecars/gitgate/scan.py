"""Scanning what a push brings: commits new to the gate, with the DLP detectors.

Only commits the gate has never seen are scanned (``<new...> --not --all``):
scanning a new branch's whole ancestry blocked every push over old test
fixtures already upstream. The gate's refs hold only what came from
the upstream or passed this scan, so nothing a push brings is skipped.

Of each new commit: its message, its header (author, committer, signature,
any extra header: they travel upstream with it), the names of the files it
touches, and the lines it *adds* (old lines were scanned when they were new, or are upstream
already). Merges are diffed densely-combined and only lines new against every
parent count, so a merge re-scans nothing but its own (evil-merge) content.
"""

from __future__ import annotations

import bisect
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bot_bottle.contracts.dlp import Action, Direction, Finding, Location, ScanContext
from bot_bottle.dlp.pipeline import ScanPipeline, use_accelerator
from bot_bottle.errors import BotBottleError
from bot_bottle.gitgate.allow import finding_id, match_sha256
from bot_bottle.secrets import Secret

if TYPE_CHECKING:
    from bot_bottle.contracts.dlp import DlpDetector
    from bot_bottle.plugins import PluginHost

FAMILY = "dlp_detectors"
GITLEAKS_DETECTOR = "gitleaks"
#: Added lines of one file are scanned in pieces of about this size.
PIECE_BYTES = 16 * 1024 * 1024
_PIECE_CHECK_LINES = 65536
_HUNK_RE = re.compile(rb"^(@+) .*\+(\d+)(?:,\d+)? @+")
#: The rule of the pipeline's finding for a detector that raised.
_DETECTOR_ERROR = "detector-error"


class ScanError(Exception):
    """The scan could not run; the push is refused (fail closed)."""


def scan_buffer(
    detectors: Sequence[DlpDetector], data: bytes, context: ScanContext
) -> list[Finding]:
    """The one place git-gate hands bytes to DLP: core's scan pipeline, the
    one egress and ``bot-bottle dlp scan`` use.

    The pipeline runs every detector over the bytes and over their decoded
    views (URL-encoding, JSON escapes, base64 and hex runs), so a token
    base64-encoded in a committed file is found like a plain one; findings'
    offsets point into ``data`` (an encoded run as a whole). A detector that
    raises makes the scan fail: an unscanned push never leaves.
    """
    pipeline = ScanPipeline(detectors, Direction.OUTBOUND)
    findings = pipeline.scan_bytes(
        data, context.location, known_secrets=context.known_secrets, target=context.target
    )
    for f in findings:
        if f.rule == _DETECTOR_ERROR and f.action is Action.BLOCK:
            # The pipeline turns a raising detector into a blocking finding;
            # the gate reports it as what it is, a scan that could not run.
            raise ScanError(f"detector {f.detector!r} failed: {f.snippet}")
    return findings


def load_detectors(host: PluginHost, names: Sequence[str] | None) -> list[DlpDetector]:
    """The detectors a push is scanned with: ``names`` (all must be there) or
    every installed detector that scans outbound data. None at all is an
    error: the gate never forwards a push nothing looked at."""
    use_accelerator(host)  # the native run finder, when installed
    if names is None:
        try:
            host.require_family(FAMILY)  # never a silently smaller default set
        except BotBottleError as exc:
            raise ScanError(exc.message) from exc
    available = {c.name: c for c in host.components(FAMILY)}
    wanted = list(names) if names is not None else sorted(available)
    missing = [n for n in wanted if n not in available]
    if missing:
        raise ScanError(
            "DLP detectors not installed in the gate: "
            + ", ".join(missing)
            + f" (installed: {', '.join(sorted(available)) or 'none'})"
        )
    detectors: list[DlpDetector] = []
    for name in wanted:
        try:
            detector = available[name].create()
        except Exception as exc:
            raise ScanError(f"DLP detector {name!r} failed to start: {exc}") from exc
        if detector.direction.covers(Direction.OUTBOUND):
            detectors.append(detector)
    return detectors


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    commits: int = 0
    bytes_scanned: int = 0
    #: Paths whose *name* held a finding: never printed, even in messages.
    hidden_names: set[str] = field(default_factory=set)
    #: Each finding's id (``bot_bottle.gitgate.allow.finding_id``): what the
    #: operator names to let exactly this finding through. Keyed by object
    #: identity (the findings live in ``findings``), so Finding need not be hashable.
    ids: dict[int, str] = field(default_factory=dict)

    def id_of(self, finding: Finding) -> str:
        known = self.ids.get(id(finding))
        if known is not None:
            return known
        # Findings without offsets (gitleaks) are identified without the match.
        loc = finding.location
        return finding_id(
            commit=loc.commit, part=loc.part, path=loc.name,
            detector=finding.detector, rule=finding.rule, match="",
        )  # fmt: skip

    def add(self, finding: Finding, data: bytes) -> None:
        """Record ``finding`` (relocated) and its id from the bytes it matched."""
        loc = finding.location
        match = ""
        if loc.offset is not None and loc.length is not None:
            match = match_sha256(data[loc.offset : loc.offset + loc.length])
        self.findings.append(finding)
        self.ids[id(finding)] = finding_id(
            commit=loc.commit, part=loc.part, path=loc.name,
            detector=finding.detector, rule=finding.rule, match=match,
        )  # fmt: skip

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.action is Action.BLOCK]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.action is not Action.BLOCK]


def scan_push(
    repo: Path,
    tips: Sequence[str],
    detectors: Sequence[DlpDetector],
    *,
    target: str,
    env: Mapping[str, str],
    extra_messages: Mapping[str, bytes] | None = None,
    ref_names: Sequence[str] = (),
    known_secrets: Sequence[Secret] = (),
) -> Report:
    """Scan the commits reachable from ``tips`` and not from any gate ref.

    ``extra_messages`` maps an object id to more text to scan as a message
    (annotated tag bodies). ``ref_names`` are scanned too: a branch can be
    named after a secret. ``known_secrets`` are the bottle's own secret
    values (for the ``known_secrets`` detector).
    """
    report = Report()
    known = tuple(known_secrets)

    def context(loc: Location) -> ScanContext:
        return ScanContext(Direction.OUTBOUND, loc, target=target, known_secrets=known)

    for ref in ref_names:
        _scan_into(report, detectors, ref.encode(), context(Location("ref_name", name=ref)))
    if not tips:
        return report
    revs = [*tips, "--not", "--all"]
    messages: dict[str, bytes] = {}
    for sha, message in _messages(repo, revs, env):
        report.commits += 1
        messages[sha] = message
        _scan_into(report, detectors, message, context(Location("commit_message", commit=sha)))
    for sha, message in (extra_messages or {}).items():
        messages[sha] = message
        _scan_into(report, detectors, message, context(Location("commit_message", commit=sha)))
    for sha, header, raw in _objects(repo, list(messages), env):
        _scan_into(report, detectors, header, context(Location("commit_header", commit=sha)))
        if raw.rstrip(b"\n") != messages[sha].rstrip(b"\n"):
            # %B re-encodes a message per its "encoding" header (into nothing
            # readable, for e.g. IBM037): the bytes that go upstream are scanned too.
            loc = Location("commit_message", commit=sha)
            _scan_into(report, detectors, raw, context(loc))
    for change in _added_lines(repo, revs, env):
        if change.first_piece:
            name_loc = Location("file_name", name=change.path, commit=change.commit)
            _scan_into(report, detectors, change.path.encode(), context(name_loc))
        if change.data:
            loc = Location("file_content", name=change.path, commit=change.commit)
            found = scan_buffer(detectors, change.data, context(loc))
            report.bytes_scanned += len(change.data)
            for f in found:
                line = change.line_at(f.location.offset)
                report.add(_relocate(f, loc, line), change.data)
    return report


def _scan_into(
    report: Report, detectors: Sequence[DlpDetector], data: bytes, context: ScanContext
) -> None:
    loc = context.location
    report.bytes_scanned += len(data)
    for f in scan_buffer(detectors, data, context):
        line = (
            data.count(b"\n", 0, f.location.offset) + 1 if f.location.offset is not None else None
        )
        line = line if loc.part == "commit_message" else None
        report.add(_relocate(f, loc, line), data)
        if loc.part in ("file_name", "ref_name") and loc.name is not None:
            report.hidden_names.add(loc.name)


def _relocate(finding: Finding, loc: Location, line: int | None) -> Finding:
    # Detectors fill what they know; the gate knows commit, file and line.
    return Finding(
        detector=finding.detector,
        rule=finding.rule,
        action=finding.action,
        location=Location(
            loc.part,
            name=loc.name,
            commit=loc.commit,
            line=line,
            offset=finding.location.offset,
            length=finding.location.length,
            decoded=finding.location.decoded,
        ),
        snippet=finding.snippet,
    )


def _messages(
    repo: Path, revs: Sequence[str], env: Mapping[str, str]
) -> Iterator[tuple[str, bytes]]:
    out = _run_git(repo, ["log", "-z", "--format=%H%n%B", *revs], env)
    for entry in out.split(b"\0"):
        if not entry.strip():
            continue
        sha, _, message = entry.partition(b"\n")
        yield sha.decode().strip(), message


#: The leading header lines that only name other objects: fsck
#: (receive.fsckObjects) holds them to ``<keyword> <hex id>``. Only the leading
#: run: a later line may start the same way and say anything.
_ID_LINES = (b"tree ", b"parent ", b"object ")


def _objects(
    repo: Path, shas: Sequence[str], env: Mapping[str, str]
) -> Iterator[tuple[str, bytes, bytes]]:
    """The raw header and raw message of each commit or tag object in ``shas``.

    ``%B`` is the message alone; author, committer, tagger, the tag name
    inside a tag object (which need not match the ref it is pushed as),
    signatures and any extra header leave with the object too.
    """
    if not shas:
        return
    proc = subprocess.run(
        ["git", f"--git-dir={repo}", "cat-file", "--batch"],
        input="".join(f"{sha}\n" for sha in shas).encode(),
        capture_output=True,
        env=_git_env(env),
        check=False,
    )
    if proc.returncode != 0:
        raise ScanError(
            f"git cat-file failed: {proc.stderr.decode(errors='replace').strip()[:300]}"
        )
    out, pos = proc.stdout, 0
    for sha in shas:
        eol = out.index(b"\n", pos)
        info = out[pos:eol].split()
        if len(info) != 3 or info[1] == b"missing":
            raise ScanError(f"git cat-file: object {sha[:12]} is missing")
        size = int(info[2])
        body = out[eol + 1 : eol + 1 + size]
        pos = eol + 1 + size + 1
        header, _, message = body.partition(b"\n\n")
        lines = header.split(b"\n")
        first = next((i for i, ln in enumerate(lines) if not ln.startswith(_ID_LINES)), len(lines))
        yield sha, b"\n".join(lines[first:]), message


@dataclass
class FileChange:
    commit: str
    path: str
    data: bytes
    #: Each run of consecutive added lines: its offset in ``data`` and the
    #: line number of its first line in the new file.
    offsets: list[int]
    lines: list[int]
    #: False for the later pieces of a file too big to hold at once.
    first_piece: bool = True

    def line_at(self, offset: int | None) -> int | None:
        if offset is None or not self.offsets:
            return None
        i = max(bisect.bisect_right(self.offsets, offset) - 1, 0)
        return self.lines[i] + self.data.count(b"\n", self.offsets[i], offset)


def _added_lines(repo: Path, revs: Sequence[str], env: Mapping[str, str]) -> Iterator[FileChange]:
    argv = [
        "git",
        f"--git-dir={repo}",
        "-c",
        "core.quotePath=false",
        "log",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--text",
        "--cc",
        "--find-renames",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        "--format=%x00%H",
        *revs,
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_git_env(env),
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        yield from _parse_patch(proc.stdout)
    finally:
        proc.stdout.close()
        err = proc.stderr.read() if proc.stderr else b""
        if proc.wait() != 0:
            raise ScanError(f"git log failed: {err.decode(errors='replace').strip()[:300]}")


def _parse_patch(stream: Iterable[bytes]) -> Iterator[FileChange]:
    """Added lines per file and commit from ``git log --cc --format=%x00%H`` output.

    Written for speed (a push can bring hundreds of MB of diff): added lines
    are collected as-is; line numbers are kept only for the first line of
    each run of added lines and derived on demand for the rare finding.
    """
    commit = ""
    cur: FileChange | None = None
    chunks: list[bytes] = []
    run_starts: list[int] = []  # index into chunks where a run of added lines starts
    cols = 1
    added = b"+"
    line_no = 0
    in_hunk = False
    prev_added = False
    next_check = _PIECE_CHECK_LINES

    def flush() -> FileChange | None:
        if cur is None:
            return None
        if chunks and not chunks[-1].endswith(b"\n"):
            chunks[-1] += b"\n"
        offsets: list[int] = []
        pos = last = 0
        for start in run_starts:
            pos += sum(map(len, chunks[last:start]))
            last = start
            offsets.append(pos)
        cur.offsets = offsets
        cur.data = b"".join(chunks)
        return cur

    for raw in stream:
        if in_hunk:
            head = raw[:cols]
            if head == added:
                if not prev_added:
                    run_starts.append(len(chunks))
                    cur.lines.append(line_no)  # type: ignore[union-attr]
                    prev_added = True
                chunks.append(raw[cols:])
                line_no += 1
                if len(chunks) >= next_check:
                    next_check += _PIECE_CHECK_LINES
                    if sum(map(len, chunks)) >= PIECE_BYTES:
                        # Hand over what we have: memory stays bounded on
                        # huge files. Pieces split between lines.
                        done = flush()
                        if done is not None:
                            yield done
                            cur = FileChange(commit, done.path, b"", [], [], first_piece=False)
                        chunks, run_starts, prev_added = [], [], False
                        next_check = _PIECE_CHECK_LINES
                continue
            first = raw[:1]
            if first in (b" ", b"+", b"-"):
                prev_added = False
                if b"-" not in head:
                    line_no += 1  # in the new file, but not new against every parent
                continue
            if first == b"\\":
                continue  # "\ No newline at end of file"
            in_hunk = prev_added = False
        if raw.startswith(b"\0"):
            done = flush()
            if done is not None:
                yield done
            cur, chunks, run_starts, next_check = None, [], [], _PIECE_CHECK_LINES
            commit = raw[1:].strip().decode()
            continue
        if raw.startswith((b"diff --git ", b"diff --cc ", b"diff --combined ")):
            done = flush()
            if done is not None:
                yield done
            chunks, run_starts, next_check = [], [], _PIECE_CHECK_LINES
            header = raw.rstrip(b"\n").split(b" ", 2)[2]
            cur = FileChange(commit, _header_name(header), b"", [], [])
            continue
        if cur is None:
            continue
        if raw.startswith(b"@@"):
            m = _HUNK_RE.match(raw)
            if m:
                cols = len(m.group(1)) - 1
                added = b"+" * cols
                line_no = int(m.group(2))
                in_hunk, prev_added = True, False
            continue
        if raw.startswith(b"+++ "):
            name = raw[4:].rstrip(b"\n").rstrip(b"\t")
            if name != b"/dev/null":
                cur.path = _strip_prefix(_unquote(name))
        elif raw.startswith((b"rename to ", b"copy to ")):
            cur.path = _unquote(raw.split(b" ", 2)[2].rstrip(b"\n"))
    done = flush()
    if done is not None:
        yield done


def _header_name(header: bytes) -> str:
    # "a/x b/x" for --git (ambiguous with spaces; "+++" refines it), "x" for --cc.
    text = header.rstrip(b"\t")
    if text.startswith(b'"') or text.startswith(b"a/"):
        half = text.split(b" b/", 1)
        if len(half) == 2:
            return _strip_prefix(_unquote(b"b/" + half[1]))
    return _unquote(text)


def _strip_prefix(name: str) -> str:
    return name[2:] if name.startswith(("a/", "b/")) else name


_ESCAPES = {ord("n"): 10, ord("t"): 9, ord('"'): 34, ord("\\"): 92, ord("a"): 7, ord("b"): 8,
            ord("f"): 12, ord("r"): 13, ord("v"): 11}  # fmt: skip


def _unquote(name: bytes) -> str:
    """Undo git's C-style quoting of a path (``"a/we\\"ird"``)."""
    if not (name.startswith(b'"') and name.endswith(b'"') and len(name) >= 2):
        return name.decode("utf-8", "replace")
    body, out, i = name[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c == 0x5C and i + 1 < len(body):
            nxt = body[i + 1]
            if 0x30 <= nxt <= 0x37 and i + 4 <= len(body):
                out.append(int(body[i + 1 : i + 4], 8) & 0xFF)
                i += 4
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return out.decode("utf-8", "replace")


def _git_env(env: Mapping[str, str]) -> dict[str, str]:
    # The output is parsed: no user or system config (noprefix, colour,
    # external diff drivers, ...) may change its shape. Replace refs are
    # ignored: a pushed refs/replace/<id> would otherwise make the scan read
    # an innocent stand-in while git push (which ignores them) sends the real
    # object upstream.
    return {
        **env,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_NO_REPLACE_OBJECTS": "1",
    }


def _run_git(repo: Path, args: Sequence[str], env: Mapping[str, str]) -> bytes:
    proc = subprocess.run(
        ["git", f"--git-dir={repo}", *args],
        capture_output=True,
        env=_git_env(env),
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise ScanError(
            f"git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()[:300]}"
        )
    return proc.stdout


# -- gitleaks (optional) -------------------------------------------------------


def gitleaks_available() -> str | None:
    return shutil.which("gitleaks")


def scan_gitleaks(
    binary: str, repo: Path, tips: Sequence[str], env: Mapping[str, str]
) -> list[Finding]:
    """Run gitleaks over the same commits, when its binary is installed.

    An extra, not a replacement: its findings block like any detector's.
    gitleaks is given ``--redact`` so its report holds no secret values.
    """
    log_opts = " ".join([*tips, "--not", "--all"])
    with tempfile.TemporaryDirectory(prefix="gitgate-gitleaks-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [
            binary,
            "git",
            "--no-banner",
            "--redact",
            f"--log-opts={log_opts}",
            "--report-format=json",
            f"--report-path={report}",
            "--exit-code=0",
            str(repo),
        ]
        proc = subprocess.run(argv, capture_output=True, env=dict(env), check=False, timeout=3600)
        if proc.returncode != 0 and b"unknown command" in proc.stderr:
            # gitleaks < 8.19 spells it "detect --source".
            argv[1:2] = ["detect", f"--source={repo}"]
            argv.pop()
            proc = subprocess.run(argv, capture_output=True, env=dict(env), check=False)
        if proc.returncode != 0:
            raise ScanError(
                f"gitleaks failed (exit {proc.returncode}): "
                f"{proc.stderr.decode(errors='replace').strip()[-300:]}"
            )
        try:
            items = json.loads(report.read_text(encoding="utf-8") or "[]")
        except (OSError, ValueError) as exc:
            raise ScanError(f"gitleaks wrote no readable report: {exc}") from exc
    findings: list[Finding] = []
    for item in items:
        findings.append(
            Finding(
                detector=GITLEAKS_DETECTOR,
                rule=str(item.get("RuleID", "unknown")),
                action=Action.BLOCK,
                location=Location(
                    "file_content",
                    name=str(item.get("File", "")) or None,
                    commit=str(item.get("Commit", "")) or None,
                    line=item.get("StartLine") if isinstance(item.get("StartLine"), int) else None,
                ),
                snippet="[REDACTED:gitleaks]",
            )
        )
    return findings
