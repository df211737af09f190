"""The pure decision function: total over hostile input, deny by default."""

from __future__ import annotations

from bot_bottle_sidecars.egress.policy import Refusal, RequestFacts, check_request
from hypothesis import given, settings
from hypothesis import strategies as st

from bot_bottle.egress.config import EgressConfig, Route

CONFIG = EgressConfig.model_validate(
    {
        "routes": [
            {"host": "api.example.test"},
            {
                "host": "m.example.test",
                "matches": [
                    {"paths": [{"type": "regex", "value": "/v[0-9]+/(a|b)*"}], "methods": ["GET"]},
                    {"headers": [{"name": "x-k", "value": ".*", "type": "regex"}]},
                ],
            },
        ]
    }
)

text = st.text(max_size=200)
hosts = st.one_of(
    st.sampled_from(["api.example.test", "m.example.test", "API.example.test.", "x.test"]), text
)


@settings(max_examples=400, deadline=None)
@given(
    host=hosts,
    port=st.integers(min_value=0, max_value=70000),
    method=text,
    path=text,
    query=text,
    authority=st.one_of(st.none(), text, hosts),
    sni=st.one_of(st.none(), hosts),
    headers=st.dictionaries(text, st.lists(text, max_size=3), max_size=5),
    scheme=st.sampled_from(["http", "https"]),
)
def test_check_request_is_total_and_denies_unknown_hosts(
    host: str,
    port: int,
    method: str,
    path: str,
    query: str,
    authority: str | None,
    sni: str | None,
    headers: dict[str, list[str]],
    scheme: str,
) -> None:
    facts = RequestFacts(
        scheme=scheme,
        host=host,
        port=port,
        method=method,
        path=path,
        query=query,
        headers={k.lower(): v for k, v in headers.items()},
        authority=authority,
        sni=sni,
        connect_target=None,
    )
    verdict = check_request(CONFIG, facts)
    assert isinstance(verdict, Route | Refusal)
    if isinstance(verdict, Route):
        assert verdict.host == host.rstrip(".").lower()
        assert port in (443, 80)


def test_pathological_regex_input_is_linear() -> None:
    # RE2: no catastrophic backtracking on (a|b)* against a long near-miss.
    facts = RequestFacts(
        scheme="https",
        host="m.example.test",
        port=443,
        method="GET",
        path="/v1/" + "ab" * 50_000 + "c",
        query="",
        headers={},
        authority="m.example.test",
        sni="m.example.test",
        connect_target=("m.example.test", 443),
    )
    verdict = check_request(CONFIG, facts)
    assert isinstance(verdict, Refusal) and verdict.rule == "no-match"


_IP_FORMS = [
    "127.0.0.1", "127.0.0.1.", "127.1", "2130706433", "0x7f000001", "0X7F.1", "0177.0.0.1",
    "017700000001", "0x7f.0.0.1", "::1", "[::1]", "[::1].", "::FFFF:127.0.0.1",
    "[::ffff:7f00:1]", "fe80::1%eth0", "[fe80::1%25eth0]", " 127.0.0.1 ", "127.0.0.1..",
    "10.0.0.1", "169.254.169.254", "0", "0x0", "[0:0:0:0:0:0:0:1]",
]  # fmt: skip


def test_the_ip_literal_cache_answers_what_the_check_answers_in_any_order() -> None:
    """``check_destination`` caches ``is_ip_literal`` per host string: every
    spelling of an address is refused whatever was asked before it (a host
    name, another spelling of the same address), as the uncached check does."""
    from bot_bottle_sidecars.egress import policy

    from bot_bottle.egress.config import is_ip_literal

    config = EgressConfig.model_validate({"routes": [{"host": "api.example.test"}]})
    policy._is_ip_literal.cache_clear()  # pyright: ignore[reportPrivateUsage]
    for order in (_IP_FORMS, list(reversed(_IP_FORMS))):
        for host in ["api.example.test", "API.EXAMPLE.TEST.", *order, *order]:
            assert policy._is_ip_literal(policy._norm(host)) is is_ip_literal(policy._norm(host))  # pyright: ignore[reportPrivateUsage]
            verdict = policy.check_destination(config, host, 443)
            if host.strip().rstrip(".").lower() == "api.example.test":
                assert not isinstance(verdict, Refusal), host
            else:
                assert isinstance(verdict, Refusal) and verdict.rule == "ip-literal", host


@settings(max_examples=300, deadline=None)
@given(host=st.one_of(text, st.from_regex(r"\[?[0-9a-fA-Fx:.%\[\]]{1,40}\]?\.?", fullmatch=True)))
def test_the_cached_ip_literal_check_equals_the_uncached_one(host: str) -> None:
    from bot_bottle_sidecars.egress import policy

    from bot_bottle.egress.config import is_ip_literal

    h = policy._norm(host)  # pyright: ignore[reportPrivateUsage]
    assert policy._is_ip_literal(h) is is_ip_literal(h)  # pyright: ignore[reportPrivateUsage]
    assert policy._is_ip_literal(h) is is_ip_literal(h)  # pyright: ignore[reportPrivateUsage]
