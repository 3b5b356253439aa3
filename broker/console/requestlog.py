"""What the console derives of judicial requests from the verified log (pure): each
request's latest step, the time limit then running and whether it is overdue at a
given time. The log's RequestStepLogged leaves carry all of it (docs/judicial.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.core import logleaf
from broker.v1 import audit_pb2, notice_pb2

PRIORITIES = {notice_pb2.PRIORITY_NORMAL: "normal", notice_pb2.PRIORITY_URGENT: "urgent"}


@dataclass(frozen=True)
class RequestLine:
    """One request as its latest logged step leaves it."""

    notice_id: str
    kind: str
    issuer: str
    executor: str
    priority: str
    state: str
    last_step: str
    last_actor: str
    last_at_ms: int  # the actor's signed time
    issued_at_ms: int
    deadline: str
    deadline_ms: int
    steps: int
    grounds: tuple[str, ...]
    last_index: int

    def overdue(self, now_ms: int) -> bool:
        return bool(self.deadline) and now_ms > self.deadline_ms


def requests(leaves: Iterable[tuple[int, audit_pb2.LogLeaf]]) -> list[RequestLine]:
    """Every request in the log, newest issue first."""
    out: dict[str, RequestLine] = {}
    for index, leaf in leaves:
        if logleaf.kind_of(leaf) != logleaf.REQUEST_STEP:
            continue
        s = leaf.request_step
        before = out.get(s.notice_id)
        out[s.notice_id] = RequestLine(
            notice_id=s.notice_id,
            kind=s.kind,
            issuer=s.issuer,
            executor=s.executor,
            priority=PRIORITIES.get(s.priority, "normal"),
            state=s.state,
            last_step=s.step,
            last_actor=s.actor,
            last_at_ms=s.signed_at_ms,
            issued_at_ms=before.issued_at_ms if before else s.signed_at_ms,
            deadline=s.deadline,
            deadline_ms=s.deadline_ms,
            steps=(before.steps if before else 0) + 1,
            grounds=tuple(s.grounds) or (before.grounds if before else ()),
            last_index=index,
        )
    return sorted(out.values(), key=lambda r: (-r.issued_at_ms, r.notice_id))
