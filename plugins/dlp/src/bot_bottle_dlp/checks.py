"""Validators and the entropy gate the token rules use."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import Counter

_BASE62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_VALUE = {c: i for i, c in enumerate(_BASE62)}


def shannon_entropy(data: bytes) -> float:
    """Bits per character of ``data``."""
    if not data:
        return 0.0
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


def base62_crc32_checksum(token: bytes) -> bool:
    """GitHub's (and npm's) token checksum: the last six characters are the
    CRC32 of the thirty random ones before them, in base62
    (``0-9A-Za-z``), zero-padded (github.blog, 2021-04-05, "Behind GitHub's
    new authentication token formats").

    ``token`` is everything after the ``xxx_`` prefix.
    """
    if len(token) != 36:
        return False
    body, check = token[:30], token[30:]
    value = 0
    for c in check:
        if c not in _BASE62_VALUE:
            return False
        value = value * 62 + _BASE62_VALUE[c]
    return value == binascii.crc32(body)


def github_token(match: bytes) -> bool:
    """A ``gh?_`` token whose checksum holds (76-character refresh tokens
    carry no documented checksum and are judged by entropy alone)."""
    body = match.split(b"_", 1)[1]
    if len(body) != 36:
        return True
    return base62_crc32_checksum(body)


def npm_token(match: bytes) -> bool:
    return base62_crc32_checksum(match.split(b"_", 1)[1])


def _b64url_json(part: bytes) -> object:
    padded = part + b"=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def jwt_signed(match: bytes) -> bool:
    """A JWT whose header is JSON naming a signing algorithm (not ``none``)
    and whose payload is JSON: a string merely shaped like one is not."""
    try:
        header_part, payload_part, _ = match.split(b".", 2)
        header = _b64url_json(header_part)
        payload = _b64url_json(payload_part)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return False
    alg = header.get("alg")
    return isinstance(alg, str) and alg.lower() != "none"


def not_aws_example(match: bytes) -> bool:
    """AWS documents its examples with keys ending in ``EXAMPLE``."""
    return not match.endswith(b"EXAMPLE")


_PLACEHOLDER_WORDS = (
    b"password",
    b"passwd",
    b"secret",
    b"changeme",
    b"example",
    b"placeholder",
    b"redacted",
    b"your",
    b"dummy",
    b"token",
    b"xxx",
)


def _placeholder(value: bytes) -> bool:
    lowered = value.lower()
    if not lowered or lowered[:1] in b"$%{<*[(":
        return True  # a template or variable reference, not a value
    if len(set(lowered)) <= 2:
        return True  # "xxxxxxxx", "********"
    return any(word in lowered for word in _PLACEHOLDER_WORDS)


def url_password(match: bytes) -> bool:
    """``scheme://user:password@host`` whose password is a value, not a
    placeholder (``${DB_PASSWORD}``, ``<password>``, ``changeme``, ``****``)."""
    authority = match.split(b"://", 1)[-1]
    userinfo = authority.rsplit(b"@", 1)[0]
    _, _, password = userinfo.partition(b":")
    return len(password) >= 6 and not _placeholder(password)


def basic_credentials(match: bytes) -> bool:
    """An ``Authorization: Basic`` value that decodes to ``user:password``
    with a password that is not a placeholder."""
    value = match.split()[-1]
    try:
        decoded = base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)
    except (ValueError, binascii.Error):
        return False
    user, sep, password = decoded.partition(b":")
    if not sep or not password or not decoded.isascii():
        return False
    del user
    return len(password) >= 6 and not _placeholder(password)


def assigned_secret(match: bytes) -> bool:
    """The value of a ``*_SECRET*=`` / ``*_TOKEN*=`` assignment looks like a
    generated secret: letters and digits, not a placeholder or a name."""
    value = match
    has_digit = any(0x30 <= c <= 0x39 for c in value)
    has_alpha = any(0x41 <= (c & 0xDF) <= 0x5A for c in value)
    return has_digit and has_alpha and not _placeholder(value)


def bearer_value(match: bytes) -> bool:
    """A bearer token value that looks generated (mixed letters and digits),
    not bot-bottle's own placeholder or a word."""
    value = match.split()[-1]
    return assigned_secret(value) and b"bot-bottle-placeholder" not in value
