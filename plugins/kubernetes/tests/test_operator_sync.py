"""The operator's paths for a cluster bottle: the supervise queue and the
daemon logs, mirrored between the bundle pod and the host over ``pods/exec``.

Driven through ``KubernetesBackend.launch`` with the real ``kubernetes``
client against the fake API server (Kubernetes 1.33 schemas). The bundle
side is played by the real queue contract (``SuperviseQueue`` on the pod's
directory, as supervise writes and reads it); the host side is the real CLI
(``bot-bottle proposals list/reject``), unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from k8s_cluster_kit import PodShell, bottle_objects, mini_plan

from bot_bottle.cli import main
from bot_bottle.contracts.supervise import (
    CapabilityBlockPayload,
    ProposalStatus,
    SuperviseQueue,
    default_queue_dir,
)
from bot_bottle.history import BottleHistory
from bot_bottle_kubernetes import operator_sync
from bot_bottle_kubernetes.backend import KubernetesBackend

SLUG = "shell-0a1b2c"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operator_sync, "INTERVAL", 0.2)


def _bundle_dir(shell: PodShell, guest: str) -> Path:
    path = shell.root / f"bb-{SLUG}-sidecars" / guest.lstrip("/")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_proposal_in_the_pod_is_answered_from_the_host_cli(
    kube_env: Any, shell: PodShell, fast: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot_bottle_sidecars.layout import QUEUE_DIR

    pod_queue = SuperviseQueue(_bundle_dir(shell, QUEUE_DIR), SLUG)
    host_queue = SuperviseQueue(default_queue_dir(SLUG), SLUG)
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(mini_plan())):
        proposal = pod_queue.submit(
            CapabilityBlockPayload(dockerfile="RUN apt-get install -y jq\n", justification="jq")
        )
        wait_for("the proposal on the host", lambda: proposal.id in host_queue.proposal_ids())
        capsys.readouterr()
        assert main(["proposals", "list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert proposal.id in json.dumps(listed)
        assert main(["proposals", "reject", proposal.id, "--comment", "use the stdlib"]) == 0
        # The answer reaches the pod, where supervise reads it with the same contract.
        wait_for(
            "the answer in the pod",
            lambda: pod_queue.state(proposal.id).status is ProposalStatus.REJECTED,
        )
        response = pod_queue.load_response(proposal.id)
        assert response is not None and response.comment == "use the stdlib"
        assert not list(pod_queue.directory.glob(".*.part"))
    # Kept with the bottle's history, as on Docker.
    history = BottleHistory.for_slug(SLUG)
    kept = sorted(p.name for p in history.proposals_dir.iterdir())
    assert kept == [f"{proposal.id}.proposal.json", f"{proposal.id}.response.json"]
    assert bottle_objects(kube_env) == []


def test_only_well_named_proposals_cross_and_pod_answers_are_not_taken(
    kube_env: Any, shell: PodShell, fast: None
) -> None:
    from bot_bottle_sidecars.layout import QUEUE_DIR

    raw = _bundle_dir(shell, QUEUE_DIR)
    pod_queue = SuperviseQueue(raw, SLUG)
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(mini_plan())):
        proposal = pod_queue.submit(
            CapabilityBlockPayload(dockerfile="RUN true\n", justification="x")
        )
        # A response written in the pod (not by the operator) and odd names.
        (raw / f"{proposal.id}.response.json").write_text('{"decision": "approved"}')
        (raw / "../../escape.proposal.json").write_text("{}")
        (raw / "p-x.proposal.json").write_text("{}")
        host = default_queue_dir(SLUG)
        wait_for("the proposal", lambda: (host / f"{proposal.id}.proposal.json").exists())
        time.sleep(0.5)
        names = sorted(p.name for p in host.iterdir())
        assert names == [f"{proposal.id}.proposal.json"]


def test_logs_are_appended_while_the_bottle_runs(
    kube_env: Any, shell: PodShell, fast: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot_bottle_sidecars.layout import LOG_DIR

    pod_logs = _bundle_dir(shell, LOG_DIR)
    history = BottleHistory.for_slug(SLUG)
    host_file = history.logs_dir / "egress.jsonl"
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(mini_plan())):
        (pod_logs / "egress.jsonl").write_text('{"event": "one"}\n')
        wait_for("the first line", lambda: host_file.is_file() and host_file.stat().st_size > 0)
        inode = host_file.stat().st_ino
        with (pod_logs / "egress.jsonl").open("a") as f:
            f.write('{"event": "two"}\n')
        wait_for("the second line", lambda: b"two" in host_file.read_bytes())
        # Appended in place: `logs --follow` keeps its inode and offset.
        assert host_file.stat().st_ino == inode
        assert host_file.read_text() == '{"event": "one"}\n{"event": "two"}\n'
        # `bot-bottle logs SLUG`, unchanged, shows them while the bottle runs.
        capsys.readouterr()
        assert main(["logs", SLUG, "--json", "--daemon", "egress"]) == 0
        shown = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
        assert shown == ["one", "two"]
    assert host_file.read_text() == '{"event": "one"}\n{"event": "two"}\n'
