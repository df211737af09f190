"""The operator's allow list for git-gate: stable finding ids, strict file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot_bottle.gitgate import allow

BASE = {"commit": "a" * 40, "part": "file_content", "path": "f.txt", "detector": "d", "rule": "r"}


def test_a_finding_id_depends_on_every_stable_field_and_the_match_only() -> None:
    match = allow.match_sha256(b"ghp_example")
    fid = allow.finding_id(**BASE, match=match)
    assert allow.FINDING_ID_RE.fullmatch(fid)
    assert fid == allow.finding_id(**BASE, match=allow.match_sha256(b"ghp_example"))
    for key in BASE:
        assert allow.finding_id(**{**BASE, key: "other"}, match=match) != fid
    assert allow.finding_id(**BASE, match=allow.match_sha256(b"ghp_other")) != fid
    # The id carries no part of the matched bytes.
    assert "ghp" not in fid


def test_add_appends_and_load_reads_back(tmp_path: Path) -> None:
    fid = allow.finding_id(**BASE, match="")
    allow.add(tmp_path, fid, rule="d/r", comment="example")
    allow.add(tmp_path, "gf-" + "1" * 20)
    assert allow.allowed_ids(tmp_path / allow.ALLOW_FILE) == {fid, "gf-" + "1" * 20}
    assert (tmp_path / allow.ALLOW_FILE).stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps(
            {
                "schema_version": 1,
                "entries": [{"finding": "gf-short", "allowed_at": "2026-01-01T00:00:00Z"}],
            }
        ),
        json.dumps({"schema_version": 1, "entries": [], "extra": 1}),
        json.dumps({"schema_version": 2, "entries": []}),
        json.dumps({"schema_version": 1, "entries": [{"finding": "gf-" + "0" * 20}]}),
    ],
)
def test_an_invalid_file_is_an_error_not_a_partial_list(tmp_path: Path, content: str) -> None:
    path = tmp_path / allow.ALLOW_FILE
    path.write_text(content)
    with pytest.raises(allow.AllowError):
        allow.allowed_ids(path)


def test_a_missing_file_allows_nothing(tmp_path: Path) -> None:
    assert allow.allowed_ids(tmp_path / allow.ALLOW_FILE) == frozenset()


@pytest.mark.parametrize("bad", ["", "gf-", "gf-" + "G" * 20, "../../etc/passwd", "gf-" + "0" * 21])
def test_malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(allow.AllowError, match="invalid finding id"):
        allow.check_finding_id(bad)
