"""Reading a file: frontmatter fences, YAML 1.2, line numbers, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot_bottle.manifest.document import MAX_FILE_BYTES, parse_document, read_document
from bot_bottle.manifest.errors import ManifestError
from bot_bottle.manifest.parse import parse_bottle

F = Path("x.md")


def test_body_and_frontmatter_are_split() -> None:
    doc = parse_document("---\nbottle: dev\n---\nHello\nworld\n", F)
    assert doc.data == {"bottle": "dev"}
    assert doc.body == "Hello\nworld\n"


def test_yes_no_on_off_are_strings_not_booleans() -> None:
    doc = parse_document("---\na: yes\nb: no\nc: on\nd: off\ne: true\n---\n", F)
    assert doc.data == {"a": "yes", "b": "no", "c": "on", "d": "off", "e": True}


def test_a_yes_boolean_is_refused_with_a_yaml_hint() -> None:
    doc = parse_document("---\nagent_provider: {template: claude}\nsupervise: yes\n---\n", F)
    with pytest.raises(ManifestError) as e:
        parse_bottle(doc)
    assert e.value.line == 3
    assert "supervise" in str(e.value)
    assert "yes/no/on/off are strings" in str(e.value)


def test_missing_opening_fence() -> None:
    with pytest.raises(ManifestError, match="must start with a '---' line") as e:
        parse_document("bottle: dev\n", F)
    assert (e.value.file, e.value.line) == (F, 1)


def test_unclosed_frontmatter() -> None:
    with pytest.raises(ManifestError, match="never closed"):
        parse_document("---\nbottle: dev\n", F)


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(ManifestError, match="invalid YAML") as e:
        parse_document("---\na: 1\nb: [unclosed\nc: 2\n---\n", F)
    assert e.value.line >= 3


def test_duplicate_keys_are_an_error() -> None:
    with pytest.raises(ManifestError, match="duplicate key 'bottle'") as e:
        parse_document("---\nbottle: a\nbottle: b\n---\n", F)
    assert e.value.line == 3


def test_frontmatter_must_be_a_mapping() -> None:
    with pytest.raises(ManifestError, match="must be a mapping"):
        parse_document("---\n- a\n- b\n---\n", F)


def test_empty_frontmatter_is_an_empty_mapping() -> None:
    assert parse_document("---\n---\nbody", F).data == {}


def test_yaml_directives_are_refused() -> None:
    with pytest.raises(ManifestError, match="directives") as e:
        parse_document("---\n%YAML 1.1\n---\n", F)
    assert e.value.line == 2


def test_anchors_and_aliases_are_refused() -> None:
    text = "---\na: &x [1, 2]\nb: *x\n---\n"
    with pytest.raises(ManifestError, match="anchors and aliases") as e:
        parse_document(text, F)
    assert e.value.line == 3


def test_line_numbers_of_nested_keys_and_items() -> None:
    text = "---\negress:\n  routes:\n    - host: a.test\n    - host: b.test\n      git: {}\n---\n"
    doc = parse_document(text, F)
    assert doc.line_of(("egress",)) == 2
    assert doc.line_of(("egress", "routes", 1)) == 5
    assert doc.line_of(("egress", "routes", 1, "git")) == 6
    # pydantic adds branch tags to locations; they are skipped.
    assert doc.line_of(("egress", "routes", 1, "function-after[x]", "git")) == 6
    assert doc.where(("egress", "routes", 1, "git")) == "egress.routes[1].git"


def test_crlf_files_and_a_bom_are_read() -> None:
    doc = parse_document("\ufeff---\r\nbottle: dev\r\n---\r\nHi\r\n", F)
    assert doc.data == {"bottle": "dev"}


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "a.md"
    p.write_bytes(b"---\nbottle: dev\n# \xff\n---\n")
    with pytest.raises(ManifestError, match="not valid UTF-8") as e:
        read_document(p)
    assert e.value.line == 3


def test_oversized_file(tmp_path: Path) -> None:
    p = tmp_path / "a.md"
    p.write_bytes(b"---\n" + b"#" * (MAX_FILE_BYTES + 10) + b"\n---\n")
    with pytest.raises(ManifestError, match="larger than"):
        read_document(p)


def test_unreadable_path_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        read_document(tmp_path / "missing.md")


def test_merge_keys_are_refused() -> None:
    with pytest.raises(ManifestError, match=r"merge keys \('<<'\) are not supported") as e:
        parse_document("---\nbottle: dev\nskills:\n  <<: {a: 1}\n  b: 2\n---\n", F)
    assert e.value.line == 4


def test_custom_tags_are_refused() -> None:
    with pytest.raises(ManifestError, match="invalid YAML") as e:
        parse_document("---\nbottle: !custom dev\n---\n", F)
    assert e.value.line == 2
    with pytest.raises(ManifestError, match="unsupported YAML tag") as e:
        parse_document("---\nskills: !!set {a: null}\n---\n", F)
