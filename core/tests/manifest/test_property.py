"""Whatever text or YAML a file holds, the loader answers with a ManifestError
that names the file and a line, or with models; never anything else."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot_bottle.manifest import Manifest, ManifestError
from bot_bottle.manifest.document import parse_document
from bot_bottle.manifest.parse import parse_agent, parse_bottle_checked
from bot_bottle.plugins import PluginHost

F = Path("/h/.bot-bottle/bottles/fuzz.md")
KEYS = [
    "bottle", "extends", "agent_provider", "template", "env", "skills", "git_user", "name",
    "email", "git_gate", "repos", "url", "host_key", "key", "provider", "path", "egress",
    "routes", "host", "auth", "scheme", "token_ref", "matches", "paths", "type", "value",
    "methods", "headers", "dlp", "outbound_detectors", "inbound_detectors", "git", "fetch",
    "log", "upstream_ca", "supervise", "extra_hosts", "regex", "prefix", "<<",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from([*KEYS, "yes", "no", "on", "?prompt", "${HOME}", "ssh://a@b/c", "(?<=x)"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=10), st.integers())
nested = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


def _check(text: str, host: PluginHost) -> None:
    for kind in ("bottle", "agent"):
        try:
            doc = parse_document(text, F)
            if kind == "agent":
                parse_agent(doc)
            else:
                parse_bottle_checked(doc, host)
        except ManifestError as exc:
            assert exc.problems
            last = max(1, len(text.splitlines()) + 1)
            for problem in exc.problems:
                assert problem.file == F
                assert isinstance(problem.line, int) and 1 <= problem.line <= last


def _to_yaml(value: Any) -> str:
    # JSON is YAML (flow style); keys must be strings in JSON.
    def fix(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return json.dumps(fix(value), allow_nan=True)


PLAIN_KEY = re.compile(r"^(<<|[A-Za-z_][A-Za-z0-9_]*)$")


def _block_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML, so that line numbers other than the first are used."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        # Plain keys where YAML allows them: '<<' must be plain to be a merge key.
        return "".join(
            f"{pad}{k if PLAIN_KEY.match(str(k)) else json.dumps(str(k))}:\n"
            f"{_block_yaml(v, indent + 2)}"
            for k, v in value.items()
        )
    if isinstance(value, list) and value:
        return "".join(f"{pad}-\n{_block_yaml(v, indent + 2)}" for v in value)
    return f"{pad}{_to_yaml(value)}\n"


# BOT_BOTTLE_FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the suite fast.
_EXAMPLES = int(os.environ.get("BOT_BOTTLE_FUZZ_EXAMPLES", "150"))
_SETTINGS = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_SETTINGS
@given(text=st.text(max_size=300))
def test_arbitrary_text(text: str, host: PluginHost) -> None:
    _check(text, host)
    _check("---\n" + text + "\n---\n", host)


@_SETTINGS
@given(data=st.dictionaries(keys, nested, max_size=6))
def test_arbitrary_nested_yaml(data: dict[Any, Any], host: PluginHost) -> None:
    _check("---\n" + _to_yaml(data) + "\n---\nbody\n", host)
    _check("---\n" + _block_yaml(data) + "---\nbody\n", host)


@_SETTINGS
@given(text=st.text(alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"#%@`?,\n ")), max_size=120))
def test_yaml_syntax_soup(text: str, host: PluginHost) -> None:
    _check("---\n" + text + "\n---\n", host)


@settings(
    max_examples=max(40, _EXAMPLES // 4),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.dictionaries(keys, nested, max_size=6))
def test_resolving_arbitrary_files_raises_only_manifest_errors(
    data: dict[Any, Any], tmp_path_factory: Any, host: PluginHost
) -> None:
    home = tmp_path_factory.mktemp("home")
    (home / "bottles").mkdir()
    (home / "agents").mkdir()
    (home / "bottles" / "b.md").write_text("---\n" + _block_yaml(data) + "---\n")
    (home / "agents" / "a.md").write_text("---\nbottle: b\n---\n")
    try:
        Manifest(home=home, host=host).agent("a")
    except ManifestError as exc:
        assert all(p.line >= 1 for p in exc.problems)
