"""The native run finder never changes what the DLP scan finds.

``bot_bottle_dlp._runs`` (C, through the ``dlp_accelerators`` hook) finds
the base64 runs, the spaced-base64 candidates and the hex-with-separators
regions the decoded views start from. These tests scan the same bytes with
it and without it (the views' Python run finding) and require identical
findings: every rule's fixtures, alone and in every evasion form, the known
secrets in each of their encodings, the private-key forms and the benign
corpus; and, on random and adversarial bytes, identical runs.
A build with ``-DRUNS_UNFILTERED`` (compiled here with gcc) returns every run
and match, none dropped, and must equal the views' regexes exactly; streams
fed in chunks find the same; odd buffers and failed allocations are handled.

Under AddressSanitizer/UBSan (the C parses hostile input)::

    mkdir -p /tmp/asan/bot_bottle_dlp
    gcc -shared -fPIC -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \\
        -I"$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \\
        plugins/dlp/src/bot_bottle_dlp/_runs.c -o /tmp/asan/bot_bottle_dlp/_runs$(
        .venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \\
        ASAN_OPTIONS=detect_leaks=0 BOT_BOTTLE_DLP_RUNS=/tmp/asan/bot_bottle_dlp \\
        .venv/bin/python -m pytest -q tests/test_dlp_native.py -k fuzz

(``BOT_BOTTLE_DLP_RUNS`` names a directory whose ``_runs`` module the fuzz
tests load instead of the installed one.)
"""

from __future__ import annotations

import array
import base64
import importlib.util
import os
import random
import subprocess
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bot_bottle.contracts.dlp import Direction, Finding, Location, Runs
from bot_bottle.dlp import ScanPipeline, prefilter, views
from bot_bottle.dlp.pipeline import use_accelerator
from bot_bottle.plugins import PluginHost
from bot_bottle.secrets import Secret
from bot_bottle_dlp.known_secrets import encodings
from bot_bottle_dlp.native import ENV_OFF, NativeRunFinder
from bot_bottle_dlp.rules import RULES
from tests import dlp_corpus, dlp_evasions

SECRETS = (Secret("a-prompted-password-value"), Secret("sk-ant-oat01-" + "Zq8" * 31))
LOC = Location("body")


def _runs_module() -> ModuleType:
    """The ``_runs`` under test: the installed one, or a sanitizer build."""
    where = os.environ.get("BOT_BOTTLE_DLP_RUNS")
    if not where:
        from bot_bottle_dlp import _runs

        return _runs
    path = next(Path(where).glob("_runs*.so"))
    spec = importlib.util.spec_from_file_location("bot_bottle_dlp._runs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def find() -> Callable[[bytes], Runs]:
    # The dev venv and CI build the extension (gcc and the Python headers are
    # there): a missing one is a broken build, not a reason to skip.
    finder = NativeRunFinder()
    assert finder.is_available().ok, finder.is_available().detail
    return _runs_module().find


@pytest.fixture(autouse=True)
def _python_runs_after() -> Iterator[None]:
    yield
    views.use_run_finder(None)


@pytest.fixture(autouse=True)
def _eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefilter, "lazy", False)


@pytest.fixture(scope="module")
def pipeline() -> ScanPipeline:
    return ScanPipeline.from_host(PluginHost().load(), Direction.OUTBOUND)


def _key(findings: list[Finding]) -> list[tuple[object, ...]]:
    return [
        (f.detector, f.rule, f.action, f.location, f.snippet)
        for f in sorted(findings, key=lambda f: (f.location.offset or 0, f.detector, f.rule))
    ]


def _both(pipeline: ScanPipeline, body: bytes, find: Callable[[bytes], Runs]) -> list[str]:
    """Findings with the native run finder, after checking they equal those without."""
    views.use_run_finder(find)
    fast = pipeline.scan_bytes(body, LOC, known_secrets=SECRETS)
    views.use_run_finder(None)
    slow = pipeline.scan_bytes(body, LOC, known_secrets=SECRETS)
    assert _key(fast) == _key(slow), body[:200]
    return [f.rule for f in fast]


def _fixture_bodies() -> Iterator[tuple[str, bytes]]:
    for rule in RULES:
        for kind, texts in (("tp", rule.tp), ("fp", rule.fp)):
            for n, text in enumerate(texts):
                raw = text.encode()
                yield f"{rule.id}-{kind}{n}", raw
                yield f"{rule.id}-{kind}{n}-in-text", b"see:" + raw + b"\nthanks"
                yield f"{rule.id}-{kind}{n}-b64", b"x " + base64.b64encode(raw) + b" y"


def test_the_pipeline_uses_the_native_finder_and_the_switch_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = PluginHost().load()
    finder = use_accelerator(host)
    assert isinstance(finder, NativeRunFinder)
    assert views.run_finder() is not None
    monkeypatch.setenv(ENV_OFF, "1")
    assert use_accelerator(host) is None
    assert views.run_finder() is None
    assert "off" in NativeRunFinder().is_available().detail


def test_plugins_list_says_whether_the_accelerator_is_in_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot_bottle.cli import main

    assert main(["plugins", "list"]) == 0
    assert "dlp accelerator native_runs: in use" in capsys.readouterr().out
    monkeypatch.setenv(ENV_OFF, "1")
    assert main(["plugins", "list"]) == 0
    assert f"dlp accelerator native_runs: off ({ENV_OFF}=1)" in capsys.readouterr().out


def test_rule_fixtures_find_the_same(pipeline: ScanPipeline, find: Callable[[bytes], Runs]) -> None:
    for name, body in _fixture_bodies():
        try:
            _both(pipeline, body, find)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def test_true_positives_in_every_evasion_form_find_the_same(
    pipeline: ScanPipeline, find: Callable[[bytes], Runs]
) -> None:
    for rule in RULES:
        if not rule.tp:
            continue
        for form, body in dlp_evasions.token_forms(rule.tp[0]).items():
            try:
                _both(pipeline, body, find)
            except AssertionError as exc:
                raise AssertionError(f"{rule.id} {form}: {exc}") from None


def test_the_evasion_token_is_found_in_every_form(
    pipeline: ScanPipeline, find: Callable[[bytes], Runs]
) -> None:
    for form, body in {**dlp_evasions.token_forms(), **dlp_evasions.key_forms()}.items():
        rules = _both(pipeline, body, find)
        assert {"github-pat", "private-key"} & set(rules), form


def test_known_secrets_in_every_encoding_find_the_same(
    pipeline: ScanPipeline, find: Callable[[bytes], Runs]
) -> None:
    for secret in SECRETS:
        for form, name in encodings(secret.reveal()).items():
            for body in (form, b"payload " + form + b" end", form.swapcase()):
                rules = _both(pipeline, body, find)
                if body is form:
                    assert "known-secret" in rules, name


def test_benign_corpus_finds_the_same(
    pipeline: ScanPipeline, find: Callable[[bytes], Runs]
) -> None:
    for name, body in dlp_corpus.benign_outbound().items():
        try:
            assert _both(pipeline, body, find) == [], name
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


# -- the runs themselves, on random and adversarial bytes ---------------------

_WORDS = [
    b"A", b"z", b"0", b"9", b"+", b"/", b"=", b"==", b" ", b"  ", b"     ", b"\t", b"\n",
    b"\r\n", b"\r", b" \n ", b"\n\n", b"-", b"_", b":", b",", b"\\x", b"0x", b"\x00", b"\xff",
    b"\xc3\xa9", b"f", b"Q", b".", b"by", b"Base64", b"RFC", b"2045", b"QUJD", b"ab", b"1",
    b"de:ad", b"ff-", b"%41", b"\\u0041", b"6768705f", b"deadBEEF", b"ffff",
]  # fmt: skip


def _b64_decoded(data: bytes, s: int, e: int) -> bool:
    """decode_runs makes something of this base64 run."""
    out: list[tuple[int, int, str, bytes]] = []
    views._decode_b64_run(data, s, e, out)  # pyright: ignore[reportPrivateUsage]
    return bool(out)


def _spaced_decoded(data: bytes, s: int, e: int) -> bool:
    """decode_runs makes something of this spaced-base64 match."""
    out: list[tuple[int, int, str, bytes]] = []
    views._decode_spaced(data, out, views._Hits(data), [(s, e)])  # pyright: ignore[reportPrivateUsage]
    return bool(out)


def _check_runs(find: Callable[[bytes], Runs], data: bytes) -> None:
    b64, spaced, hex_regions = find(data)
    # The runs and matches Python finds, less some it would decode to
    # nothing: never one it makes something of.
    every = list(views._b64_runs(data))  # pyright: ignore[reportPrivateUsage]
    assert set(b64) <= set(every), data
    assert [r for r in every if _b64_decoded(data, *r)] == [
        r for r in b64 if _b64_decoded(data, *r)
    ], data
    hex_native = list(views._hex_sep_in(data, hex_regions))  # pyright: ignore[reportPrivateUsage]
    assert hex_native == list(views._hex_sep_runs(data)), data  # pyright: ignore[reportPrivateUsage]
    assert hex_native == list(views._spans(views._HEX_SEP_RUN, data)), data  # pyright: ignore[reportPrivateUsage]
    matches = list(views._spans(views._B64_SPACED_RUN, data))  # pyright: ignore[reportPrivateUsage]
    assert set(spaced) <= set(matches), data
    assert [m for m in matches if _spaced_decoded(data, *m)] == [
        m for m in spaced if _spaced_decoded(data, *m)
    ], data
    for found in (b64, spaced, hex_regions):
        assert all(0 <= s < e <= len(data) for s, e in found)
        assert found == sorted(found)


def _random_bodies(seed: int, count: int) -> Iterator[bytes]:
    rnd = random.Random(seed)
    for _ in range(count):
        size = rnd.choice([0, 1, 2, 22, 23, 24, 25, 26, 46, 47, 48, 64, 200, 1000, 5000])
        kind = rnd.random()
        if kind < 0.2:
            yield rnd.randbytes(size)
        elif kind < 0.6:
            pool = rnd.sample(_WORDS, rnd.randint(2, len(_WORDS)))
            pieces: list[bytes] = []
            while sum(map(len, pieces)) < size:
                piece = rnd.choice(pool)
                pieces.append(piece * (rnd.randint(2, 40) if rnd.random() < 0.15 else 1))
            yield b"".join(pieces)
        else:
            # Real encodings cut at random places, in random company.
            token = rnd.randbytes(rnd.randint(10, 60))
            b64 = base64.b64encode(token)
            encoded = rnd.choice(
                [
                    base64.b64encode(token),
                    base64.urlsafe_b64encode(token),
                    token.hex().encode(),
                    token.hex(":").encode(),
                    token.hex(" ").encode(),
                    b"".join(b"\\x%02x" % c for c in token),
                    b" ".join(b64[i : i + rnd.randint(1, 8)] for i in range(0, 80, 4)),
                    b"\n".join((b64 * 3)[i : i + 20] for i in range(0, 240, 20)),
                ]
            )
            cut = rnd.randint(0, len(encoded))
            before = rnd.choice([b"", b" ", b"x", b"==", b"\x00"])
            after = rnd.choice([b"", b"=", b" end", b"\n", b"\xff"])
            yield before + encoded[: max(cut, 1)] + after


def test_fuzz_runs_are_the_runs_python_finds(find: Callable[[bytes], Runs]) -> None:
    for body in _random_bodies(1, 6000):
        _check_runs(find, body)


def _spaced_bodies(seed: int, count: int) -> Iterator[bytes]:
    """Base64 of text broken by separators the pattern takes and some it
    does not, with short words in between: every shape of chain."""
    rnd = random.Random(seed)
    seps = [b" ", b"  ", b"    ", b"     ", b"\t", b"\n", b"\r\n", b" \n\t", b"\n\n", b"\r", b"."]
    shorts = [b"ab", b"1", b"x9", b"+", b"Q", b"==", b"a=b"]
    for _ in range(count):
        text = (
            rnd.choice([b"ghp_", b"", b"key: "]) + rnd.randbytes(rnd.randint(0, 8)).hex().encode()
        )
        encoded = base64.b64encode(text * rnd.randint(1, 4))
        pieces: list[bytes] = []
        pos = 0
        while pos < len(encoded):
            step = rnd.randint(1, 10)
            pieces.append(encoded[pos : pos + step])
            pos += step
            pieces.append(rnd.choice(seps))
            if rnd.random() < 0.2:
                pieces += [rnd.choice(shorts), rnd.choice(seps)]
        yield b"".join(pieces[:-1]) + rnd.choice([b"", b"=", b"==", b"\n"])


def test_fuzz_spaced_base64_matches(find: Callable[[bytes], Runs]) -> None:
    decoded = 0
    for body in _spaced_bodies(3, 4000):
        _check_runs(find, body)
        decoded += bool(views.decode_runs(body))
    assert decoded > 500  # the bodies reach the decoder


def test_fuzz_runs_at_the_edges_and_in_long_runs(find: Callable[[bytes], Runs]) -> None:
    edges = [
        b"",
        b"A" * 23,
        b"A" * 24,
        b"A" * 24 + b"=",
        b"A" * 24 + b"==",
        b"A" * 24 + b"===",
        b"=" + b"A" * 24,
        b"\x00" * 100,
        b"\xff" * 100,
        b"0" * 47,
        b"0" * 46,
        b"6768705f" * 8,
        b"6768705F" * 8 + b"0",
        b"6768705f" * 7 + b"00ff00ff",
        b"6768705f" * 7 + b"00ffff",
        b"ABCDEF" * 6,
        b"de:" * 16,
        b"de:" * 15 + b"de",
        b"Ab1 " * 7,
        b"Ab1 " * 6 + b"Ab",
        b"Ab1 Cd2 Ef3 Gh4 Ij5 Kl6 Mn7",
        b"Ab1\r\nCd2\r\nEf3\r\nGh4\r\nIj5\r\nKl6\r\nMn7==",
        b"Ab1 \r Cd2 Ef3 Gh4 Ij5 Kl6 Mn7",
        b"Ab1     Cd2 Ef3 Gh4 Ij5 Kl6 Mn7",
        b"QUJD " * 10 + b"=",
        b"12 34 56 78 90 12 34 56 78 90 12",
        b"1234 5678 9012 3456 7890 1234 5678",
    ]
    # Very long runs: a 2 MB run of each class, and one broken near its end.
    long = [b"A" * 2_000_000, b"A1 " * 700_000, b"ab:" * 700_000, b"Q" * 1_000_000 + b"\x00A"]
    # A spaced match whose digit lies past MAX_RUN_BYTES: all letters where it is read.
    long.append(b"AbcDef " * 160_000 + b"Ab1 Cde")
    for body in edges + long:
        _check_runs(find, body)
    # Each edge case at every offset of a short buffer, and cut at every length.
    for body in edges[1:]:
        for pad in (b"", b" ", b"x", b".", b"\x00", b"=", b"\n"):
            _check_runs(find, pad + body)
            _check_runs(find, body + pad)
        for cut in range(len(body) + 1):
            _check_runs(find, body[:cut])


def test_hex_regions_without_separators_are_left_out(find: Callable[[bytes], Runs]) -> None:
    """A body of hashes costs no region (and no RE2 call) per hash; a region
    with the 15 separators the shortest match has is kept."""
    hashes = b"\n".join(b"sha256:" + os.urandom(32).hex().encode() for _ in range(50))
    assert find(hashes)[2] == []
    assert list(views._hex_sep_runs(hashes)) == []  # pyright: ignore[reportPrivateUsage]
    for body in (b"de:" * 15 + b"de", b"\\x41" * 16, b"0x41" * 16, b"6768" * 12 + b"-" * 15):
        assert find(body)[2] == [(0, len(body))], body
        _check_runs(find, body)
    assert find(b"6768" * 12 + b"-" * 14)[2] == []


def test_fuzz_decoded_views_are_the_same(find: Callable[[bytes], Runs]) -> None:
    for body in _random_bodies(2, 1500):
        views.use_run_finder(None)
        slow = views.decode_runs(body)
        views.use_run_finder(find)
        assert views.decode_runs(body) == slow, body[:200]


def test_find_takes_only_bytes_like_input() -> None:
    find: Any = _runs_module().find
    text = base64.b64encode(b"some text to find in a run")
    assert find(bytearray(text)) == ([(0, len(text))], [], [])
    assert find(memoryview(text)) == ([(0, len(text))], [], [])
    with pytest.raises(TypeError):
        find("A" * 30)
    with pytest.raises(TypeError):
        find(None)


# -- the run finding itself, with no run dropped ------------------------------


@pytest.fixture(scope="module")
def unfiltered(tmp_path_factory: pytest.TempPathFactory) -> Callable[[bytes], Runs]:
    """``_runs`` built with ``-DRUNS_UNFILTERED``: every base64 run, spaced
    match and hex region, none dropped as not worth decoding. The filters
    hide most runs of random bytes, so the leftmost-first matching is only
    checked exactly this way."""
    source = Path(__file__).parents[1] / "plugins/dlp/src/bot_bottle_dlp/_runs.c"
    out = tmp_path_factory.mktemp("unfiltered") / f"_runs{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-O1",
            "-DRUNS_UNFILTERED",
            f"-I{include}",
            str(source),
            "-o",
            str(out),
        ],
        check=True,
    )
    spec = importlib.util.spec_from_file_location("bot_bottle_dlp._runs", out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find


def _hex_regions(data: bytes) -> list[tuple[int, int]]:
    """The regions views._hex_sep_runs hands RE2."""
    classes = data.translate(views._HEX_SEP_CLASS)  # pyright: ignore[reportPrivateUsage]
    needle = b"a" * views._MIN_HEX_SEP  # pyright: ignore[reportPrivateUsage]
    regions: list[tuple[int, int]] = []
    pos = classes.find(needle)
    while pos != -1:
        end = classes.find(b" ", pos + len(needle))
        end = len(classes) if end == -1 else end
        regions.append((pos, end))
        pos = classes.find(needle, end)
    return regions


_PIECES = [
    b"a", b"ab", b"abc", b"ABCD", b"1", b"12", b"a1", b"abc1", b"+", b"/", b"-", b"_", b"9",
    b" ", b"  ", b"    ", b"     ", b"\t", b"\n", b"\r", b"\r\n", b" \n ", b"\n\r", b"\n\n",
    b"=", b"==", b".", b":", b",", b"\\x", b"0x", b"f", b"\x00", b"\xff",
]  # fmt: skip


def test_fuzz_unfiltered_runs_are_exactly_the_regex_matches(
    unfiltered: Callable[[bytes], Runs],
) -> None:
    rnd = random.Random(5)
    for _ in range(30000):
        pool = rnd.sample(_PIECES, rnd.randint(2, 10))
        body = b"".join(
            rnd.choice(pool) * (rnd.randint(2, 30) if rnd.random() < 0.2 else 1)
            for _ in range(rnd.randint(0, 80))
        )
        b64, spaced, hex_regions = unfiltered(body)
        assert b64 == list(views._b64_runs(body)), body  # pyright: ignore[reportPrivateUsage]
        assert spaced == list(views._spans(views._B64_SPACED_RUN, body)), body  # pyright: ignore[reportPrivateUsage]
        assert hex_regions == _hex_regions(body), body


# -- streams, buffers, errors -------------------------------------------------


def test_fuzz_streamed_findings_are_the_same(
    pipeline: ScanPipeline, find: Callable[[bytes], Runs]
) -> None:
    """Windows with carry-over cut runs anywhere (a run then starts the
    window, where every base64 alignment is tried)."""
    rnd = random.Random(8)
    bodies = list(_random_bodies(9, 300))
    found = 0
    for n in range(150):
        secret = rnd.choice([SECRETS[1].reveal().encode(), b"ghp_" + b"A1b2C3d4E5" * 3 + b"A1b2C3"])
        encoded = rnd.choice(
            [secret, base64.b64encode(secret), base64.b64encode(secret).hex().encode()]
        )
        filler = b"x" * rnd.randint(0, 6000)
        body = b" ".join([*rnd.sample(bodies, 3), filler, encoded, *rnd.sample(bodies, 2)])
        chunks: list[bytes] = []
        pos = 0
        while pos < len(body):
            size = rnd.choice([7, 1000, 4096, 5000])
            chunks.append(body[pos : pos + size])
            pos += size
        keys = []
        for finder in (find, None):
            views.use_run_finder(finder)
            stream = pipeline.stream(LOC, known_secrets=SECRETS)
            findings = [f for chunk in chunks for f in stream.feed(chunk)] + stream.finish()
            keys.append(sorted(map(repr, _key(findings))))
        assert keys[0] == keys[1], (n, body[:200])
        found += bool(keys[0])
    assert found == 150  # every body holds a secret the scan finds


def test_find_reads_contiguous_buffers_of_any_item_size(find: Callable[[bytes], Runs]) -> None:
    scan: Any = find  # any buffer, not only bytes
    text = base64.b64encode(b"some text to find in a run")
    words = array.array("I")
    words.frombytes(text)
    assert scan(words) == find(text)
    assert scan(memoryview(text).cast("I")) == find(text)
    with pytest.raises(BufferError):
        scan(memoryview(text * 2)[::2])
    held = bytearray(text)
    assert scan(held) == find(text)
    held.extend(b"x")  # the export ended with the call


def test_find_fails_cleanly_when_memory_runs_out(find: Callable[[bytes], Runs]) -> None:
    # CPython's test C API (set_nomemory); some distributions ship it apart
    # (Debian: libpython3.13-testsuite). The pyenv builds here have it.
    testcapi: Any = pytest.importorskip("_testcapi", reason="no _testcapi in this Python build")
    body = (base64.b64encode(b"some secret text here ok!") + b" " + b"de:ad:" * 20 + b" ") * 5
    body += b"U29tZSBz ZWNyZXQg dGV4dCBo ZXJlIG9r IQ==\n"
    want = find(body)
    assert [len(runs) for runs in want] == [5, 1, 5]
    failed = 0
    for start in range(60):
        testcapi.set_nomemory(start, 0)
        try:
            got = find(body)
        except MemoryError:
            failed += 1
            continue
        finally:
            testcapi.remove_mem_hooks()
        assert got == want
    assert failed > 10  # allocations inside the scan did fail
