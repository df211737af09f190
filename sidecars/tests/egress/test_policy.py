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
