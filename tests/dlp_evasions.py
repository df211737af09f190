"""The forms an agent uses to walk a token past a scanner, built
from one real-format token, for every place that scans: the pipeline,
``bot-bottle dlp scan``, a real egress daemon and a real git-gate push.

Each form is a whole body (bytes). ``TOKEN`` is a GitHub classic PAT whose
CRC32 base62 checksum holds (not a live token: it was never issued);
``PRIVATE_KEY_PEM`` is an RSA key made fresh for each test session.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import html
import io
import lzma
import tarfile
import unicodedata
import zipfile
import zlib
from functools import cache

#: Ordinary text around a token inside compressed forms.
FILLER = (
    b"# Deployment notes\n\nThe service reads its settings from the environment at start-up.\n"
    + b"".join(
        b"setting_%03d = value %d  # tuned in review %d, keep in sync with docs\n" % (i, i * 7, i)
        for i in range(120)
    )
)
TOKEN = "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"
RULE = ("token_patterns", "github-pat")
KEY_RULE = ("token_patterns", "private-key")


def _zstd(data: bytes) -> bytes:
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    return zstd.compress(data)


def _zip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes/config.txt", data)
    return buf.getvalue()


def _tar(data: bytes, compression: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as t:  # pyright: ignore[reportCallIssue, reportArgumentType]
        info = tarfile.TarInfo("export/settings.ini")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _spaced(text: bytes, every: int, sep: bytes) -> bytes:
    return sep.join(text[i : i + every] for i in range(0, len(text), every))


def _fullwidth(text: str) -> str:
    # U+FF01..FF5E are the fullwidth forms of U+0021..007E; NFKC undoes them.
    out = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    assert unicodedata.normalize("NFKC", out) == text
    return out


def token_forms(token: str = TOKEN) -> dict[str, bytes]:
    """Body name -> body carrying ``token`` in that form."""
    line = f"GITHUB_TOKEN={token}\n".encode()
    # Compressors store a short input's bytes as they are: give them text.
    text = FILLER[:3000] + line + FILLER[3000:]
    b64 = base64.b64encode(line)
    zw = token[:8] + "\u200b" + token[8:16] + "\u00ad" + token[16:30] + "\u2060" + token[30:]
    return {
        "utf-16le with BOM": "\ufeff".encode("utf-16-le") + line.decode().encode("utf-16-le"),
        "utf-16be with BOM": b"\xfe\xff" + line.decode().encode("utf-16-be"),
        "utf-16le without BOM": line.decode().encode("utf-16-le"),
        "raw gzip": gzip.compress(text),
        "raw zlib": zlib.compress(text),
        "raw bz2": bz2.compress(text),
        "raw xz": lzma.compress(text),
        "raw zstd": _zstd(text),
        "zip member": _zip(text),
        "tar.gz member": _tar(text, "gz"),
        "tar.xz member": _tar(text, "xz"),
        "base64 wrapped every 4": _spaced(b64, 4, b"\n"),
        "base64 with spaces": _spaced(b64, 6, b" "),
        "base64 MIME lines": _spaced(base64.b64encode(line * 3), 76, b"\r\n"),
        "quoted-printable": binascii.b2a_qp(line, istext=False).replace(b"_", b"=5F"),
        "quoted-printable soft breaks": _spaced(line.rstrip(), 9, b"=\r\n"),
        "zero-width characters": f"token: {zw}\n".encode(),
        "fullwidth (NFKC)": f"token: {_fullwidth(token)}\n".encode(),
        "hex with colons": line.hex(":").encode(),
        "hex with spaces": line.hex(" ").encode(),
        "html decimal entities": "".join(f"&#{ord(c)};" for c in token).encode(),
        "html hex entities": (html.escape("<p>") + token[:4]).encode()
        + "".join(f"&#x{ord(c):x};" for c in token[4:]).encode()
        + html.escape("</p>").encode(),
        "split across a line break": f"token = {token[:20]}\n    {token[20:]}\n".encode(),
    }


@cache
def private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_forms() -> dict[str, bytes]:
    """Private keys stripped of, or with mangled, armour."""
    pem = private_key_pem()
    body = b"".join(pem.splitlines()[1:-1])
    lines = b"\n".join(pem.splitlines()[1:-1])
    return {
        "pem body without armour": lines + b"\n",
        "pem body one line": b"key=" + body + b"\n",
        "pem with extra spaces in armour": pem.replace(b"-----BEGIN ", b"-----BEGIN  ").replace(
            b"PRIVATE KEY-----", b"PRIVATE  KEY -----"
        ),
    }
