"""Cheaper header look-ups and option reads in mitmproxy (egress latency, issue #21).

A small request through egress looks a header up about 27 times (mitmproxy's
HTTP/1 layers ask for ``Content-Length``, ``Transfer-Encoding``, ``Expect``,
``Connection``, ``Upgrade``... on both legs; egress's addon asks for a few
more). mitmproxy (12.x) answers each through three layers of generic code:
``Mapping.get`` calls ``MultiDict.__getitem__``, which raises ``KeyError``
for an absent header (the common case) for ``get`` to catch, after
``MultiDict.get_all`` called the static ``_kconv`` (``bytes.lower``) once
per header field through an attribute look-up, then ``Headers.get_all``
decoded the values found. In a profile of the daemon under
``bench/egress_latency.py`` that was about a tenth of its Python time.

Options are read per request too (``options.validate_inbound_headers``,
``body_size_limit``, ``stream_large_bodies``... about nine reads), each
returning ``copy.deepcopy`` of the value, which for the immutable values
those options hold (``None``, ``bool``, ``int``, ``str``) is the value itself
after a memo dict and two dispatches.

:func:`install` gives :class:`mitmproxy.http.Headers` a ``get_all``, ``get``
and ``__contains__`` that compute exactly what the originals do (same
case-insensitive match on the raw bytes, same decoding, same folding with
``", "``, same exceptions for a key that is neither ``str`` nor ``bytes``)
in one list comprehension, and ``_Option.current`` returns an immutable value
without the deep copy (what ``copy.deepcopy`` returns for it anyway). No
header, option or decision changes; the egress addon judges the same values.

As in ``dispatch``, the classes whose methods are replaced or relied on are
pinned by sha256 to the source reviewed (mitmproxy 12.3.1, :data:`_REVIEWED`):
another mitmproxy release makes the daemon refuse to start rather than run
with look-ups that may no longer match its headers.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Mapping
from typing import Any

_MARK = "_bot_bottle_hotpath"
#: sha256 of the source of what this module replaces or relies on, as reviewed
#: (mitmproxy 12.3.1). ``Mapping.get`` and ``Mapping.__contains__`` (frozen in
#: CPython, no source to hash) are the documented ``collections.abc`` mixins:
#: ``self[key]``, and ``KeyError`` means absent.
_REVIEWED: dict[str, str] = {
    "Headers": "947aa0298abd401078c9e730678f08255c6b060f5ee239e7cc0c8e3b9c69ea70",
    "_MultiDict": "fce5ae993af6fbff845362223db48a7e7e350e292441d39293659e88545136d4",
    "always_bytes": "97a1c07fd4d60b7dc5c9a0f93bc5fd13c0734dfda812acf3c273574047a92dcb",
    "_Option": "eb3f037b6cc43fb774c8d4d228100fee8b2560382c0e15b2e5a1b251e909815f",
}
#: Values ``copy.deepcopy`` returns as they are (its atomic types).
_IMMUTABLE = frozenset({type(None), bool, int, float, str, bytes})


def _sources() -> dict[str, Any]:
    from mitmproxy import http, optmanager
    from mitmproxy.coretypes import multidict
    from mitmproxy.utils import strutils

    return {
        "Headers": http.Headers,
        "_MultiDict": multidict._MultiDict,  # pyright: ignore[reportPrivateUsage]
        "always_bytes": strutils.always_bytes,
        "_Option": optmanager._Option,  # pyright: ignore[reportPrivateUsage]
    }


def _digest(obj: Any) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def digests() -> dict[str, str]:
    """The current digests of what :data:`_REVIEWED` pins (for reviewing an upgrade)."""
    # Source text as read from the files: the replacements set below do not change it.
    return {name: _digest(obj) for name, obj in _sources().items()}


def check_compatible() -> None:
    """Raise RuntimeError unless mitmproxy reads as this module was reviewed against."""
    from mitmproxy import http

    problems = [f"{name} as reviewed" for name, d in digests().items() if d != _REVIEWED[name]]
    # Headers must take get and __contains__ from Mapping (what the
    # replacements reproduce); a subclass of Headers would inherit ours.
    for name in ("get", "__contains__"):
        owner = next(c for c in http.Headers.__mro__ if name in c.__dict__)
        if owner is not Mapping and not getattr(owner.__dict__[name], _MARK, False):
            problems.append(f"Headers.{name} from Mapping")
    if http.Headers.__subclasses__():
        problems.append("no subclass of Headers")
    if problems:
        raise RuntimeError(
            "this mitmproxy version looks headers or options up differently "
            f"({'; '.join(problems)} not found); "
            "bot_bottle_sidecars.egress.hotpath must be updated for it"
        )


def installed() -> bool:
    from mitmproxy import http

    return getattr(http.Headers.__dict__.get("get_all"), _MARK, False)


def _mark(fn: Any) -> Any:
    setattr(fn, _MARK, True)
    return fn


def install() -> None:
    """Replace the look-ups (idempotent); refuses an unexpected mitmproxy."""
    from mitmproxy import http, optmanager

    check_compatible()
    if installed():
        return
    to_bytes = http._always_bytes  # pyright: ignore[reportPrivateUsage]

    @_mark
    def get_all(self: Any, name: str | bytes) -> list[str]:
        # Headers.get_all: always_bytes, then MultiDict.get_all with
        # _kconv = bytes.lower on the name and on each field, then _native.
        raw = name.encode("utf-8", "surrogateescape") if type(name) is str else to_bytes(name)
        key = raw.lower()
        return [v.decode("utf-8", "surrogateescape") for k, v in self.fields if k.lower() == key]

    @_mark
    def get(self: Any, key: str | bytes, default: Any = None) -> Any:
        # Mapping.get: self[key] (MultiDict.__getitem__: get_all, KeyError when
        # empty, else Headers._reduce_values), default on KeyError.
        values = self.get_all(key)
        return ", ".join(values) if values else default

    @_mark
    def contains(self: Any, key: object) -> bool:
        # Mapping.__contains__: self[key] raises KeyError exactly when empty.
        return bool(self.get_all(key))

    option = optmanager._Option  # pyright: ignore[reportPrivateUsage]
    unset = optmanager.unset
    deepcopy = copy.deepcopy

    @_mark
    def current(self: Any) -> Any:
        # The original deep-copies the default twice (the ``default``
        # property, then current): a copy of a copy is a copy.
        v = self._default if self.value is unset else self.value
        return v if type(v) in _IMMUTABLE else deepcopy(v)

    http.Headers.get_all = get_all  # type: ignore[method-assign]
    http.Headers.get = get  # type: ignore[method-assign,assignment]
    http.Headers.__contains__ = contains  # type: ignore[method-assign,assignment]
    option.current = current  # type: ignore[method-assign]
