"""Evasive encodings through a real git-gate push (real git, git daemon side over
sshd, the built-in detectors): every evasive form of a token, and every
transformed form of a bottle secret, is refused before the upstream is
contacted."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests import dlp_evasions

if TYPE_CHECKING:
    from .conftest import Gate, GatedClone, Sshd

VALUE = "bottle-secret-Qm7vR2xK9pLw"


def _push_each(
    gate: Gate, clone: Path, sshd: Sshd, forms: dict[str, bytes], expect: Callable[[str], str]
) -> dict[str, str]:
    """Commit each form alone and push it; the failures, by form."""
    failures: dict[str, str] = {}
    for i, (name, body) in enumerate(sorted(forms.items())):
        gate.commit(clone, {f"data{i}.bin": body}, f"add data {i}")
        before = sshd.connections()
        proc = gate.push(clone)
        if proc.returncode == 0 or expect(name) not in proc.stderr:
            failures[name] = proc.stderr[-400:]
        elif sshd.connections() != before:
            failures[name] = "the upstream was contacted"
        gate.git("reset", "-q", "--hard", "HEAD~1", cwd=clone)
    return failures


def test_every_evasive_form_of_a_token_is_refused(sshd: Sshd, gated_clone: GatedClone) -> None:
    _, gate, clone = gated_clone(plugins="dlp")
    forms = {**dlp_evasions.token_forms(), **dlp_evasions.key_forms()}
    failures = _push_each(
        gate,
        clone,
        sshd,
        forms,
        lambda name: (
            "token_patterns/private-key" if name.startswith("pem") else "token_patterns/github-pat"
        ),
    )
    assert failures == {}
    assert dlp_evasions.TOKEN not in gate.log_text()


def test_a_token_split_over_two_lines_of_a_commit_message_is_refused(
    gated_clone: GatedClone,
) -> None:
    _, gate, clone = gated_clone(plugins="dlp")
    token = dlp_evasions.TOKEN
    gate.commit(
        clone, {"notes.txt": "hello\n"}, f"ci: rotate\n\ntoken {token[:17]}\n{token[17:]}\n"
    )
    proc = gate.push(clone)
    assert proc.returncode != 0
    assert "token_patterns/github-pat" in proc.stderr and "commit message" in proc.stderr


def test_a_bottle_secret_is_refused_in_each_transformed_form(
    sshd: Sshd, gated_clone: GatedClone
) -> None:
    _, gate, clone = gated_clone(plugins="dlp", extra_env={"GITGATE_SECRET_0": VALUE})
    raw = VALUE.encode()
    forms = {
        "utf-16le": VALUE.encode("utf-16-le"),
        "utf-16 with BOM": VALUE.encode("utf-16"),
        "upper-cased": VALUE.upper().encode(),
        "base32": base64.b32encode(b"x" + raw),
        "base64 offset 2": base64.b64encode(b"xy" + raw),
        "hex": raw.hex().encode(),
        "url-encoded": "".join(f"%{b:02x}" for b in raw).encode(),
        "reversed": raw[::-1],
    }
    failures = _push_each(gate, clone, sshd, forms, lambda _: "known_secrets/known-secret")
    assert failures == {}
    assert VALUE not in gate.log_text()
