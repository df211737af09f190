"""The launch-time fence probe: prove, from inside the agent pod, that the
NetworkPolicy fence is enforced, and fail closed when it is not shown to be.

A CNI that does not enforce NetworkPolicy accepts the policies and ignores
them (kind before 0.24 did): the bottle would run with an open network and
nothing would say so. So before the agent runs, the launcher connects from
the agent pod to addresses the fence must block — a public IP literal, the
API server's service IP, the cloud metadata address, the node's kubelet
port and a bundle port the policy does not list — and to one it must allow
(a listed bundle port, the positive control). The bottle launches only when
every blocked target *timed out or had no route* and the control connected.

Fail closed, target by target:

- connected (exit 0): the fence is open -> refuse.
- refused (a RST came back): something answered, so packets got through
  the fence to a host -> refuse. A dropping policy never answers.
- timed out (124 from ``timeout``) or no route / network unreachable
  (an ICMP reject): blocked -> fine.
- anything else (the probe could not run, an unexpected exit code or
  message, the exec failed): not shown blocked -> refuse.

And the control: if the listed bundle port does not connect, the probe
proved nothing (a pod with no network at all times out everywhere) and the
launch is refused too.

The probe runs on a real cluster only, inside the pod; tests drive the
decision logic with scripted results and never send this traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bot_bottle.contracts.backend import ExecResult
from bot_bottle.errors import BotBottleError

#: A public address that answers on 443 almost everywhere; the operator can
#: name another (``--backend-option fence_public=IP:PORT``).
DEFAULT_PUBLIC = ("1.1.1.1", 443)
METADATA = ("169.254.169.254", 80)
KUBELET_PORT = 10250
PROBE_SECONDS = 3
#: Ports tried, in order, as "a bundle port the policy does not list".
UNLISTED_CANDIDATES = (22, 80, 2375, 5000, 6443, 8080, 9090, 65000)

# bash's /dev/tcp needs no tool the image may lack; $0/$1 keep the address
# out of the script text (no shell injection from a cluster-supplied IP).
_CONNECT = 'exec 3<>"/dev/tcp/$0/$1"'


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int
    #: True for the positive control, which must connect.
    allowed: bool = False


@dataclass(frozen=True)
class Outcome:
    target: Target
    verdict: str  # connected | refused | blocked | unknown
    detail: str

    @property
    def ok(self) -> bool:
        if self.target.allowed:
            return self.verdict == "connected"
        return self.verdict == "blocked"


class FenceOpenError(BotBottleError):
    """The NetworkPolicy fence is not shown to hold; the bottle was not launched."""


def probe_argv(target: Target) -> list[str]:
    return [
        "timeout",
        str(PROBE_SECONDS),
        "bash",
        "-c",
        _CONNECT,
        target.host,
        str(target.port),
    ]


def classify(target: Target, result: ExecResult) -> Outcome:
    err = result.stderr.decode(errors="replace").strip()
    low = err.lower()
    if result.exit_code == 0:
        return Outcome(target, "connected", "connected")
    if result.exit_code == 124:
        return Outcome(target, "blocked", f"no answer within {PROBE_SECONDS}s")
    if result.exit_code == 1 and "connection refused" in low:
        return Outcome(target, "refused", "connection refused: a host answered through the fence")
    if result.exit_code == 1 and ("no route to host" in low or "network is unreachable" in low):
        return Outcome(target, "blocked", err.splitlines()[-1] if err else "unreachable")
    return Outcome(
        target,
        "unknown",
        f"the probe did not run cleanly (exit {result.exit_code}): {err[:200] or 'no output'}",
    )


def targets(
    *,
    api_service_ip: str | None,
    node_ip: str | None,
    bundle_ip: str,
    bundle_ports: Sequence[int],
    public: tuple[str, int] = DEFAULT_PUBLIC,
) -> list[Target]:
    """What the probe tries. A target whose address the cluster did not
    reveal is probed anyway with a name that fails (never skipped silently)."""
    if not bundle_ports:
        raise FenceOpenError(
            "the agent's NetworkPolicy lists no bundle port: nothing to probe against"
        )
    unlisted = next(
        (p for p in UNLISTED_CANDIDATES if p not in bundle_ports), max(bundle_ports) + 1
    )
    return [
        Target("bundle (listed port, must connect)", bundle_ip, bundle_ports[0], allowed=True),
        Target("public address", public[0], public[1]),
        Target("API server service", api_service_ip or "unknown.invalid", 443),
        Target("cloud metadata", *METADATA),
        Target("node kubelet", node_ip or "unknown.invalid", KUBELET_PORT),
        Target("bundle (unlisted port)", bundle_ip, unlisted),
    ]


def run_probe(
    run: Callable[[Sequence[str]], ExecResult], probe_targets: Sequence[Target]
) -> list[Outcome]:
    outcomes = []
    for t in probe_targets:
        try:
            result = run(probe_argv(t))
        except BotBottleError as e:
            outcomes.append(Outcome(t, "unknown", f"exec failed: {e}"))
            continue
        outcomes.append(classify(t, result))
    return outcomes


def require_fenced(outcomes: Sequence[Outcome]) -> None:
    """Raise :class:`FenceOpenError` unless every outcome is what a holding fence gives."""
    if not outcomes:
        raise FenceOpenError("the fence probe ran no test")
    bad = [o for o in outcomes if not o.ok]
    if not bad:
        return
    lines = "; ".join(f"{o.target.name} {o.target.host}:{o.target.port}: {o.detail}" for o in bad)
    raise FenceOpenError(
        f"the NetworkPolicy fence is not enforced for this bottle ({lines}); "
        "it was torn down before the agent ran",
        hint="use a CNI that enforces NetworkPolicy (Calico, Cilium, kindnet in kind >= 0.24) "
        "and make sure no other NetworkPolicy selects bot-bottle pods",
    )


def bundle_ports(
    policies: Sequence[Mapping[str, object]], agent_labels: Mapping[str, str]
) -> list[int]:
    """The TCP ports the agent pod's policies allow it to send to."""
    from bot_bottle_kubernetes.lifecycle import selector_selects

    ports: list[int] = []
    for policy in policies:
        spec = policy.get("spec")
        if not isinstance(spec, dict) or not selector_selects(
            spec.get("podSelector"), agent_labels
        ):
            continue
        for rule in spec.get("egress") or []:
            for port in rule.get("ports") or []:
                value = port.get("port")
                if isinstance(value, int) and port.get("protocol", "TCP") == "TCP":
                    ports.append(value)
    return sorted(set(ports))
