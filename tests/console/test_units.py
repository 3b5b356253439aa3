"""The console's pure parts, without a browser: what it derives from log leaves, the
geometry of its pictures, the side-by-side diff, prepared actions and its guards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.console import charts, confirm, derive, textdiff
from broker.console.config import ConsoleConfig
from broker.console.security import Guard
from broker.core import logleaf
from broker.errors import FailedPrecondition, InvalidArgument, NotFound
from broker.v1 import admin_pb2, audit_pb2

RECORD = json.dumps(
    {
        "decisions": [
            {"recipient": "DE", "section": "identity", "allowed": True, "rules": ["r1"]},
            {"recipient": "DE", "section": "bio", "allowed": True, "rules": ["r1"]},
            {"recipient": "IT", "section": "identity", "allowed": True, "rules": ["r2"]},
            {"recipient": "IT", "section": "bio", "allowed": False, "rules": ["no-bio"]},
            {"recipient": "HU", "section": "identity", "allowed": False, "rules": ["deny"]},
            {"recipient": "HU", "section": "bio", "allowed": False, "rules": ["deny"]},
        ]
    }
).encode()


def leaves(at: int = 1_000) -> list[tuple[int, audit_pb2.LogLeaf]]:
    planned = [("DE", ["bio", "identity"]), ("IT", ["identity"]), ("PL", ["identity"])]
    out = logleaf.publication(
        notice_id="n1",
        version=1,
        originator="FR",
        kind="interpol.red",
        header_digest=b"h" * 32,
        envelope_digest=b"e" * 32,
        created_at_ms=at,
        expires_at_ms=at + 10,
        accepted_at_ms=at,
        policy_version="p" * 64,
        decision_record=RECORD.decode(),
        planned=planned,
        logged_at_ms=at,
    )
    receipt = audit_pb2.DeliveryReceipt(
        notice_id="n1", version=1, originator="FR", recipient="DE", sections=["bio", "identity"]
    )
    out.append(audit_pb2.LogLeaf(format=1, logged_at_ms=at + 1, receipt=receipt))
    out.append(
        logleaf.lifecycle(
            kind="dead_lettered",
            notice_id="n1",
            version=1,
            originator="FR",
            recipient="PL",
            detail="no receipt after 5 delivery attempts",
            logged_at_ms=at + 2,
        )
    )
    return list(enumerate(out))


def test_flows_count_every_outcome_and_honour_the_period() -> None:
    views = derive.notices(leaves()).values()
    flows = derive.flows(views, {("n1", 1): RECORD}, 0, 10_000)
    got = {(c.recipient, c.outcome): (c.sections, c.names) for c in flows.cells}
    assert got == {
        ("DE", derive.RECEIVED): (2, ("bio", "identity")),
        ("IT", derive.AWAITING): (1, ("identity",)),
        ("IT", derive.WITHHELD): (1, ("bio",)),
        ("PL", derive.UNDELIVERED): (1, ("identity",)),
        ("HU", derive.REFUSED): (2, ("bio", "identity")),
    }
    assert flows.notices == 1 and flows.total(derive.WITHHELD) == 1
    # Without its decision record, a refusal cannot be seen: it is counted as missing.
    assert derive.flows(views, {}, 0, 10_000).records_missing == 1
    assert derive.flows(views, {("n1", 1): RECORD}, 2_000, 3_000).cells == ()
    assert derive.flows(views, {("n1", 1): RECORD}, 0, 10_000, kind="sis.art36").cells == ()


def test_flow_chart_draws_one_band_per_cell_stacked_on_its_nodes() -> None:
    flows = derive.flows(derive.notices(leaves()).values(), {("n1", 1): RECORD}, 0, 10_000)
    chart = charts.flow_chart(flows)
    assert len(chart.bands) == len(flows.cells)
    nodes = {n.label: n for n in chart.nodes}
    assert nodes["interpol.red"].total == 7 and nodes["HU"].total == 2
    # The bands leaving a kind fill its node exactly, top to bottom.
    red = nodes["interpol.red"]
    starts = [float(b.d.split()[2]) for b in chart.bands]
    assert starts[0] == pytest.approx(red.y, abs=0.1)
    assert all("→" in b.title for b in chart.bands)
    assert charts.flow_chart(derive.flows([], {}, 0, 1)).bands == ()


def test_timeline_places_points_in_time_and_size_order() -> None:
    t = charts.timeline([(3_000, 30, 1), (1_000, 10, 0), (2_000, 20, 0)])
    xs = [p.x for p in t.points]
    ys = [p.y for p in t.points]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # larger logs drawn higher
    assert [p.cosigned for p in t.points] == [0, 0, 1]
    assert t.path.startswith("M ") and t.path.count("L ") == 2
    assert charts.timeline([]).points == ()


def test_side_by_side_diff_marks_changed_added_and_removed_lines() -> None:
    files = textdiff.bundle_diff(
        {"a.toml": b"x = 1\ny = 2\n", "gone.toml": b"z = 0\n"},
        {"a.toml": b"x = 1\ny = 3\nw = 4\n", "new.toml": b"q = 1\n"},
    )
    by = {f.path: f for f in files}
    assert [f.path for f in files] == ["a.toml", "gone.toml", "new.toml"]
    assert (by["gone.toml"].status, by["new.toml"].status) == ("removed", "added")
    rows = by["a.toml"].rows
    assert [(r.left, r.right, r.tag) for r in rows] == [
        ("x = 1", "x = 1", textdiff.SAME),
        ("y = 2", "y = 3", textdiff.CHANGED),
        ("", "w = 4", textdiff.ADDED),
    ]
    assert by["a.toml"].changes == 2


def test_prepared_actions_are_single_use_and_expire() -> None:
    store = confirm.PendingActions()
    entry = admin_pb2.AgencyEntry(id="IT", country="IT", status="active", revision=3)
    p = confirm.status_change(
        store.new_id(), current=entry, status="suspended", reason="audit", at_ms=0, back="/"
    )
    assert admin_pb2.AgencyEntry.FromString(p.payload).revision == 4
    assert p.message.startswith(b"broker.v1 agency entry\x00")
    store.add(p, 0)
    assert store.get(p.id, 1).id == p.id
    store.take(p.id, 2)
    with pytest.raises(NotFound, match="nothing was signed"):
        store.take(p.id, 3)
    store.add(p, 0)
    with pytest.raises(NotFound):
        store.get(p.id, confirm.TTL_MS + 1)
    with pytest.raises(FailedPrecondition, match="already active"):
        confirm.status_change("k", current=entry, status="active", reason="x", at_ms=0, back="/")
    with pytest.raises(InvalidArgument, match="reason"):
        confirm.status_change("k", current=entry, status="suspended", reason=" ", at_ms=0, back="/")


def test_the_console_binds_only_loopback_and_needs_an_identity(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="loopback"):
        ConsoleConfig(tmp_path, auditor="dpo", listen="0.0.0.0:8470")
    with pytest.raises(InvalidArgument, match="needs an identity"):
        ConsoleConfig(tmp_path)
    assert ConsoleConfig(tmp_path, admin="root", listen="[::1]:0").port == 0


def test_the_guard_accepts_only_its_own_cookie_and_csrf_token() -> None:
    g = Guard(8470, token="t0k")
    assert g.session_ok("other=1; broker_console_8470=t0k")
    assert not g.session_ok("broker_console_8470=t0kx")
    assert not g.session_ok("broker_console_8471=t0k")
    assert g.csrf_ok(g.csrf) and not g.csrf_ok("t0k")
    assert Guard(8470).token != Guard(8470).token  # a new token every run


def test_requests_follow_their_latest_logged_step_and_show_overdue() -> None:
    from broker.console import requestlog

    def step(i: int, name: str, actor: str, state: str, at: int, **kw: object) -> Any:
        leaf = logleaf.request_step(
            notice_id="r1",
            kind="request.eio",
            step=name,
            actor=actor,
            issuer="FR",
            executor="DE",
            state=state,
            signed_at_ms=at,
            action=name.encode(),
            deadline=str(kw.get("deadline", "")),
            deadline_ms=int(kw.get("due", 0)),  # type: ignore[call-overload]
            grounds=list(kw.get("grounds", [])),  # type: ignore[call-overload]
            priority=1,
            logged_at_ms=at,
        )
        return (i, leaf)

    log = [
        *leaves(),
        step(10, "issue", "FR", "issued", 1_000),
        step(11, "receive", "DE", "received", 2_000, deadline="decision", due=5_000),
    ]
    (line,) = requestlog.requests(log)
    assert (line.state, line.last_actor, line.deadline, line.steps) == (
        "received",
        "DE",
        "decision",
        2,
    )
    assert (line.issued_at_ms, line.priority, line.last_index) == (1_000, "urgent", 11)
    assert not line.overdue(5_000) and line.overdue(5_001)
    log.append(step(12, "refuse", "DE", "refused", 3_000, grounds=["eio.11.1.d"]))
    (line,) = requestlog.requests(log)
    assert (line.state, line.grounds, line.overdue(10**12)) == ("refused", ("eio.11.1.d",), False)
