"""Every field rule, and each rejection with its message and line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bot_bottle.manifest.document import Document, parse_document
from bot_bottle.manifest.errors import ManifestError
from bot_bottle.manifest.models import AgentFile, BottleFile
from bot_bottle.manifest.parse import parse_agent, parse_bottle, parse_bottle_checked
from bot_bottle.plugins import PluginHost

from .conftest import HOST_KEY

F = Path("/home/u/.bot-bottle/bottles/b.md")


def _doc(frontmatter: str) -> Document:
    return parse_document("---\n" + textwrap.dedent(frontmatter).strip("\n") + "\n---\n", F)


def bottle(frontmatter: str) -> BottleFile:
    return parse_bottle(_doc(frontmatter))


def agent(frontmatter: str) -> AgentFile:
    return parse_agent(_doc(frontmatter))


def bottle_error(frontmatter: str) -> ManifestError:
    with pytest.raises(ManifestError) as e:
        bottle(frontmatter)
    err = e.value
    assert err.file == F and err.line >= 2
    return err


def plugin_error(frontmatter: str, host: PluginHost) -> ManifestError:
    doc = _doc(frontmatter)
    with pytest.raises(ManifestError) as e:
        parse_bottle_checked(doc, host)
    return e.value


# -- unknown keys ---------------------------------------------------------------


def test_unknown_top_level_key_suggests_the_close_one() -> None:
    err = bottle_error("agent_provider: {template: claude}\negres: {}\n")
    assert "unknown key 'egres' (did you mean 'egress'?)" in str(err)
    assert err.line == 3


def test_unknown_nested_key_names_its_path_and_line() -> None:
    err = bottle_error(
        """
        egress:
          routes:
            - host: api.test
              match: []
        """
    )
    assert "egress.routes[0].match" in str(err)
    assert "did you mean 'matches'?" in str(err)
    assert err.line == 5


def test_unknown_key_without_a_close_match_lists_allowed_keys() -> None:
    err = bottle_error("git_user: {name: a, zzzzzz: b}\n")
    assert "unknown key 'zzzzzz'" in str(err)
    assert "did you mean" not in str(err)
    assert "allowed here: email, name" in str(err)


def test_every_error_in_a_file_is_reported() -> None:
    err = bottle_error(
        """
        supervise: maybe
        env: {1BAD: x}
        extra_hosts: {a.test: not-an-ip}
        """
    )
    assert len(err.problems) == 3
    assert [p.line for p in err.problems] == [2, 3, 4]


# -- agents -------------------------------------------------------------------------


def test_agent_needs_a_bottle() -> None:
    with pytest.raises(ManifestError, match="an agent needs 'bottle: <name>'"):
        agent("description: x\n")


@pytest.mark.parametrize("key", ["env", "egress", "git_gate", "agent_provider", "extra_hosts"])
def test_agent_cannot_declare_bottle_settings(key: str) -> None:
    with pytest.raises(ManifestError, match="is a bottle setting: agents cannot declare it") as e:
        agent(f"bottle: dev\n{key}: {{}}\n")
    assert e.value.line == 3


def test_claude_sub_agent_fields_are_accepted_and_ignored() -> None:
    a = agent(
        """
        bottle: dev
        name: reviewer
        description: Reviews code
        model: sonnet
        color: blue
        memory: project
        tools: [Read, Grep]
        """
    )
    assert a.bottle == "dev"


def test_agent_bottle_name_is_validated() -> None:
    with pytest.raises(ManifestError, match="not a valid bottle/agent name"):
        agent("bottle: ../etc\n")


def test_a_trailing_newline_passes_no_name_rule() -> None:
    """``$`` matches before a final newline: every name rule anchors with
    ``\\Z`` (a name "dev\\n" reached the preflight with its newline)."""
    from bot_bottle import names
    from bot_bottle.manifest import models

    for pattern, good in (
        (models.NAME_RE, "dev"),
        (names.ENV_NAME_RE, "FOO"),
        (models.SKILL_NAME_RE, "ok"),
        (names.HOSTNAME_RE, "api.example.com"),
        (models.HTTP_METHOD_RE, "GET"),
        (models.HEADER_NAME_RE, "X-Api-Key"),
    ):
        assert pattern.match(good) and not pattern.match(good + "\n"), pattern.pattern
    with pytest.raises(ManifestError, match="not a valid bottle/agent name"):
        agent('bottle: "dev\\n"\n')
    from bot_bottle.gitgate.spec import GitGateError, check_repo_name

    check_repo_name("proj")
    with pytest.raises(GitGateError):
        check_repo_name("proj\n")


def test_skill_names_cannot_be_paths() -> None:
    with pytest.raises(ManifestError, match="is not a skill name") as e:
        agent("bottle: dev\nskills: [ok, ../../.ssh]\n")
    assert e.value.problems[0].where == "skills[1]"


# -- env ------------------------------------------------------------------------------


def test_env_value_forms() -> None:
    b = bottle(
        """
        env:
          PLAIN: hello
          ASK: ?prompt
          FROM_HOST: ${HOME}
          MIXED: pre-${USER}-$$-post
        """
    )
    assert set(b.env) == {"PLAIN", "ASK", "FROM_HOST", "MIXED"}


def test_env_name_must_be_an_identifier() -> None:
    err = bottle_error("env: {BAD-NAME: x}\n")
    assert "'BAD-NAME' is not a valid environment variable name" in str(err)


def test_env_bad_interpolation_does_not_echo_the_value() -> None:
    err = bottle_error("env: {TOKEN: sk-live-secret-$oops}\n")
    assert "write '$$' for a literal dollar sign" in str(err)
    assert "sk-live-secret" not in str(err)


def test_env_values_must_be_strings() -> None:
    err = bottle_error("env: {PORT: 8080}\n")
    assert "quote the value" in str(err)


def test_env_values_are_not_in_reprs() -> None:
    b = bottle("env: {TOKEN: sk-live-secret}\n")
    assert "sk-live-secret" not in repr(b)


# -- git --------------------------------------------------------------------------------


def test_git_user_must_set_something() -> None:
    err = bottle_error("git_user: {}\n")
    assert "sets neither 'name' nor 'email'" in str(err)


def _repo(**fields: str) -> str:
    base = {
        "name": "widgets",
        "url": "ssh://git@git.example.test/team/widgets.git",
        "host_key": HOST_KEY,
    }
    base.update(fields)
    # JSON strings are YAML double-quoted strings: escapes like \n survive.
    lines = [
        f"      {k}: {json.dumps(v)}" if k != "name" else f"    - {k}: {json.dumps(v)}"
        for k, v in base.items()
    ]
    key = "\n      key: {provider: static, path: ~/k}\n"
    return "git_gate:\n  repos:\n" + "\n".join(lines) + key


def test_ssh_url_is_parsed() -> None:
    b = bottle(_repo(url="ssh://git@git.example.test:2222/team/widgets.git"))
    url = b.git_gate.repos[0].url
    assert url is not None
    assert (url.user, url.host, url.port, url.path) == (
        "git",
        "git.example.test",
        2222,
        "/team/widgets.git",
    )


def test_ssh_url_ipv6_host() -> None:
    url = bottle(_repo(url="ssh://git@[::1]:2222/r.git")).git_gate.repos[0].url
    assert url is not None and (url.host, url.port) == ("::1", 2222)


def test_ssh_url_default_port() -> None:
    url = bottle(_repo()).git_gate.repos[0].url
    assert url is not None and url.port == 22


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("wid'gets", "a single quote"),
        ('wid"gets', "a double quote"),
        ("wid gets", "a space"),
        ("wid;gets", "a semicolon"),
        ("wid\ngets", "a newline"),
        ("wid`gets`", "a backtick"),
    ],
)
def test_hostile_repo_names_are_refused(name: str, what: str) -> None:
    err = bottle_error(_repo(name=name))
    assert "use only letters, digits, '.', '_' and '-'" in str(err)
    assert f"it contains {what}" in str(err)


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("ssh://git@host.test/a'b", "a single quote"),
        ('ssh://git@host.test/a"b', "a double quote"),
        ("ssh://git@host.test/a b", "a space"),
        ("ssh://git@host.test/a;rm -rf", "a semicolon"),
        ("ssh://git@host.test/a\nb", "a newline"),
        ("ssh://git@host.test/a`id`", "a backtick"),
    ],
)
def test_hostile_urls_are_refused(url: str, what: str) -> None:
    err = bottle_error(_repo(url=url))
    assert f"url contains {what}" in str(err)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("git@host.test:team/repo.git", "is scp-style; write it as ssh://user@host/path"),
        ("https://host.test/team/repo.git", "is not an ssh://user@host[:port]/path url"),
        ("ssh://host.test/team/repo.git", "is not an ssh://user@host[:port]/path url"),
        ("ssh://git@host.test:99999/r", "out of range"),
        ("ssh://git@host.test/a/../b", "'.' or '..' segments"),
        ("ssh://git@-host.test/r", "must not start with '-'"),
        ("ssh://-oProxyCommand@host.test/r", "must not start with '-'"),
        ("ssh://git@[1:::2]/r", "is not an IPv6 address"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    assert message in str(bottle_error(_repo(url=url)))


def test_host_key_format() -> None:
    err = bottle_error(_repo(host_key="AAAA-not-a-key"))
    assert "is not a public key" in str(err) and "ssh-keyscan" in str(err)


def test_key_needs_a_provider() -> None:
    err = bottle_error("git_gate:\n  repos:\n    - name: r\n      key: {path: ~/k}\n")
    assert "key needs 'provider'" in str(err)
    assert err.line == 5


def test_duplicate_repo_names() -> None:
    err = bottle_error("git_gate:\n  repos:\n    - name: r\n    - name: r\n")
    assert "repo name 'r' appears twice" in str(err)


def test_extra_hosts_values_are_ip_addresses() -> None:
    b = bottle("extra_hosts: {git.example.test: 127.0.0.1, v6.test: '::1'}\n")
    assert b.extra_hosts == {"git.example.test": "127.0.0.1", "v6.test": "::1"}
    assert "'localhost' is not an IP address" in str(
        bottle_error("extra_hosts: {a.test: localhost}\n")
    )


# -- egress -------------------------------------------------------------------------------


def _route(body: str) -> str:
    return "egress:\n  routes:\n    - host: api.test\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "      "
    )


def test_full_route_parses() -> None:
    b = bottle(
        _route(
            """
            auth: {scheme: Bearer, token_ref: API_TOKEN}
            matches:
              - paths: [{type: prefix, value: /v1/}, {type: regex, value: '^/v2/[a-z]+$'}]
                methods: [GET, POST]
                headers: [{name: X-Api, value: '^v[0-9]$', type: regex}]
            dlp: {outbound_detectors: [token_patterns], inbound_detectors: false}
            git: {fetch: true}
            """
        )
    )
    route = b.egress.routes[0]
    assert route.auth is not None and route.auth.scheme == "Bearer"
    assert route.matches[0].paths[1].type == "regex"
    assert route.dlp.inbound_detectors is False
    assert route.git.fetch is True
    assert b.egress.log == "blocks"


def test_hosts_are_lower_cased() -> None:
    assert bottle("egress: {routes: [{host: API.Example.TEST}]}").egress.routes[0].host == (
        "api.example.test"
    )


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("https://api.test", "without scheme or path"),
        ("*.api.test", "wildcards are not supported"),
        ("api test", "it contains a space"),
    ],
)
def test_bad_hosts(host: str, message: str) -> None:
    assert message in str(bottle_error(f"egress: {{routes: [{{host: '{host}'}}]}}"))


def test_duplicate_route_hosts() -> None:
    err = bottle_error("egress: {routes: [{host: a.test}, {host: A.test}]}")
    assert "has two routes" in str(err)


@pytest.mark.parametrize(
    "match",
    [
        "{paths: [{type: regex, value: '(?<=a)b'}]}",
        "{headers: [{name: X, value: '(a)\\1', type: regex}]}",
        "{paths: [{type: regex, value: '(unclosed'}]}",
    ],
)
def test_regexes_must_compile_with_re2(match: str) -> None:
    err = bottle_error(_route(f"matches: [{match}]"))
    assert "is not valid RE2 syntax" in str(err)
    assert err.line == 5


def test_prefix_paths_start_with_a_slash() -> None:
    err = bottle_error(_route("matches: [{paths: [{value: v1/}]}]"))
    assert "a prefix path must start with '/'" in str(err)


def test_empty_match_is_refused() -> None:
    err = bottle_error(_route("matches: [{}]"))
    assert "an empty match allows every request" in str(err)


def test_methods_are_upper_case() -> None:
    err = bottle_error(_route("matches: [{methods: [get]}]"))
    assert "write it upper-case" in str(err)


def test_auth_scheme_and_token_ref() -> None:
    err = bottle_error(_route("auth: {scheme: Basic, token_ref: T}"))
    assert "'Bearer' or 'token'" in str(err)
    err = bottle_error(_route("auth: {scheme: token, token_ref: not-a-var}"))
    assert "not a valid environment variable name" in str(err)


def test_detectors_true_is_refused_with_advice() -> None:
    err = bottle_error(_route("dlp: {outbound_detectors: true}"))
    assert "as a list, 'false' to turn scanning off" in str(err)


def test_log_level() -> None:
    err = bottle_error("egress: {log: verbose}")
    assert "'off', 'blocks' or 'full'" in str(err)


def test_git_fetch_is_a_real_boolean() -> None:
    err = bottle_error(_route("git: {fetch: 'yes'}"))
    assert "write true or false" in str(err)


# -- plugins ------------------------------------------------------------------------------


def test_unknown_template_lists_installed_providers(host: PluginHost) -> None:
    err = plugin_error("agent_provider:\n  template: claud\n", host)
    assert "no agent provider 'claud' is installed (installed: claude, codex, shell)" in str(err)
    assert err.line == 3


def test_provider_options_are_validated_by_the_provider(host: PluginHost) -> None:
    err = plugin_error(
        "agent_provider:\n  template: codex\n  forward_host_credentials: 'yes'\n  dockerfil: x\n",
        host,
    )
    lines = sorted(p.line for p in err.problems)
    assert lines == [4, 5]
    # codex has no dockerfile option, so nothing close to suggest
    assert (
        "agent_provider.dockerfil: unknown key 'dockerfil' "
        "(allowed here: forward_host_credentials)" in str(err)
    )


def test_provider_option_typos_suggest_the_option(host: PluginHost) -> None:
    err = plugin_error("agent_provider:\n  template: claude\n  dockerfil: x\n", host)
    assert "agent_provider.dockerfil: unknown key 'dockerfil' (did you mean 'dockerfile'?)" in (
        str(err)
    )


def test_provider_options_are_returned_validated(host: PluginHost) -> None:
    doc = _doc("agent_provider: {template: claude, auth_token: '${TOKEN}'}")
    options = parse_bottle_checked(doc, host)[1].provider
    assert options is not None and options.model_dump()["auth_token"] == "${TOKEN}"


def test_agent_provider_needs_a_template() -> None:
    err = bottle_error("agent_provider: {dockerfile: x}")
    assert "agent_provider needs 'template'" in str(err)


def test_static_key_needs_a_path(host: PluginHost) -> None:
    err = plugin_error("git_gate:\n  repos:\n    - name: r\n      key: {provider: static}\n", host)
    assert "missing required key 'path'" in str(err)
    assert err.line == 5


def test_static_key_path_is_absolute_or_home(host: PluginHost) -> None:
    err = plugin_error(
        "git_gate:\n  repos:\n    - name: r\n      key: {provider: static, path: k}\n", host
    )
    assert "must be an absolute path or start with '~'" in str(err)


def test_paths_cannot_hold_control_characters() -> None:
    err = bottle_error('egress: {upstream_ca: "/etc/ca.pem\\nx"}')
    assert "must not contain control characters" in str(err)


def test_unknown_key_provisioner_lists_available(host: PluginHost) -> None:
    err = plugin_error(
        "git_gate:\n  repos:\n    - name: r\n      key:\n        provider: gitee\n", host
    )
    assert "no key provisioner 'gitee' is installed (available: static, gitea)" in str(err)
    assert err.line == 6


def test_key_provisioner_options_are_validated(host: PluginHost) -> None:
    err = plugin_error(
        "git_gate:\n  repos:\n    - name: r\n      key:\n        provider: gitea\n"
        "        api_url: https://git.test\n",
        host,
    )
    assert "git_gate.repos[0].key" in str(err)
    assert "missing required key 'token_ref'" in str(err)


def test_detectors_must_be_installed(host: PluginHost) -> None:
    err = plugin_error(_route("dlp:\n  outbound_detectors: [token_patterns, tokn_patterns]"), host)
    assert "no DLP detector 'tokn_patterns' is installed" in str(err)
    assert "known_secrets, prompt_injection, token_patterns" in str(err)
    assert err.problems[0].where == "egress.routes[0].dlp.outbound_detectors[1]"


def test_plugin_options_are_strict_json(bot_bottle_host: PluginHost) -> None:
    """A lax plugin model still sees YAML 1.2 'yes' as a string, and still
    gets paths and enums from strings."""
    import enum

    from pydantic import BaseModel

    from bot_bottle import Registration, hookimpl

    class Mode(enum.Enum):
        FAST = "fast"

    class Options(BaseModel):
        dockerfile: Path | None = None
        mode: Mode = Mode.FAST
        forward: bool = False

    class Provider:
        options_model = Options

    class Plugin:
        @hookimpl
        def bot_bottle_register_agent_providers(self) -> list[Registration[object]]:
            return [Registration("lax", Provider)]

    bot_bottle_host.register(Plugin(), "lax")
    doc = _doc("agent_provider: {template: lax, dockerfile: /d/Dockerfile, mode: fast}")
    options = parse_bottle_checked(doc, bot_bottle_host)[1].provider
    assert isinstance(options, Options)
    assert options.dockerfile == Path("/d/Dockerfile") and options.mode is Mode.FAST
    err = plugin_error("agent_provider: {template: lax, forward: 'yes'}", bot_bottle_host)
    assert "agent_provider.forward" in str(err)


def test_model_and_plugin_problems_are_reported_together(host: PluginHost) -> None:
    err = plugin_error(
        """
        agent_provider:
          template: claude
          auth_tokn: x
        env:
          bad-name: x
          OK: "${NOT CLOSED"
        egress:
          routes:
            - host: api.test
              dlp: {outbound_detectors: [token_pattern]}
        supervise: yes
        """,
        host,
    )
    assert [(p.line, p.where) for p in err.problems] == [
        (4, "agent_provider.auth_tokn"),
        (6, "env.bad-name"),
        (7, "env.OK"),
        (11, "egress.routes[0].dlp.outbound_detectors[0]"),
        (12, "supervise"),
    ]


@pytest.mark.parametrize(
    ("ports", "message"),
    [("[0]", "greater than or equal to 1"), ("[70000]", "less than or equal to 65535"),
     ("['443']", "valid integer")],
)  # fmt: skip
def test_route_ports_must_be_integers_in_range(ports: str, message: str) -> None:
    assert message in str(bottle_error(_route(f"ports: {ports}")))


def test_route_ports_and_websocket_parse() -> None:
    route = bottle(_route("ports: [8443]\nwebsocket: true")).egress.routes[0]
    assert route.ports == [8443] and route.websocket is True
    assert bottle(_route("git: {fetch: false}")).egress.routes[0].websocket is False


# -- resources ----------------------------------------------------------------------------


def test_resources_default_to_documented_limits() -> None:
    from bot_bottle.manifest.models import DEFAULT_LIMITS, memory_bytes

    r = bottle("supervise: true\n").resources
    for name, limits in DEFAULT_LIMITS.items():
        assert getattr(r, name).model_dump() == limits
    assert memory_bytes(r.bundle.memory or "") == 1024**3
    assert memory_bytes("256m") == 256 * 1024**2 and memory_bytes("1.5g") == 3 * 1024**3 // 2


def test_resources_record_what_the_file_declares() -> None:
    # The defaults fill the rest when the bottle is resolved (test_extends).
    r = bottle("resources:\n  agent: {memory: 8g, cpus: null}\n").resources
    assert r.model_fields_set == {"agent"}
    assert r.agent.model_fields_set == {"memory", "cpus"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("resources:\n  agent: {memory: lots}\n", "'lots' is not a memory size"),
        ("resources:\n  bundle: {memory: 1m}\n", "below 32m"),
        ("resources:\n  relay: {pids: 2}\n", "pids"),
        ("resources:\n  agent: {cpus: 0}\n", "cpus"),
        ("resources:\n  sidecar: {memory: 1g}\n", "sidecar"),
    ],
)
def test_bad_resources_name_the_key_and_line(body: str, message: str) -> None:
    err = bottle_error(body)
    assert message in str(err)
    assert err.line == 3


def test_resources_are_a_bottle_setting() -> None:
    with pytest.raises(ManifestError, match="bottle setting"):
        agent("bottle: b\nresources: {agent: {memory: 1g}}\n")
