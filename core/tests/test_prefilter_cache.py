"""The serialized Hyperscan databases (``prefilter.save`` / ``cache_dir``):
a set found in the cache is loaded, not compiled, and answers exactly as a
compiled one; anything unusable there is a miss, never an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot_bottle.dlp import prefilter

pytestmark = pytest.mark.skipif(
    not prefilter.available(), reason="hyperscan is not installed here (x86_64 only)"
)

PATTERNS = [rb"ghp_[A-Za-z0-9]{36}", rb"AKIA[0-9A-Z]{16}", rb"(?i)xoxb-[0-9]+-[a-z0-9]+"]
BODIES = [
    b"nothing to see",
    b"token ghp_" + b"a" * 36,
    b"AKIA" + b"B" * 16 + b" and xoxb-12-abc",
    b"XOXB-1-Z",
]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty in-process cache and a cache directory of this test's own."""
    monkeypatch.setattr(prefilter, "_CACHE", {})
    monkeypatch.setattr(prefilter, "lazy", False)
    cache = tmp_path / "hscache"
    monkeypatch.setattr(prefilter, "cache_dir", str(cache))
    return cache


def _answers(p: prefilter.Prefilter) -> list[frozenset[int] | None]:
    return [p.matching(body) for body in BODIES]


def test_a_saved_set_is_loaded_not_compiled_and_answers_the_same(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = _answers(prefilter.Prefilter(PATTERNS))
    assert compiled[0] == frozenset() and compiled[1] == frozenset({0})
    assert prefilter.save(fresh) == 1

    monkeypatch.setattr(prefilter, "_CACHE", {})

    def no_compile(*_a: object) -> None:
        raise AssertionError("compiled although the cache holds the set")

    monkeypatch.setattr(prefilter, "_compile", no_compile)
    assert _answers(prefilter.Prefilter(PATTERNS)) == compiled


def test_another_set_is_not_found_in_the_cache(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _answers(prefilter.Prefilter(PATTERNS))
    prefilter.save(fresh)
    monkeypatch.setattr(prefilter, "_CACHE", {})
    calls: list[int] = []
    real = prefilter._compile

    def counting(*a: object) -> object:
        calls.append(1)
        return real(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(prefilter, "_compile", counting)
    # Same patterns, one made caseless: a different database.
    p = prefilter.Prefilter(PATTERNS, [True, False, False])
    assert p.matching(b"GHP_" + b"a" * 36) == frozenset({0})
    assert calls


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad-header"])
def test_a_damaged_cache_file_is_compiled_around(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    expected = _answers(prefilter.Prefilter(PATTERNS))
    prefilter.save(fresh)
    (path,) = fresh.iterdir()
    raw = path.read_bytes()
    path.write_bytes(
        {
            "garbage": b'{"always": [], "db": true}\nnot a database',
            "truncated": raw[: len(raw) // 2],
            "bad-header": b"{not json\n" + raw.partition(b"\n")[2],
        }[damage]
    )
    monkeypatch.setattr(prefilter, "_CACHE", {})
    assert _answers(prefilter.Prefilter(PATTERNS)) == expected


def test_no_cache_directory_compiles(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefilter, "cache_dir", str(fresh / "missing"))
    assert _answers(prefilter.Prefilter(PATTERNS))[1] == frozenset({0})
