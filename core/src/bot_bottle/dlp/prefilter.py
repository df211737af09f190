"""Which of many patterns occur in a buffer, in one pass (Hyperscan, optional).

The DLP scan runs ~150 token rules, a dozen decoders' run-finding regexes
and every encoded form of each known secret over every body. Each RE2 pass
costs ~1.7 ms per MB, whatever the pattern; on most bodies almost none of
them match anything. A :class:`Prefilter` compiles the patterns into one
Hyperscan database (PyPI ``hyperscan``: Intel's multi-pattern engine,
SIMD, ~2 GB/s for this set) and answers "which of these patterns match
somewhere in ``data``": the caller then runs its exact RE2 pass only for
those, so the findings are the same as without the prefilter.

Hyperscan is optional. Where it is not installed or not usable (no wheel
for the machine, a CPU without SSSE3), or ``BOT_BOTTLE_DLP_NO_HYPERSCAN=1``
is set, :meth:`Prefilter.matching` returns ``None`` ("unknown: run
everything") and the scan is exactly what it was, only slower.

Hyperscan's dialect differs from RE2's in corners (``\\s`` also matches a
vertical tab; ``$`` also matches before a final newline): each is a
*superset*, so a pattern is never reported absent where RE2 would match. A
pattern Hyperscan cannot compile exactly is compiled in its prefilter mode
(a superset again), and one it cannot compile at all is always reported.
``plugins/dlp/tests/test_prefilter.py`` checks that findings are identical
with and without the prefilter on every rule's fixtures and their evasions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:  # pragma: no cover - depends on the machine
    import hyperscan as _hs
except Exception:  # ImportError, or a wheel whose library fails to load
    _hs = None

#: Set to ``False`` (tests, benchmarks) to scan as if Hyperscan were absent.
enabled = os.environ.get("BOT_BOTTLE_DLP_NO_HYPERSCAN", "") not in ("1", "true", "yes")
#: A directory of databases serialized by :func:`save`: a set found there is
#: loaded, not compiled. ``$BOT_BOTTLE_DLP_HS_CACHE``, else ``hscache`` in the
#: interpreter's prefix, where the bundle image writes them when it is built
#: (its daemons get no inherited environment to name it).
cache_dir = os.environ.get("BOT_BOTTLE_DLP_HS_CACHE") or str(Path(sys.prefix) / "hscache")
#: Set to ``False`` (tests) to compile every prefilter on its first scan,
#: whatever its ``compile_after``.
lazy = True

_NAMED_GROUP = re.compile(rb"\(\?P<\w+>")


def available() -> bool:
    """Hyperscan is installed, loads, and is not switched off."""
    return enabled and _hs is not None


def _hs_pattern(pattern: bytes) -> bytes:
    # Hyperscan reports no captures: named groups become plain groups.
    return _NAMED_GROUP.sub(b"(?:", pattern)


class Prefilter:
    """The patterns (RE2 syntax, bytes) of one set; ``caseless[i]`` makes
    pattern ``i`` match in any ASCII letter case.

    The database is compiled on first use and shared by every prefilter of
    the same patterns in the process. A set that is slow to compile (the
    token rules: ~0.4 s) passes ``compile_after``: until that many bytes
    have been scanned through it, it answers "unknown" (the full scan runs),
    so a one-shot ``dlp scan`` or a small push does not pay for a compile
    that only a long-running egress or a large scan earns back (egress
    compiles it at start, in the background: :func:`warm`).
    """

    def __init__(
        self,
        patterns: Sequence[bytes],
        caseless: Sequence[bool] = (),
        *,
        locate: Sequence[int] = (),
        max_positions: int = 4096,
        compile_after: int = 0,
    ) -> None:
        self.size = len(patterns)
        n = len(patterns)
        self._key = (
            tuple(patterns),
            tuple(i < len(caseless) and bool(caseless[i]) for i in range(n)),
            tuple(locate[i] if i < len(locate) else 0 for i in range(n)),
        )
        self._locate = frozenset(i for i in range(n) if self._key[2][i])
        self.max_positions = max_positions
        self._local = threading.local()
        self._mine: _Compiled | None = None
        self._compile_after = compile_after
        self._seen = 0
        with _ALL_LOCK:  # warm() may be listing them in another thread
            _ALL.add(self)

    def _compiled(self) -> _Compiled:
        # Held here too: hashing the key (all the patterns) costs ~1 us a scan.
        if self._mine is not None:
            return self._mine
        compiled = _CACHE.get(self._key)
        if compiled is None:
            with _LOCK:
                lock = _COMPILING.setdefault(self._key, threading.Lock())
            # One compile per set at a time; other sets compile meanwhile (a
            # request's first scan does not wait for warm()'s token rules).
            with lock:
                compiled = _CACHE.get(self._key)
                if compiled is None:
                    compiled = _Compiled(*self._key)
                    with _LOCK:
                        _CACHE[self._key] = compiled
                        _COMPILING.pop(self._key, None)
                        while len(_CACHE) > _CACHE_SIZE:
                            del _CACHE[next(iter(_CACHE))]
        self._mine = compiled
        return compiled

    def matching(self, data: bytes) -> frozenset[int] | None:
        """Indices of the patterns that match somewhere in ``data``, or
        ``None`` when that is not known (no Hyperscan: run them all)."""
        result = self.scan(data)
        return None if result is None else result[0]

    def scan(self, data: bytes) -> tuple[frozenset[int], dict[int, list[int]] | None] | None:
        """:meth:`matching`, and for the patterns given a fixed match length
        in ``locate``, the sorted start offsets of their matches (``None``
        for the whole result when more than ``max_positions`` were found:
        the caller then looks for them itself)."""
        if not self.size:
            return frozenset(), {}
        if not available():
            return None
        if self._mine is None and lazy and self._compile_after and self._key not in _CACHE:
            self._seen += len(data)
            if self._seen < self._compile_after:
                return None
        compiled = self._compiled()
        if compiled.db is None or compiled.always & self._locate:
            return None
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            # One scratch per thread: a scan releases the GIL.
            try:
                scratch = self._local.scratch = _hs.Scratch(compiled.db)  # type: ignore[union-attr]
            except Exception:
                return None
        found: set[int] = set(compiled.always)
        if not self._locate:

            def on_any(i: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
                found.add(i)

            try:
                compiled.db.scan(data, match_event_handler=on_any, scratch=scratch)
            except Exception:
                return None  # fail open to the full scan, never to a smaller one
            return frozenset(found), {}
        positions: dict[int, list[int]] = {i: [] for i in self._locate}
        lengths = self._key[2]
        budget = [self.max_positions]

        def on_match(i: int, _start: int, end: int, _flags: int, _ctx: object) -> bool:
            found.add(i)
            where = positions.get(i)
            if where is not None:
                where.append(end - lengths[i])
                budget[0] -= 1
                return budget[0] < 0  # too many to hand over one by one: stop
            return False

        try:
            compiled.db.scan(data, match_event_handler=on_match, scratch=scratch)
        except Exception as exc:
            if _hs is not None and isinstance(exc, _hs.ScanTerminated):
                # Stopped early: which patterns occur is no longer known.
                return None
            return None  # fail open to the full scan, never to a smaller one
        for where in positions.values():
            where.sort()  # reported by end offset: in order already, as a rule
        return frozenset(found), positions


class _Compiled:
    def __init__(
        self, patterns: tuple[bytes, ...], caseless: tuple[bool, ...], locate: tuple[int, ...]
    ) -> None:
        #: Patterns Hyperscan could not compile: always reported.
        self.always: frozenset[int] = frozenset()
        self.db: Any = None
        if _hs is None:
            return
        flags = [
            (0 if locate[i] else _hs.HS_FLAG_SINGLEMATCH)
            | (_hs.HS_FLAG_CASELESS if caseless[i] else 0)
            for i in range(len(patterns))
        ]
        if _load(self, (patterns, caseless, locate)):
            return
        exprs = [_hs_pattern(p) for p in patterns]
        ids = list(range(len(exprs)))
        try:
            self.db = _compile(exprs, ids, flags)
            return
        except Exception:  # noqa: S110 -- one of them is refused: found below
            pass
        # Find the patterns it refuses; give them prefilter mode, or leave
        # them out and always report them.
        always: set[int] = set()
        for i in ids:
            try:
                _compile([exprs[i]], [i], [flags[i]])
            except Exception:
                try:
                    flags[i] |= _hs.HS_FLAG_PREFILTER
                    _compile([exprs[i]], [i], [flags[i]])
                except Exception:
                    always.add(i)
        self.always = frozenset(always)
        keep = [i for i in ids if i not in always]
        try:
            self.db = _compile([exprs[i] for i in keep], keep, [flags[i] for i in keep])
        except Exception:
            self.db = None  # matching() then says "unknown": the full scan runs


def warm(*, background: bool = True) -> threading.Thread | None:
    """Compile every prefilter made so far, whatever its ``compile_after``.

    A long-running scanner (the egress daemon) calls this once its detectors
    are loaded, so the token rules' database (~0.4 s to compile) is ready
    before the traffic that would otherwise pay for it mid-request. In the
    background by default (a daemon thread, returned); nothing to do, or no
    Hyperscan: ``None``.
    """
    with _ALL_LOCK:
        pending = [p for p in _ALL if p._mine is None]
    if not pending or not available():
        return None
    pending.sort(key=lambda p: p._compile_after)  # the quick ones first

    def compile_all() -> None:
        for p in pending:
            try:
                p._compiled()
            except Exception:  # noqa: S112 -- the scan compiles (or fails open) itself later
                continue

    if not background:
        compile_all()
        return None
    thread = threading.Thread(target=compile_all, name="dlp-prefilter-warm", daemon=True)
    thread.start()
    return thread


def _cache_name(key: tuple[tuple[bytes, ...], tuple[bool, ...], tuple[int, ...]]) -> str:
    # The library's version is in the name: another build never loads it.
    assert _hs is not None
    digest = hashlib.sha256(repr((_hs.__name__, _hs_version(), key)).encode())
    return digest.hexdigest()[:32] + ".hsdb"


def _hs_version() -> str:
    try:
        from importlib.metadata import version

        return version("hyperscan")
    except Exception:
        return "?"


def _load(
    compiled: _Compiled, key: tuple[tuple[bytes, ...], tuple[bool, ...], tuple[int, ...]]
) -> bool:
    """Fill ``compiled`` from :data:`cache_dir` when it holds this set. Any
    failure (none there, another CPU's database, a damaged file) is a miss:
    the caller compiles as if there were no cache."""
    if not cache_dir or _hs is None:
        return False
    try:
        raw = (Path(cache_dir) / _cache_name(key)).read_bytes()
        head, _, body = raw.partition(b"\n")
        meta = json.loads(head)
        always = frozenset(int(i) for i in meta["always"])
        db = _hs.loadb(body, _hs.HS_MODE_BLOCK) if meta["db"] else None
    except Exception:
        return False
    compiled.always, compiled.db = always, db
    return True


def save(directory: Path) -> int:
    """Serialize every database compiled in this process into ``directory``
    (for :data:`cache_dir`); the number written. The bundle image runs this
    once it is built, so a bottle's egress loads its token rules instead of
    spending ~0.4 s of CPU compiling them."""
    if _hs is None:
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        items = list(_CACHE.items())
    written = 0
    for key, compiled in items:
        meta = {"always": sorted(compiled.always), "db": compiled.db is not None}
        body = bytes(_hs.dumpb(compiled.db)) if compiled.db is not None else b""
        target = directory / _cache_name(key)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(json.dumps(meta).encode() + b"\n" + body)
        tmp.replace(target)
        written += 1
    return written


def _compile(exprs: list[bytes], ids: list[int], flags: list[int]) -> Any:
    assert _hs is not None
    if not exprs:
        return None
    db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    db.compile(expressions=exprs, ids=ids, elements=len(exprs), flags=flags)
    return db


_CACHE: dict[tuple[tuple[bytes, ...], tuple[bool, ...], tuple[int, ...]], _Compiled] = {}
_CACHE_SIZE = 32
_LOCK = threading.Lock()
#: A lock per set being compiled.
_COMPILING: dict[tuple[tuple[bytes, ...], tuple[bool, ...], tuple[int, ...]], threading.Lock] = {}
#: Every prefilter made, for warm().
_ALL: weakref.WeakSet[Prefilter] = weakref.WeakSet()
_ALL_LOCK = threading.Lock()
