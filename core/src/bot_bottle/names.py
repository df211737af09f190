"""Names every part of bot-bottle validates the same way, defined once.

Characters that must never reach a shell script, git config value or ssh
command line unquoted: a manifest value is operator text, but it ends up in
files the agent's tools or the sidecars' scripts run, and one stray quote
there is a command. Validators name the character they refuse, so a user
learns which one it was. Quoting every generated value stays the backstop;
this is the first line.

Also the one host-name and the one environment-variable-name pattern the
manifest, egress, git-gate and the providers' options share.
"""

from __future__ import annotations

import re

#: One DNS label: letters, digits, '-' and '_' (service names and some
#: private hosts use '_'; egress's own introspection name is ``_egress.local``),
#: not starting or ending with '-'.
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
#: A host name: dot-separated labels, 253 characters at most, no trailing dot.
#: Anchored with ``\Z``: ``$`` also matches before a final newline.
HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z")
#: An environment variable's name.
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

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
