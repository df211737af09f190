"""Reading one manifest file: Markdown with a YAML frontmatter block.

The frontmatter is parsed by ruamel.yaml in YAML 1.2 mode (``yes``/``no``/
``on``/``off`` are strings, not booleans) and converted to plain Python
values, with a side table that maps every key path to its line in the file.
Model errors are located through that table, so every error names the file
and the line.

Anything that goes wrong while reading turns into a
:class:`~bot_bottle.manifest.errors.ManifestError`: these files are
untrusted input (a repo may ship agents), so a parser surprise must be a
clear message, never a traceback.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot_bottle.manifest.errors import ManifestError

#: Frontmatter is meant to be a screenful of keys; a bigger file is a mistake
#: (or an attempt to make the loader do a lot of work).
MAX_FILE_BYTES = 1024 * 1024
FENCE = "---"

type Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    """A parsed file: frontmatter as plain data, the body, and line numbers."""

    path: Path
    data: dict[str, Any]
    body: str
    #: key path -> 1-based line in the file (the key's line for mapping
    #: entries, the item's line for sequence items).
    lines: dict[Loc, int] = field(default_factory=dict, repr=False)
    #: line of the opening fence
    first_line: int = 1

    def line_of(self, loc: Sequence[object]) -> int:
        """The line of ``loc``, or of its nearest enclosing key that exists.

        Elements of ``loc`` that are not keys of the data (pydantic adds
        union branch names and validator tags) are skipped.
        """
        node: Any = self.data
        path: list[str | int] = []
        best = self.lines.get((), self.first_line)
        for element in loc:
            if isinstance(node, dict) and _hashable(element) and element in node:
                key: Any = element
            elif (
                isinstance(node, list)
                and isinstance(element, int)
                and not isinstance(element, bool)
                and 0 <= element < len(node)
            ):
                key = element
            else:
                continue
            node = node[key]
            path.append(key)
            best = self.lines.get(tuple(path), best)
        return best

    def where(self, loc: Sequence[object]) -> str:
        """``loc`` as users write it (``egress.routes[0].host``), data keys only."""
        node: Any = self.data
        text = ""
        for element in loc:
            if isinstance(node, dict) and _hashable(element) and element in node:
                text += f".{element}" if text else str(element)
                node = node[element]
            elif (
                isinstance(node, list)
                and isinstance(element, int)
                and not isinstance(element, bool)
                and 0 <= element < len(node)
            ):
                text += f"[{element}]"
                node = node[element]
        return text


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def read_document(path: Path) -> Document:
    """Read and parse ``path``. Raises ManifestError (never anything else)."""
    try:
        # O_NONBLOCK: a FIFO (or a symlink to one) must not hang a listing;
        # anything but a regular file is refused before reading.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ManifestError.at(path, 1, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ManifestError.at(path, 1, "not a regular file")
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ManifestError.at(path, 1, f"cannot read the file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ManifestError.at(
            path, 1, f"file is larger than {MAX_FILE_BYTES // 1024} KiB; a manifest is a few keys"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError.at(path, line, "file is not valid UTF-8") from None
    return parse_document(text, path)


def parse_document(text: str, path: Path) -> Document:
    """Split ``text`` into frontmatter and body and parse the frontmatter."""
    text = text.removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").rstrip() != FENCE:
        raise ManifestError.at(
            path,
            1,
            "the file must start with a '---' line opening the YAML frontmatter",
            hint="write '---', the frontmatter keys, '---', then the Markdown body",
        )
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip("\r\n").rstrip() == FENCE), None)
    if end is None:
        raise ManifestError.at(
            path, 1, "the frontmatter opened on line 1 is never closed with a '---' line"
        )
    yaml_text = "".join(lines[1:end])
    body = "".join(lines[end + 1 :])
    # File line of the YAML's first line (ruamel counts from 0).
    offset = 2
    for i, line in enumerate(lines[1:end]):
        if line.startswith("%"):
            # A '%YAML 1.1' directive would switch the parser back to
            # yes/no booleans; manifests are YAML 1.2, full stop.
            raise ManifestError.at(
                path, i + offset, "YAML directives ('%...') are not allowed in frontmatter"
            )
    data, line_map = _load_yaml(yaml_text, path, offset)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ManifestError.at(
            path, offset, "the frontmatter must be a mapping of keys ('key: value' lines)"
        )
    return Document(path=path, data=data, body=body, lines=line_map, first_line=1)


def _yaml() -> Any:
    from ruamel.yaml import YAML

    # The safe loader composes a node graph (every node knows its line) and
    # resolves scalars with YAML 1.2 rules unless the document says
    # otherwise (directives are refused above). We build the plain values
    # ourselves from the nodes: that gives a line for every key and item,
    # and it is about twice as fast as round-trip mode, which also keeps
    # comments we do not need.
    return YAML(typ="safe", pure=True)


_YAML: Any = None
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


def _load_yaml(text: str, path: Path, offset: int) -> tuple[Any, dict[Loc, int]]:
    global _YAML
    if _YAML is None:
        _YAML = _yaml()
    try:
        root = _YAML.compose(text)
        return _build(root, _YAML.constructor, path, offset)
    except ManifestError:
        raise
    except RecursionError:
        raise ManifestError.at(path, offset, "the frontmatter is nested too deeply") from None
    except Exception as exc:
        # ruamel raises MarkedYAMLError subclasses with a position; a few
        # corners (bad timestamps, odd tags) raise plain ValueError/TypeError.
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        mark_line = getattr(mark, "line", None)
        line = offset + mark_line if isinstance(mark_line, int) else offset
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0:1]
        if isinstance(problem, list):
            problem = problem[0] if problem else type(exc).__name__
        raise ManifestError.at(path, line, f"invalid YAML: {problem}") from None


def _build(root: Any, constructor: Any, path: Path, offset: int) -> tuple[Any, dict[Loc, int]]:
    """Plain dicts, lists and scalars from a composed node graph, plus the
    line of every key and item.

    Iterative, not recursive, so a deeply nested document cannot blow the
    stack here. A node reached twice is an alias: anchors and aliases are
    refused, because expanding them lets a tiny file describe a huge
    structure ("billion laughs") and manifests have no use for them. Merge
    keys (``<<``) need them and are refused too; so are tags other than the
    standard scalar, mapping and sequence tags.
    """
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    if root is None:
        return None, {}
    lines: dict[Loc, int] = {(): offset + root.start_mark.line}
    seen: set[int] = set()

    def line_of(node: Any) -> int:
        return offset + node.start_mark.line

    def scalar(node: Any) -> Any:
        value = constructor.construct_object(node, deep=True)
        if isinstance(value, str):
            return _text(str(value), path, line_of(node))
        return value

    def shell(node: Any, used_at: int) -> Any:
        if id(node) in seen:
            raise ManifestError.at(
                path,
                used_at,
                "YAML anchors and aliases ('&name', '*name') are not supported in manifests",
            )
        seen.add(id(node))
        tag = str(node.tag)
        if isinstance(node, MappingNode):
            if tag != _MAP:
                raise ManifestError.at(path, line_of(node), f"unsupported YAML tag {tag!r}")
            return {}
        if isinstance(node, SequenceNode):
            if tag != _SEQ:
                raise ManifestError.at(path, line_of(node), f"unsupported YAML tag {tag!r}")
            return []
        return scalar(node)

    top = shell(root, lines[()])
    stack: list[tuple[Any, Any, Loc]] = [(root, top, ())]
    while stack:
        node, dst, loc = stack.pop()
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                line = line_of(key_node)
                if str(key_node.tag) == _MERGE:
                    raise ManifestError.at(
                        path, line, "YAML merge keys ('<<') are not supported in manifests"
                    )
                if not isinstance(key_node, ScalarNode):
                    raise ManifestError.at(path, line, "mapping keys must be plain values")
                key = scalar(key_node)
                if not _hashable(key):
                    raise ManifestError.at(path, line, "mapping keys must be plain values")
                if key in dst:
                    raise ManifestError.at(path, line, f"duplicate key {key!r}")
                child_loc = (*loc, key)
                lines[child_loc] = line
                dst[key] = shell(value_node, line)
                if isinstance(value_node, (MappingNode, SequenceNode)):
                    stack.append((value_node, dst[key], child_loc))
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                child_loc = (*loc, i)
                lines[child_loc] = line_of(item)
                dst.append(shell(item, lines[child_loc]))
                if isinstance(item, (MappingNode, SequenceNode)):
                    stack.append((item, dst[-1], child_loc))
    return top, lines


def _text(value: str, path: Path, line: int) -> str:
    """``value`` with escaped surrogate pairs joined; lone surrogates refused.

    YAML's ``"\\ud83d\\ude00"`` escapes arrive as two surrogates, which no
    encoder accepts: join pairs into the character they mean.
    """
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise ManifestError.at(
            path, line, "a string holds an invalid Unicode escape (a lone surrogate)"
        ) from None
