"""Every form an agent uses to walk a token past the scan is
blocked by the built-in detectors through the pipeline (egress, git-gate
and ``bot-bottle dlp scan`` run this same pipeline; their own tests send
the same forms through the real daemons)."""

from __future__ import annotations

import pytest

from bot_bottle.contracts.dlp import Action, Direction, Finding, Location
from bot_bottle.dlp import ScanPipeline, Verdict, verdict
from bot_bottle.plugins import PluginHost
from tests import dlp_evasions

FORMS = dlp_evasions.token_forms()
KEYS = dlp_evasions.key_forms()


@pytest.fixture(scope="module")
def outbound(tmp_path_factory: pytest.TempPathFactory) -> ScanPipeline:
    host = PluginHost(environ={}, contrib=tmp_path_factory.mktemp("no-contrib")).load()
    return ScanPipeline.from_host(host, Direction.OUTBOUND)


def _blocks(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.detector, f.rule) for f in findings if f.action is Action.BLOCK}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_token_in_each_evasive_form_is_blocked(outbound: ScanPipeline, form: str) -> None:
    body = FORMS[form]
    assert dlp_evasions.TOKEN.encode() not in body  # the form really hides it
    findings = outbound.scan_bytes(body, Location("body"))
    assert dlp_evasions.RULE in _blocks(findings), (form, findings)
    assert all(dlp_evasions.TOKEN not in f.describe() for f in findings)


@pytest.mark.parametrize("form", sorted(KEYS))
def test_private_key_without_or_with_mangled_armour_is_blocked(
    outbound: ScanPipeline, form: str
) -> None:
    findings = outbound.scan_bytes(KEYS[form], Location("body"))
    assert dlp_evasions.KEY_RULE in _blocks(findings), (form, findings)


def test_public_keys_and_certificates_are_not_taken_for_armourless_keys(
    outbound: ScanPipeline,
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(dlp_evasions.private_key_pem(), None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = b"\n".join(public.splitlines()[1:-1])
    assert verdict(outbound.scan_bytes(body, Location("body"))) is Verdict.NONE


def test_a_decompression_bomb_without_content_encoding_is_refused(
    outbound: ScanPipeline,
) -> None:
    import gzip

    bomb = gzip.compress(b"\0" * (80 * 1024 * 1024))
    findings = outbound.scan_bytes(bomb, Location("body"))
    assert [(f.rule, f.action) for f in findings] == [("undecodable-body", Action.BLOCK)]


def test_a_zip_of_many_members_is_refused(outbound: ScanPipeline) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(1001):
            z.writestr(f"f{i}", b"x")
    findings = outbound.scan_bytes(buf.getvalue(), Location("body"))
    assert verdict(findings) is Verdict.BLOCK


KNOWN = "route-token-Qm7vR2xK9pLw"


def known_secret_forms(value: str = KNOWN) -> dict[str, bytes]:
    import base64

    raw = value.encode()
    return {
        "utf-16le": value.encode("utf-16-le"),
        "utf-16be with BOM": b"\xfe\xff" + value.encode("utf-16-be"),
        "upper-cased": value.upper().encode(),
        "lower-cased": value.lower().encode(),
        "base32": base64.b32encode(raw),
        "base32 inside a blob": base64.b32encode(b"xy" + raw + b"tail"),
        "base64 offset 1": base64.b64encode(b"a" + raw),
        "base64 offset 2": base64.b64encode(b"ab" + raw),
        "hex": raw.hex().upper().encode(),
        "url-encoded": "".join(f"%{b:02X}" for b in raw).encode(),
        "reversed": raw[::-1],
    }


@pytest.mark.parametrize("form", sorted(known_secret_forms()))
def test_known_secret_in_each_form_is_blocked(outbound: ScanPipeline, form: str) -> None:
    from bot_bottle.secrets import Secret

    body = b"payload=" + known_secret_forms()[form] + b"\n"
    findings = outbound.scan_bytes(body, Location("body"), known_secrets=[Secret(KNOWN)])
    assert ("known_secrets", "known-secret") in _blocks(findings), form
    assert all(KNOWN not in f.describe() for f in findings)
