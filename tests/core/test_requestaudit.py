"""An auditor's timeline of requests from log leaves: who acted when, and which steps
of the executing authority came after the limit that was running."""

from __future__ import annotations

import hashlib

from broker.core import logleaf
from broker.core.requestaudit import timelines
from broker.v1 import audit_pb2

HOUR = 3_600_000


def step(
    index: int, name: str, actor: str, state: str, at: int, deadline: str = "", due: int = 0
) -> tuple[int, audit_pb2.LogLeaf]:
    return index, logleaf.request_step(
        notice_id="r1",
        kind="request.eio",
        step=name,
        actor=actor,
        issuer="FR",
        executor="DE",
        state=state,
        signed_at_ms=at,
        action=f"{name}@{at}".encode(),
        deadline=deadline,
        deadline_ms=due,
        grounds=["eio.11.1.d"] if name == "refuse" else [],
        priority=0,
        logged_at_ms=at,
    )


def test_steps_within_and_after_their_limits() -> None:
    leaves = [
        step(3, "issue", "FR", "issued", 0),
        step(5, "receive", "DE", "received", HOUR, "decision", 721 * HOUR),
        step(8, "recognise", "DE", "recognised", 800 * HOUR, "execution", 2960 * HOUR),
        step(9, "partial", "DE", "in_execution", 900 * HOUR, "execution", 2960 * HOUR),
        step(12, "execute", "DE", "executed", 2000 * HOUR),
    ]
    (t,) = timelines(leaves)
    assert [(s.index, s.step, s.due, s.late) for s in t.steps] == [
        (3, "issue", "", False),
        (5, "receive", "", False),
        (8, "recognise", "decision", True),  # 79 days after receipt: late
        (9, "partial", "", False),
        (12, "execute", "execution", False),
    ]
    assert t.steps[2].due_ms == 721 * HOUR
    assert (t.deadline, t.overdue(10**15)) == ("", False)  # executed: nothing runs


def test_a_request_still_waiting_is_overdue_after_its_limit() -> None:
    leaves = [
        step(1, "issue", "FR", "issued", 0),
        step(2, "receive", "DE", "received", HOUR, "decision", 25 * HOUR),
        (4, audit_pb2.LogLeaf(format=1, logged_at_ms=5)),  # other leaves are ignored
    ]
    leaves = [x for x in leaves if x[1].WhichOneof("entry")]
    (t,) = timelines(leaves)
    assert not t.overdue(25 * HOUR) and t.overdue(25 * HOUR + 1)
    assert t.steps[-1].action_digest == hashlib.sha256(b"receive@3600000").digest()
