"""The request lifecycle's pure rules: who takes each step, which steps follow which,
time limits from the signed times and the priority, and replay of signed steps."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core import requests
from broker.core.requests import HOUR_MS, RequestNotice, RequestState
from broker.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from broker.v1 import notice_pb2

from .policy.helpers import shipped

T0 = 1_800_000_000_000
DAY = 24 * HOUR_MS
SPECS = shipped().catalogue.requests
ISSUER, EXECUTOR = "FR-NCB", "DE-BKA"
PRIORITY = {"normal": notice_pb2.PRIORITY_NORMAL, "urgent": notice_pb2.PRIORITY_URGENT}


def action(step: str, actor: str, at_ms: int, **fields: object) -> notice_pb2.LifecycleAction:
    return notice_pb2.LifecycleAction(
        action_id=str(uuid.uuid4()),
        notice_id="6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        actor=actor,
        kind=requests.STEP_KINDS[step],  # type: ignore[arg-type]
        at_ms=at_ms,
        **fields,  # type: ignore[arg-type]
    )


def notice(kind: str = "request.eio", priority: str = "normal") -> RequestNotice:
    return RequestNotice(
        "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", ISSUER, kind, frozenset({EXECUTOR}), priority
    )


def run(kind: str, *steps: tuple[str, str, int], priority: str = "normal") -> RequestState:
    """Issue at T0, then take `steps` (name, actor, at) with the clock at each step."""
    spec = SPECS[kind]
    signed = action("issue", ISSUER, T0, target=EXECUTOR, priority=PRIORITY[priority])
    state = requests.issue(signed, notice(kind, priority), spec, now_ms=T0)
    for name, actor, at in steps:
        grounds = [spec.grounds[0]] if name == "refuse" else []
        state = requests.plan_step(action(name, actor, at, grounds=grounds), state, spec, now_ms=at)
    return state


def test_the_whole_way_to_executed() -> None:
    s = run(
        "request.eio",
        ("receive", EXECUTOR, T0 + 1),
        ("recognise", EXECUTOR, T0 + 2),
        ("partial", EXECUTOR, T0 + 3),
        ("partial", EXECUTOR, T0 + 4),
        ("execute", EXECUTOR, T0 + 5),
    )
    assert (s.state, s.partials, s.closed_at_ms, s.steps) == ("executed", 2, T0 + 5, 6)
    assert requests.deadline(s, SPECS["request.eio"]) is None


def test_eio_limits_run_from_receipt_then_from_recognition() -> None:
    spec = SPECS["request.eio"]
    received = run("request.eio", ("receive", EXECUTOR, T0 + 10))
    assert requests.deadline(received, spec) == requests.Deadline(
        "decision", T0 + 10 + 30 * DAY, T0 + 10 + 25 * DAY
    )
    # Asking for more information does not stop the clock.
    asked = run("request.eio", ("receive", EXECUTOR, T0 + 10), ("ask_info", EXECUTOR, T0 + DAY))
    assert requests.deadline(asked, spec) == requests.deadline(received, spec)
    recognised = run(
        "request.eio", ("receive", EXECUTOR, T0 + 10), ("recognise", EXECUTOR, T0 + 3 * DAY)
    )
    running = requests.deadline(recognised, spec)
    assert running is not None and (running.name, running.at_ms) == (
        "execution",
        T0 + 3 * DAY + 90 * DAY,
    )
    assert not requests.overdue(recognised, spec, T0 + 93 * DAY)
    assert requests.overdue(recognised, spec, T0 + 93 * DAY + 1)


def test_urgent_limits_are_shorter() -> None:
    s = run("request.eio", ("receive", EXECUTOR, T0), priority="urgent")
    running = requests.deadline(s, SPECS["request.eio"])
    assert running is not None and running.at_ms == T0 + 24 * HOUR_MS


def test_eaw_consent_brings_the_decision_to_ten_days() -> None:
    spec = SPECS["request.eaw"]
    arrested = run("request.eaw", ("receive", EXECUTOR, T0))
    assert requests.deadline(arrested, spec).at_ms == T0 + 60 * DAY  # type: ignore[union-attr]
    consented = run("request.eaw", ("receive", EXECUTOR, T0), ("consent", EXECUTOR, T0 + 5 * DAY))
    assert requests.deadline(consented, spec).at_ms == T0 + 15 * DAY  # type: ignore[union-attr]
    # Consent late in the 60 days never extends it.
    late = run("request.eaw", ("receive", EXECUTOR, T0), ("consent", EXECUTOR, T0 + 55 * DAY))
    assert requests.deadline(late, spec).at_ms == T0 + 60 * DAY  # type: ignore[union-attr]
    # Surrender within 10 days of the final decision (Art. 23(2)).
    decided = run("request.eaw", ("receive", EXECUTOR, T0), ("recognise", EXECUTOR, T0 + DAY))
    assert requests.deadline(decided, spec).at_ms == T0 + 11 * DAY  # type: ignore[union-attr]


def test_a_production_order_is_answered_from_receipt() -> None:
    spec = SPECS["request.production"]
    s = run("request.production", ("receive", EXECUTOR, T0), priority="urgent")
    assert requests.deadline(s, spec) == requests.Deadline(
        "execution", T0 + 8 * HOUR_MS, T0 + 6 * HOUR_MS
    )
    done = run("request.production", ("receive", EXECUTOR, T0), ("execute", EXECUTOR, T0 + 1))
    assert done.state == "executed"  # no recognition stage


@pytest.mark.parametrize(
    ("steps", "error"),
    [
        ((("receive", ISSUER, T0),), PermissionDenied),
        ((("withdraw", EXECUTOR, T0),), PermissionDenied),
        ((("receive", EXECUTOR, T0), ("provide_info", EXECUTOR, T0)), PermissionDenied),
        ((("recognise", EXECUTOR, T0),), FailedPrecondition),
        ((("receive", EXECUTOR, T0), ("execute", EXECUTOR, T0)), FailedPrecondition),
        ((("receive", EXECUTOR, T0), ("receive", EXECUTOR, T0)), FailedPrecondition),
        ((("receive", EXECUTOR, T0), ("consent", EXECUTOR, T0)), FailedPrecondition),
        (
            (("receive", EXECUTOR, T0), ("refuse", EXECUTOR, T0), ("withdraw", ISSUER, T0)),
            FailedPrecondition,
        ),
        ((("issue", ISSUER, T0),), FailedPrecondition),
        ((("issue", EXECUTOR, T0),), PermissionDenied),
        ((("receive", EXECUTOR, T0 - 1),), InvalidArgument),  # before the previous step
    ],
)
def test_wrong_party_or_state_is_refused(
    steps: tuple[tuple[str, str, int], ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        run("request.eio", *steps)


def test_refusal_grounds_must_be_the_kinds_own() -> None:
    spec = SPECS["request.eio"]
    s = run("request.eio", ("receive", EXECUTOR, T0))
    for grounds in ([], ["eaw.3.1"]):
        with pytest.raises(InvalidArgument):
            requests.plan_step(action("refuse", EXECUTOR, T0, grounds=grounds), s, spec, now_ms=T0)
    with pytest.raises(InvalidArgument, match="only a refusal carries grounds"):
        requests.plan_step(
            action("recognise", EXECUTOR, T0, grounds=["eio.11.1.a"]), s, spec, now_ms=T0
        )
    refused = requests.plan_step(
        action("refuse", EXECUTOR, T0, grounds=["eio.11.1.g"]), s, spec, now_ms=T0
    )
    assert (refused.state, refused.grounds) == ("refused", ("eio.11.1.g",))
    assert s.state == "received"  # the state passed in is unchanged


def test_issue_needs_one_executing_authority_and_a_request_kind() -> None:
    spec = SPECS["request.eio"]
    issue = action("issue", ISSUER, T0, target=EXECUTOR)
    wide = replace(notice(), audience=frozenset({EXECUTOR, "IT-BORDER"}))
    with pytest.raises(FailedPrecondition, match="one executing authority"):
        requests.issue(issue, wide, spec, now_ms=T0)
    with pytest.raises(InvalidArgument, match="not a request kind"):
        requests.issue(issue, replace(notice(), kind="interpol.red"), None, now_ms=T0)
    with pytest.raises(InvalidArgument, match="minutes from the broker's clock"):
        requests.issue(issue, notice(), spec, now_ms=T0 + requests.MAX_SKEW_MS + 1)
    with pytest.raises(InvalidArgument, match="priority must be the request header's"):
        requests.issue(issue, notice(priority="urgent"), spec, now_ms=T0)


def test_replay_takes_the_priority_signed_in_the_issue_step() -> None:
    spec = SPECS["request.eio"]
    steps = [
        action("issue", ISSUER, T0, target=EXECUTOR, priority=notice_pb2.PRIORITY_URGENT),
        action("receive", EXECUTOR, T0 + 1),
    ]
    s = requests.replay(steps, notice(priority="normal"), spec)  # whatever a broker claims
    assert s.priority == "urgent"
    assert requests.deadline(s, spec).at_ms == T0 + 1 + 24 * HOUR_MS  # type: ignore[union-attr]


def test_replay_rebuilds_the_state_and_refuses_a_reordering() -> None:
    spec = SPECS["request.eio"]
    steps = [
        action("issue", ISSUER, T0, target=EXECUTOR),
        action("receive", EXECUTOR, T0 + DAY),
        action("recognise", EXECUTOR, T0 + 2 * DAY),
    ]
    s = requests.replay(steps, notice(), spec)
    assert (s.state, s.received_at_ms, s.decided_at_ms) == ("recognised", T0 + DAY, T0 + 2 * DAY)
    with pytest.raises(FailedPrecondition):
        requests.replay([steps[0], steps[2], steps[1]], notice(), spec)
    with pytest.raises(FailedPrecondition):
        requests.replay(steps[1:], notice(), spec)


@given(st.lists(st.sampled_from(requests.STEPS_ORDER), max_size=8))
def test_any_sequence_either_replays_or_raises_a_broker_error(names: list[str]) -> None:
    spec = SPECS["request.eio"]
    steps = [action("issue", ISSUER, T0, target=EXECUTOR)]
    for i, name in enumerate(names, start=1):
        actor = ISSUER if name in requests.ISSUER_STEPS else EXECUTOR
        grounds = ["eio.11.1.a"] if name == "refuse" else []
        steps.append(action(name, actor, T0 + i, grounds=grounds))
    try:
        s = requests.replay(steps, notice(), spec)
    except (FailedPrecondition, PermissionDenied, InvalidArgument):
        return
    assert s.state in (*requests.OPEN_STATES, "executed", "refused", "withdrawn")
    assert s.steps == len(steps)
