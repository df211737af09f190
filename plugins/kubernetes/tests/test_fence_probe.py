"""The fence probe's fail-closed decisions, from scripted results.

No probe traffic is sent: the probe runs inside the agent pod on a real
cluster only. Here its outcomes are injected (exit codes and messages as
``timeout``/bash give them), so the logic is tested without touching any
address. The targets and their order are what a Kubernetes 1.33 cluster
(the fake's :data:`fake_apiserver.K8S_VERSION`) reveals; the decisions do
not depend on a version.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fake_apiserver import K8S_VERSION

from bot_bottle.contracts.backend import ExecResult
from bot_bottle.errors import BotBottleError
from bot_bottle_kubernetes.fence import (
    FenceOpenError,
    Target,
    bundle_ports,
    classify,
    probe_argv,
    require_fenced,
    run_probe,
    targets,
)

VERSION_ID = f"k8s-{K8S_VERSION}"

BLOCKED = ExecResult(124)
CONNECTED = ExecResult(0)
REFUSED = ExecResult(1, stderr=b"bash: connect: Connection refused\n")
NO_ROUTE = ExecResult(1, stderr=b"bash: connect: No route to host\n")
UNREACH = ExecResult(1, stderr=b"bash: connect: Network is unreachable\n")


def _targets() -> list[Target]:
    return targets(
        api_service_ip="10.96.0.1",
        node_ip="172.18.0.2",
        bundle_ip="10.244.0.10",
        bundle_ports=[18080, 18081],
    )


def _scripted(answers: dict[tuple[str, int], ExecResult]) -> tuple[list[list[str]], object]:
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> ExecResult:
        calls.append(list(argv))
        return answers.get((argv[-2], int(argv[-1])), BLOCKED)

    return calls, run


def _fenced() -> dict[tuple[str, int], ExecResult]:
    return {("10.244.0.10", 18080): CONNECTED}


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[VERSION_ID])
def test_targets_cover_every_escape_the_issue_names(version: str) -> None:
    names = {(t.name, t.host, t.port, t.allowed) for t in _targets()}
    assert names == {
        ("bundle (listed port, must connect)", "10.244.0.10", 18080, True),
        ("public address", "1.1.1.1", 443, False),
        ("API server service", "10.96.0.1", 443, False),
        ("cloud metadata", "169.254.169.254", 80, False),
        ("node kubelet", "172.18.0.2", 10250, False),
        ("bundle (unlisted port)", "10.244.0.10", 22, False),
    }


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[VERSION_ID])
def test_a_fenced_pod_passes(version: str) -> None:
    calls, run = _scripted(_fenced())
    outcomes = run_probe(run, _targets())  # type: ignore[arg-type]
    require_fenced(outcomes)
    assert len(calls) == 6
    # The address is an argument, never part of the script text.
    assert all(c[:5] == probe_argv(_targets()[0])[:5] for c in calls)


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[VERSION_ID])
@pytest.mark.parametrize(
    ("target", "result", "words"),
    [
        (("1.1.1.1", 443), CONNECTED, "public address 1.1.1.1:443: connected"),
        (("10.96.0.1", 443), CONNECTED, "API server service"),
        (("169.254.169.254", 80), CONNECTED, "cloud metadata"),
        (("172.18.0.2", 10250), REFUSED, "node kubelet 172.18.0.2:10250: connection refused"),
        (("10.244.0.10", 22), REFUSED, "bundle (unlisted port)"),
        (("169.254.169.254", 80), ExecResult(127, stderr=b"timeout: not found"), "did not run"),
        (("1.1.1.1", 443), ExecResult(2, stderr=b"weird"), "exit 2"),
        (("1.1.1.1", 443), ExecResult(1, stderr=b"bash: /dev/tcp: odd"), "exit 1"),
    ],
)
def test_anything_but_a_clean_block_refuses(
    version: str, target: tuple[str, int], result: ExecResult, words: str
) -> None:
    answers = {**_fenced(), target: result}
    _calls, run = _scripted(answers)
    with pytest.raises(FenceOpenError) as err:
        require_fenced(run_probe(run, _targets()))  # type: ignore[arg-type]
    assert words in err.value.message
    assert "torn down before the agent ran" in err.value.message


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[VERSION_ID])
@pytest.mark.parametrize("result", [NO_ROUTE, UNREACH, BLOCKED])
def test_drops_and_icmp_rejects_count_as_blocked(version: str, result: ExecResult) -> None:
    answers = {**_fenced(), ("169.254.169.254", 80): result}
    _calls, run = _scripted(answers)
    require_fenced(run_probe(run, _targets()))  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[VERSION_ID])
def test_a_pod_with_no_network_at_all_proves_nothing(version: str) -> None:
    """Everything timing out (the control too) is not a fence: refuse."""
    _calls, run = _scripted({})
    with pytest.raises(FenceOpenError, match="listed port, must connect"):
        require_fenced(run_probe(run, _targets()))  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[VERSION_ID])
def test_an_exec_failure_is_not_a_pass(version: str) -> None:
    def run(argv: Sequence[str]) -> ExecResult:
        if argv[-2] == "169.254.169.254":
            raise BotBottleError("the pod went away")
        return _fenced().get((argv[-2], int(argv[-1])), BLOCKED)

    with pytest.raises(FenceOpenError, match="exec failed: the pod went away"):
        require_fenced(run_probe(run, _targets()))


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[VERSION_ID])
def test_no_outcomes_and_unknown_addresses_fail_closed(version: str) -> None:
    with pytest.raises(FenceOpenError, match="ran no test"):
        require_fenced([])
    ts = targets(api_service_ip=None, node_ip=None, bundle_ip="10.244.0.10", bundle_ports=[1])
    assert {t.host for t in ts if t.name in ("API server service", "node kubelet")} == {
        "unknown.invalid"
    }
    # An unresolvable name is bash's "Name or service not known": not a clean block.
    outcome = classify(
        ts[2], ExecResult(1, stderr=b"bash: unknown.invalid: Name or service not known")
    )
    assert not outcome.ok
    with pytest.raises(FenceOpenError, match="lists no bundle port"):
        targets(api_service_ip="x", node_ip="y", bundle_ip="z", bundle_ports=[])


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[VERSION_ID])
def test_the_unlisted_port_is_never_a_listed_one(version: str) -> None:
    ts = targets(api_service_ip="a", node_ip="b", bundle_ip="c", bundle_ports=[22, 80, 2375])
    unlisted = next(t for t in ts if t.name == "bundle (unlisted port)")
    assert unlisted.port == 5000


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[VERSION_ID])
def test_bundle_ports_come_from_the_policies_that_select_the_agent(version: str) -> None:
    agent = {"bot-bottle/slug": "s", "bot-bottle/role": "agent"}
    policies = [
        {
            "spec": {
                "podSelector": {"matchLabels": agent},
                "egress": [{"ports": [{"protocol": "TCP", "port": 18080}, {"port": 18081}]}],
            }
        },
        {
            "spec": {
                "podSelector": {"matchLabels": {"bot-bottle/role": "sidecars"}},
                "egress": [{"ports": [{"protocol": "TCP", "port": 443}]}],
            }
        },
        {"spec": {"podSelector": {}, "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}},
    ]
    assert bundle_ports(policies, agent) == [18080, 18081]
