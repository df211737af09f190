"""Untrusted text on the operator's terminal.

Names and strings that come from repositories or agents — agent file names,
manifest values, proposal text, hostnames and paths in egress logs — are
printed to the operator. A raw ESC starts a control sequence (colours, cursor
moves, OSC 52 clipboard writes, window titles); a bidi override or isolate
reorders what is shown; zero-width and other format characters hide text or
make two different strings look the same; U+2028/2029 break lines where the
reader expects none; Unicode tag characters (U+E0000 block) carry invisible
ASCII. Every such character is shown *escaped* (``\\x1b``, ``\\u202e``,
``\\U000e0041``) so the operator sees that it is there, and nothing is
interpreted.

:func:`visible` renders a string for a terminal; :func:`first_unsafe` names the
first such character, for validators that refuse instead of rendering
(supervise proposals). Both use the same predicate, :func:`is_unsafe`, so the
set refused and the set escaped never drift apart.
"""

from __future__ import annotations

import unicodedata

#: Characters that are not in a "format"/"control" category but still change
#: what a reader sees: line and paragraph separators, the Hangul fillers and
#: other blank-looking letters that render as nothing.
_EXTRA_UNSAFE = frozenset(
    "\u2028\u2029"  # line / paragraph separator
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers (render as blank)
    "\u180e"  # Mongolian vowel separator (was Cf, now Mn in some versions)
    "\u034f"  # combining grapheme joiner (invisible)
)
#: Zero-width joiner and variation selectors are part of ordinary emoji
#: ("👩‍💻", "❤️"); anywhere else they are invisible carriers of data.
_ZWJ = "\u200d"


def _is_variation_selector(ch: str) -> bool:
    cp = ord(ch)
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


def _emojiish(ch: str) -> bool:
    return unicodedata.category(ch) in ("So", "Sk") or 0x1F3FB <= ord(ch) <= 0x1F3FF


def _allowed_in_context(text: str, i: int) -> bool:
    """A ZWJ between two symbols, or one variation selector right after a
    symbol, is part of an emoji sequence."""
    ch = text[i]
    prev = text[i - 1] if i > 0 else ""
    if ch == _ZWJ:
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if prev and _is_variation_selector(prev) and i > 1:
            prev = text[i - 2]
        return bool(prev and nxt) and _emojiish(prev) and _emojiish(nxt)
    if _is_variation_selector(ch):
        return bool(prev) and _emojiish(prev)
    return False


def is_unsafe(ch: str, *, allow_newlines: bool = False) -> bool:
    """True when ``ch`` must not reach a terminal as it is.

    Covers C0 and C1 controls and DEL (``Cc``), every format character
    (``Cf``: bidi embeddings/overrides/isolates/marks, zero-width space and
    joiners, word joiner, BOM, soft hyphen, Unicode tags U+E0000 to U+E007F),
    unassigned and private-use code points and surrogates (``Cn``, ``Co``,
    ``Cs``), line/paragraph separators (``Zl``, ``Zp``), variation selectors
    and a few blank-rendering letters. :func:`visible` and
    :func:`first_unsafe` let a ZWJ or variation selector through inside an
    emoji sequence. With ``allow_newlines``, ``\\n`` and ``\\t`` are
    ordinary text (multi-line proposal bodies).
    """
    if allow_newlines and ch in "\n\t":
        return False
    if ch in _EXTRA_UNSAFE or _is_variation_selector(ch):
        return True
    cat = unicodedata.category(ch)
    return cat[0] == "C" or cat in ("Zl", "Zp")


def _escape(ch: str) -> str:
    cp = ord(ch)
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def visible(text: str, *, limit: int | None = None, allow_newlines: bool = False) -> str:
    """``text`` with every unsafe character shown as an escape.

    A backslash is left alone: the escapes are for the eye, not a reversible
    encoding. With ``limit``, the result is cut to that many characters and
    ends with ``…`` when something was cut (a 64 KiB justification must not
    push everything else off the screen).
    """
    out: list[str] = []
    for i, ch in enumerate(text):
        bad = is_unsafe(ch, allow_newlines=allow_newlines) and not _allowed_in_context(text, i)
        out.append(_escape(ch) if bad else ch)
    rendered = "".join(out)
    if limit is not None and len(rendered) > limit:
        return rendered[: max(limit - 1, 0)] + "…"
    return rendered


def first_unsafe(text: str, *, allow_newlines: bool = True) -> tuple[int, str] | None:
    """Offset and character of the first unsafe character in ``text``, if any.

    A CRLF line end counts as ordinary text when newlines are allowed (a
    proposal pasted from a Windows editor); a bare carriage return, which
    overwrites the line it ends, does not.
    """
    for i, ch in enumerate(text):
        if ch == "\r" and allow_newlines and text[i + 1 : i + 2] == "\n":
            continue
        if is_unsafe(ch, allow_newlines=allow_newlines) and not _allowed_in_context(text, i):
            return i, ch
    return None


def describe(ch: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)`` — for error messages."""
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")
