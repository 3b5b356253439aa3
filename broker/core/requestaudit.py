"""What an auditor proves of judicial requests from the verified log (pure): each
request's steps in log order, who took each and when (the actor's signed time, the
digest of what was signed), and whether each step of the executing authority came
within the time limit that was running when it was taken.

Built from RequestStepLogged leaves alone (broker/core/logleaf/events.py request_step): the
limit running after a step is in that step's leaf, so the limit a later step had to
meet is the previous leaf's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.core import logleaf
from broker.v1 import audit_pb2, requests_pb2

# Steps that answer a running limit (the executing authority's decision or execution).
ANSWERS = {
    "decision": frozenset({"recognise", "refuse"}),
    "execution": frozenset({"execute"}),
}


@dataclass(frozen=True)
class StepRecord:
    """One logged step."""

    index: int  # the leaf's position in the log
    step: str
    actor: str
    signed_at_ms: int
    state: str
    action_digest: bytes
    due: str = ""  # the limit this step answered ("" for none)
    due_ms: int = 0
    late: bool = False  # taken after that limit
    grounds: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequestTimeline:
    notice_id: str
    kind: str
    issuer: str
    executor: str
    steps: tuple[StepRecord, ...]
    deadline: str  # the limit running after the last step ("" for none)
    deadline_ms: int

    def overdue(self, now_ms: int) -> bool:
        return bool(self.deadline) and now_ms > self.deadline_ms


def timelines(leaves: Iterable[tuple[int, audit_pb2.LogLeaf]]) -> list[RequestTimeline]:
    """Every request in `leaves`, in order of its first step."""
    steps: dict[str, list[StepRecord]] = {}
    heads: dict[str, requests_pb2.RequestStepLogged] = {}
    last: dict[str, requests_pb2.RequestStepLogged] = {}
    for index, leaf in leaves:
        if logleaf.kind_of(leaf) != logleaf.REQUEST_STEP:
            continue
        s = leaf.request_step
        before = last.get(s.notice_id)
        due, due_ms = "", 0
        if before is not None and before.deadline and s.step in ANSWERS.get(before.deadline, ()):
            due, due_ms = before.deadline, before.deadline_ms
        steps.setdefault(s.notice_id, []).append(
            StepRecord(
                index=index,
                step=s.step,
                actor=s.actor,
                signed_at_ms=s.signed_at_ms,
                state=s.state,
                action_digest=bytes(s.action_digest),
                due=due,
                due_ms=due_ms,
                late=bool(due) and s.signed_at_ms > due_ms,
                grounds=tuple(s.grounds),
            )
        )
        heads.setdefault(s.notice_id, s)
        last[s.notice_id] = s
    return [
        RequestTimeline(
            notice_id=nid,
            kind=heads[nid].kind,
            issuer=heads[nid].issuer,
            executor=heads[nid].executor,
            steps=tuple(steps[nid]),
            deadline=last[nid].deadline,
            deadline_ms=last[nid].deadline_ms,
        )
        for nid in heads
    ]
