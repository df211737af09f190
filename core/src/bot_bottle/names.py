"""Characters that must never reach a shell script, git config value or ssh
command line unquoted (DESIGN §6, invariant 6).

Validators name the character they refuse, so a user learns which one it was.
Quoting every generated value stays the backstop; this is the first line.
"""

from __future__ import annotations

HOSTILE_CHARS: dict[str, str] = {
    "'": "a single quote",
    '"': "a double quote",
    "`": "a backtick",
    ";": "a semicolon",
    "$": "a dollar sign",
    "\\": "a backslash",
    "|": "a pipe",
    "&": "an ampersand",
    "<": "a '<'",
    ">": "a '>'",
    " ": "a space",
    "\t": "a tab",
    "\n": "a newline",
    "\r": "a carriage return",
    "\0": "a NUL byte",
}


def hostile_char(value: str) -> str | None:
    """Describe the first hostile or control character in ``value``, if any."""
    for ch in value:
        if ch in HOSTILE_CHARS:
            return HOSTILE_CHARS[ch]
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return "a control character"
    return None
