"""The Hyperscan prefilter never changes what the DLP scan finds.

The prefilter only decides which rules, known-secret forms and decoders
run; these tests scan the same bytes with it and without it (as on a
machine without Hyperscan) and require identical findings: every rule's
true- and false-positive fixtures, alone, inside text and in every evasion
form; the known secrets in each of their encodings; the private-key forms;
and the benign corpus.
"""

from __future__ import annotations

import base64
import platform
import random
import re
import threading
from collections.abc import Iterator

import pytest

from bot_bottle.contracts.dlp import Direction, Finding, Location, ScanContext
from bot_bottle.dlp import ScanPipeline, prefilter, views
from bot_bottle.plugins import PluginHost
from bot_bottle.secrets import Secret
from bot_bottle_dlp.known_secrets import encodings
from bot_bottle_dlp.rules import RULES
from bot_bottle_dlp.token_patterns import TokenPatternsDetector
from tests import dlp_corpus, dlp_evasions

SECRETS = (Secret("a-prompted-password-value"), Secret("sk-ant-oat01-" + "Zq8" * 31))
LOC = Location("body")


@pytest.fixture(autouse=True)
def _eager(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compile every prefilter at once: small fixtures would not reach the
    # token rules' compile_after, and the comparison would be vacuous.
    monkeypatch.setattr(prefilter, "lazy", False)


@pytest.fixture(scope="module")
def pipeline() -> ScanPipeline:
    return ScanPipeline.from_host(PluginHost().load(), Direction.OUTBOUND)


def _key(findings: list[Finding]) -> list[tuple[object, ...]]:
    return [
        (f.detector, f.rule, f.action, f.location, f.snippet)
        for f in sorted(findings, key=lambda f: (f.location.offset or 0, f.detector, f.rule))
    ]


def _both(pipeline: ScanPipeline, body: bytes, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Findings with the prefilter, after checking they equal those without."""
    fast = pipeline.scan_bytes(body, LOC, known_secrets=SECRETS)
    with monkeypatch.context() as m:
        m.setattr(prefilter, "enabled", False)
        assert not prefilter.available()
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
                yield f"{rule.id}-{kind}{n}-glued", b"x" + raw + b"x"


FIXTURES = list(_fixture_bodies())


def test_hyperscan_is_used_where_it_has_wheels() -> None:
    # The fast path must really run on the machines CI and the bundle use;
    # elsewhere (Linux aarch64: no wheel) the scan runs without it.
    if platform.machine() != "x86_64":
        pytest.skip("hyperscan ships wheels for x86_64 only; nothing to compare here")
    assert prefilter.available()
    assert views._GATE.matching(b"x" * 10) is not None  # pyright: ignore[reportPrivateUsage]


@pytest.mark.parametrize(("name", "body"), FIXTURES, ids=[n for n, _ in FIXTURES])
def test_rule_fixtures_find_the_same(
    name: str, body: bytes, pipeline: ScanPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    del name
    _both(pipeline, body, monkeypatch)
    ctx = ScanContext(Direction.OUTBOUND, LOC)
    fast = TokenPatternsDetector().scan(body, ctx)
    slow = TokenPatternsDetector(prefilter=False).scan(body, ctx)
    assert _key(fast) == _key(slow)


@pytest.mark.parametrize("rule", [r for r in RULES if r.tp], ids=lambda r: r.id)
def test_true_positives_in_every_evasion_form_find_the_same(
    rule: object, pipeline: ScanPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    tp = rule.tp[0]  # type: ignore[attr-defined]
    for form, body in dlp_evasions.token_forms(tp).items():
        try:
            _both(pipeline, body, monkeypatch)
        except AssertionError as exc:
            raise AssertionError(f"{form}: {exc}") from None


def test_the_evasion_token_is_still_found_in_every_form(
    pipeline: ScanPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    for form, body in {**dlp_evasions.token_forms(), **dlp_evasions.key_forms()}.items():
        rules = _both(pipeline, body, monkeypatch)
        assert {"github-pat", "private-key"} & set(rules), form


def test_known_secrets_in_every_encoding_find_the_same(
    pipeline: ScanPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    for secret in SECRETS:
        for form, name in encodings(secret.reveal()).items():
            for body in (form, b"payload " + form + b" end", form.swapcase()):
                rules = _both(pipeline, body, monkeypatch)
                if body is form:
                    assert "known-secret" in rules, name


def test_benign_corpus_finds_the_same(
    pipeline: ScanPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, body in dlp_corpus.benign_outbound().items():
        try:
            _both(pipeline, body, monkeypatch)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def test_decoded_views_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = [
        dlp_corpus.typical_request(),
        dlp_corpus.chat_request("see", attachment="QUJD" * 300),
        b"data=" + b"%41%42" * 3000,  # more escapes than the prefilter hands over
        # Base64 runs of exactly the shortest length, at the start, padded.
        base64.b64encode(b"abcdefghijklmnopqr") + b" tail",
        b"x " + base64.b64encode(b"abcdefghijklmnopqr") + b" y",
        b"k=" + base64.b64encode(b"abcdefghijklmnopq") + b"==x",
        *dlp_evasions.token_forms().values(),
        *_hex_sep_bodies()[3000:],
    ]
    for body in bodies:
        fast = [(v.data, v.segments) for v in views.build_views(body)]
        with monkeypatch.context() as m:
            m.setattr(prefilter, "enabled", False)
            slow = [(v.data, v.segments) for v in views.build_views(body)]
        assert fast == slow, body[:100]


def test_base64_runs_found_with_find_are_the_runs_re2_finds() -> None:
    rnd = random.Random(17)
    alphabet = b"Ab9+/_-= =.\n\xc3\xa9"
    bodies = [bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 160))) for _ in range(3000)]
    bodies += [b"A" * 24, b"A" * 23, b"A" * 24 + b"===B", b"x" + b"A" * 30 + b"==" + b"B" * 24]
    bodies += [dlp_corpus.typical_request(), *dlp_evasions.token_forms().values()]
    for body in bodies:
        expected = list(views._spans(views._B64_RUN, body))  # pyright: ignore[reportPrivateUsage]
        assert list(views._b64_runs(body)) == expected, body  # pyright: ignore[reportPrivateUsage]


def test_a_run_repeated_in_a_body_is_decoded_at_every_place() -> None:
    # A chat body resends the same ids and blobs: every copy of a run is a
    # segment of its own (a finding is located at each), decoded alike.
    token = dlp_evasions.TOKEN.encode()
    plain = base64.b64encode(b"key " + token)
    spaced = b" ".join(plain[i : i + 4] for i in range(0, len(plain), 4))
    for run in (plain, spaced):
        body = b"a " + run + b" b; " + run + b" c; " + run
        once = [(enc, dec) for _, _, enc, dec in views.decode_runs(b"a " + run + b" b")]
        found = views.decode_runs(body)
        step = len(run) + 4
        assert [s for s, _, _, _ in found] == [2, 2 + step, 2 + 2 * step]
        assert [(enc, dec) for _, _, enc, dec in found] == once * 3
        assert any(token in dec for _, dec in once)


def test_a_short_buffer_without_an_escape_skips_the_decoders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # decode_runs answers "nothing" for a buffer shorter than a base64 run
    # with no escape marker, without running the decoders: they agree.
    rnd = random.Random(19)
    alphabet = b"aZ9+/_-=.%&;#\\u\n\r\x00 :,xX3D\xc3\xa9\xef\xbc\xa1"
    bodies = [bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30))) for _ in range(4000)]
    bodies += [b"/v1/messages", b"beta=true", b"a%67hp_b", b"x=3Dy", b"x=\ny", b"&#103;hp_"]
    fast = [views.decode_runs(body) for body in bodies]
    monkeypatch.setattr(views, "_SHORT_MARKER", re.compile(b""))  # matches every buffer
    for body, found in zip(bodies, fast, strict=True):
        assert views.decode_runs(body) == found, body
    assert any(fast), "no short body decoded at all: the test reaches no decoder"


def _hex_sep_bodies() -> list[bytes]:
    rnd = random.Random(18)
    alphabet = b"0a9F:- ,x\\.Xg\n"
    bodies = [bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 200))) for _ in range(3000)]
    floor = b":".join([b"6a"] * 16)  # the shortest run: 16 bytes, one separator each
    assert len(floor) == views._MIN_HEX_SEP  # pyright: ignore[reportPrivateUsage]
    bodies += [
        floor,  # the whole buffer
        floor[:-1],  # one short of the floor
        b"x" + floor,  # at the end
        floor + b"x",  # at the start
        b"zz" + b":".join([b"6a"] * 15) + b":6",  # cut by the end of the buffer
        b"6a:" * 40 + b"q" + floor + b"q" + b"6a, " * 20,  # several runs, separated
        b" " * 60 + floor,  # a long run of separators before the hex
        b"\\x41" * 16,
        b"\\x41" * 15 + b"\\x4",
        b"0x41, " * 16,
        b"0X41,0x42 " * 8,
        b"-" * 100,
        b"de ad be ef " * 20 + b"\n" + b"ca fe " * 3,
    ]
    bodies += [dlp_corpus.typical_request(), *dlp_evasions.token_forms().values()]
    return bodies


def test_hex_runs_found_through_long_runs_are_the_runs_re2_finds() -> None:
    for body in _hex_sep_bodies():
        expected = list(views._spans(views._HEX_SEP_RUN, body))  # pyright: ignore[reportPrivateUsage]
        assert list(views._hex_sep_runs(body)) == expected, body  # pyright: ignore[reportPrivateUsage]


def test_hex_with_separators_split_across_stream_chunks_is_found(
    pipeline: ScanPipeline,
) -> None:
    line = f"GITHUB_TOKEN={dlp_evasions.TOKEN}\n".encode()
    for form in (line.hex(":").encode(), line.hex(" ").encode()):
        body = b"x" * 70_000 + form + b"\n"
        whole = [(f.detector, f.rule) for f in pipeline.scan_bytes(body, LOC)]
        assert dlp_evasions.RULE in whole
        for cut in (70_000 + 1, 70_000 + len(form) // 2, 70_000 + len(form) - 1):
            stream = pipeline.stream(LOC)
            found = stream.feed(body[:cut]) + stream.feed(body[cut:]) + stream.finish()
            assert dlp_evasions.RULE in [(f.detector, f.rule) for f in found], cut


def test_a_pattern_hyperscan_refuses_is_always_reported() -> None:
    if not prefilter.available():
        pytest.skip("needs hyperscan (x86_64)")
    # An empty match is refused by Hyperscan: reported as possibly present.
    gate = prefilter.Prefilter([rb"ghp_[a-z]{4}", rb"a{0,3}"])
    assert gate.matching(b"nothing here") == frozenset({1})
    assert gate.matching(b"ghp_abcd") == frozenset({0, 1})


def test_a_slow_compile_waits_until_enough_has_been_scanned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not prefilter.available():
        pytest.skip("needs hyperscan (x86_64)")
    monkeypatch.setattr(prefilter, "lazy", True)
    gate = prefilter.Prefilter([rb"q{3}[0-9]{5}x"], compile_after=100)
    assert gate.matching(b"a" * 60) is None  # not compiled yet: run everything
    assert gate.matching(b"a" * 60) == frozenset()  # 120 bytes seen: compiled
    assert gate.matching(b"qqq12345x") == frozenset({0})


def test_too_many_located_hits_fall_back_to_the_full_scan() -> None:
    if not prefilter.available():
        pytest.skip("needs hyperscan (x86_64)")
    gate = prefilter.Prefilter([rb"%[0-9A-F]{2}"], locate=[3], max_positions=4)
    assert gate.scan(b"%41 %42") == (frozenset({0}), {0: [0, 4]})
    assert gate.scan(b"%41" * 5) is None


def test_warm_compiles_a_lazy_prefilter_before_its_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not prefilter.available():
        pytest.skip("needs hyperscan (x86_64)")
    monkeypatch.setattr(prefilter, "lazy", True)
    gate = prefilter.Prefilter([rb"w{3}[0-9]{5}warm"], compile_after=1 << 40)
    assert gate.matching(b"www12345warm") is None  # not compiled yet: run everything
    thread = prefilter.warm()
    assert thread is not None
    thread.join(120)
    assert gate.matching(b"www12345warm") == frozenset({0})
    assert prefilter.warm() is None  # nothing left to compile


def test_a_slow_compile_does_not_hold_up_another_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # warm() compiles the token rules (~0.4 s) while a request's first scan
    # compiles the views' gate: the gate must not wait for the rules.
    if not prefilter.available():
        pytest.skip("needs hyperscan (x86_64)")
    slow = prefilter.Prefilter([rb"slowset[0-9]{3}"])
    quick = prefilter.Prefilter([rb"quickset[0-9]{3}"])
    entered, release = threading.Event(), threading.Event()
    real = prefilter._Compiled  # pyright: ignore[reportPrivateUsage]

    def compiled(
        patterns: tuple[bytes, ...], caseless: tuple[bool, ...], locate: tuple[int, ...]
    ) -> object:
        if patterns == (rb"slowset[0-9]{3}",):
            entered.set()
            release.wait(60)
        return real(patterns, caseless, locate)

    monkeypatch.setattr(prefilter, "_Compiled", compiled)
    compiling = threading.Thread(target=slow.matching, args=(b"x",))
    compiling.start()
    assert entered.wait(60)
    try:
        answers: list[object] = []
        other = threading.Thread(target=lambda: answers.append(quick.matching(b"quickset123")))
        other.start()
        other.join(60)
        assert answers == [frozenset({0})]
    finally:
        release.set()
        compiling.join(60)
    assert slow.matching(b"slowset123") == frozenset({0})
