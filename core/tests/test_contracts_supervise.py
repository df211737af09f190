"""The supervise queue schema and directory, as both sides use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot_bottle.contracts.supervise import (
    CapabilityBlockPayload,
    Decision,
    ProposalStatus,
    QueueError,
    SuperviseQueue,
    default_queue_dir,
)

PAYLOAD = CapabilityBlockPayload(dockerfile="RUN true\n", justification="because")


def test_submitted_proposal_is_pending_until_answered(tmp_path: Path) -> None:
    queue = SuperviseQueue(tmp_path / "q", "bottle-1")
    proposal = queue.submit(PAYLOAD)
    assert queue.state(proposal.id).status is ProposalStatus.PENDING
    assert [p.id for p in queue.pending()] == [proposal.id]

    queue.respond(proposal.id, Decision.REJECTED, comment="not needed")
    state = queue.state(proposal.id)
    assert state.status is ProposalStatus.REJECTED
    assert state.response is not None and state.response.comment == "not needed"
    assert queue.pending() == []


def test_proposal_file_carries_ids_timestamps_slug_tool_and_payload(tmp_path: Path) -> None:
    queue = SuperviseQueue(tmp_path, "bottle-1")
    proposal = queue.submit(PAYLOAD)
    data = json.loads((tmp_path / f"{proposal.id}.proposal.json").read_text())
    assert data["id"] == proposal.id
    assert data["bottle_slug"] == "bottle-1"
    assert data["tool"] == "capability-block"
    assert data["created_at"]
    assert data["payload"] == {"dockerfile": "RUN true\n", "justification": "because"}
    assert data["schema_version"] == 1


def test_a_proposal_is_answered_once(tmp_path: Path) -> None:
    queue = SuperviseQueue(tmp_path, "b")
    proposal = queue.submit(PAYLOAD)
    queue.respond(proposal.id, Decision.APPROVED)
    with pytest.raises(QueueError, match="already answered"):
        queue.respond(proposal.id, Decision.REJECTED)


@pytest.mark.parametrize("bad", ["../x", "p-1", "", "p-20260101T000000Z-ZZZZZZZZZZZZ"])
def test_invalid_proposal_ids_never_reach_the_filesystem(tmp_path: Path, bad: str) -> None:
    with pytest.raises(QueueError, match="invalid proposal id"):
        SuperviseQueue(tmp_path, "b").state(bad)


def test_unknown_keys_in_a_queue_file_are_an_error_not_a_crash(tmp_path: Path) -> None:
    queue = SuperviseQueue(tmp_path, "b")
    proposal = queue.submit(PAYLOAD)
    path = tmp_path / f"{proposal.id}.proposal.json"
    data = json.loads(path.read_text())
    data["surprise"] = True
    path.write_text(json.dumps(data))
    with pytest.raises(QueueError, match="not a valid proposal file") as info:
        queue.load_proposal(proposal.id)
    assert info.value.hint


def test_invalid_slug_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(QueueError) as info:
        SuperviseQueue(tmp_path, "../etc")
    assert info.value.hint
    with pytest.raises(QueueError):
        default_queue_dir("Bad Slug", {"BOT_BOTTLE_HOME": str(tmp_path)})


def test_default_queue_dir_is_under_bot_bottle_home(tmp_path: Path) -> None:
    assert default_queue_dir("b1", {"BOT_BOTTLE_HOME": str(tmp_path)}) == tmp_path / "supervise/b1"


def test_too_many_pending_proposals_are_refused(tmp_path: Path) -> None:
    queue = SuperviseQueue(tmp_path, "b")
    first = queue.submit(PAYLOAD, max_pending=2)
    queue.submit(PAYLOAD, max_pending=2)
    with pytest.raises(QueueError, match="already waiting") as info:
        queue.submit(PAYLOAD, max_pending=2)
    assert info.value.hint
    # An answer frees a slot.
    queue.respond(first.id, Decision.APPROVED)
    queue.submit(PAYLOAD, max_pending=2)
