"""A recipient's decisions per notice shape (broker/core/intake.py): the shape key covers
every fact a decision reads, and the cached answer is exactly `stricter`'s."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import decisions as dc
from broker.core import intake, relay
from broker.errors import InvalidArgument
from broker.v1 import notice_pb2

NOW = 1_800_000_000_000
ME = "DE-BKA"
SECTIONS = ("case_facts", "identity", "judicial")


def _base() -> notice_pb2.NoticeHeader:
    return notice_pb2.NoticeHeader(
        notice_id="n-1",
        version=1,
        originator="FR-NCB",
        kind="interpol.red",
        purpose="arrest",
        tlp=notice_pb2.TLP_AMBER,
        handling_codes=["H1"],
        evaluation=notice_pb2.Evaluation(source="B", information="2"),
        created_at_ms=NOW - 1000,
        expires_at_ms=NOW + 10_000_000,
    )


def _mutations(msg: notice_pb2.NoticeHeader) -> Iterator[tuple[str, notice_pb2.NoticeHeader]]:
    """One header per field (and per field of a nested message), that field changed."""
    T = FieldDescriptor

    def changed(m: object, f: FieldDescriptor) -> None:
        if f.message_type is not None:  # a repeated message (attachments): one more
            getattr(m, f.name).add()
        elif f.is_repeated:
            getattr(m, f.name).append("H2")
        elif f.type == T.TYPE_STRING:
            setattr(m, f.name, getattr(m, f.name) + "x")
        elif f.type == T.TYPE_BYTES:
            setattr(m, f.name, b"\x07" * 32)
        elif f.type == T.TYPE_ENUM:
            now = getattr(m, f.name)
            other = next(v.number for v in f.enum_type.values if v.number not in (0, now))
            setattr(m, f.name, other)
        elif f.name == "embargo_until_ms":
            setattr(m, f.name, NOW + 60_000)
        else:
            setattr(m, f.name, getattr(m, f.name) + 1)

    for f in msg.DESCRIPTOR.fields:
        if f.message_type is not None and not f.is_repeated:
            for sub in f.message_type.fields:
                h = notice_pb2.NoticeHeader()
                h.CopyFrom(msg)
                changed(getattr(h, f.name), sub)
                yield f"{f.name}.{sub.name}", h
        else:
            h = notice_pb2.NoticeHeader()
            h.CopyFrom(msg)
            changed(h, f)
            yield f.name, h


def _shape(h: notice_pb2.NoticeHeader, now: int) -> object:
    return dc.shape_of(intake.recipient_facts(h, ME, SECTIONS), now)


def test_the_shape_key_changes_whenever_the_facts_a_decision_reads_change() -> None:
    """If recipient_facts ever reads another header field, this fails until shape_key
    holds it too (else the cache would answer a new shape with an old decision)."""
    base = _base()
    key, shape = intake.shape_key(base, SECTIONS, NOW), _shape(base, NOW)
    differing = []
    for name, h in _mutations(base):
        try:
            other = _shape(h, NOW)
        except InvalidArgument:
            continue  # not a notice the policy can decide (e.g. an unknown TLP)
        if other != shape:
            differing.append(name)
            assert intake.shape_key(h, SECTIONS, NOW) != key, name
    # The mutations reach every fact: originator, kind, purpose, tlp, handling, data
    # subject, both evaluation codes, the embargo.
    assert len(differing) >= 9, differing
    # The sections and whether the embargo is in force are in the key as well.
    assert intake.shape_key(base, SECTIONS[:2], NOW) != key
    embargoed = _base()
    embargoed.embargo_until_ms = NOW + 60_000
    during = intake.shape_key(embargoed, SECTIONS, NOW)
    after = intake.shape_key(embargoed, SECTIONS, NOW + 120_000)
    assert during != after
    assert _shape(embargoed, NOW) != _shape(embargoed, NOW + 120_000)


def test_notices_of_one_shape_share_a_key() -> None:
    a, b = _base(), _base()
    b.notice_id, b.version, b.created_at_ms, b.expires_at_ms = "n-2", 3, NOW, NOW + 1
    assert intake.shape_key(a, SECTIONS, NOW) == intake.shape_key(b, SECTIONS, NOW)
    assert _shape(a, NOW) == _shape(b, NOW)


_OBLIGATION = st.builds(
    notice_pb2.Obligation,
    section=st.sampled_from(["identity", "judicial"]),
    kind=st.sampled_from(["max_retention_days", "caveat", "no_onward"]),
    rule=st.sampled_from(["r1", "r2"]),
    days=st.integers(min_value=0, max_value=3),
    text=st.sampled_from(["", "t"]),
)


@settings(max_examples=200)
@given(st.lists(_OBLIGATION, max_size=5), st.lists(_OBLIGATION, max_size=5), st.booleans())
def test_apply_is_stricter(
    delivered: list[notice_pb2.Obligation], expected: list[notice_pb2.Obligation], same: bool
) -> None:
    """The cached answer is `stricter`'s, whether or not the broker carried exactly what
    the policy attaches (`same` makes that case frequent)."""
    if same:
        delivered = [notice_pb2.Obligation.FromString(o.SerializeToString()) for o in expected]
    exp = intake.expectation(expected, 0)
    assert intake.apply(delivered, exp) == intake.stricter(delivered, expected)


def test_a_changed_obligation_is_not_answered_from_the_cache() -> None:
    want = [notice_pb2.Obligation(section="identity", kind="max_retention_days", rule="r", days=30)]
    exp = intake.expectation(want, 0)
    longer = [
        notice_pb2.Obligation(section="identity", kind="max_retention_days", rule="r", days=90)
    ]
    applied, dropped, added = intake.apply(longer, exp)
    assert [o.days for o in applied] == [30] and (dropped, added) == ((), ())
    assert intake.apply([], exp)[1] == (("identity", "max_retention_days", "r"),)


def test_the_cache_is_bounded_and_keeps_the_recently_used() -> None:
    cache = intake.ExpectationCache(limit=2)
    one, two, three = (intake.expectation([], n) for n in (1, 2, 3))
    cache.put(("a",), one)
    cache.put(("b",), two)
    assert cache.get(("a",)) is one  # a is now the most recent
    cache.put(("c",), three)
    assert len(cache) == 2
    assert cache.get(("b",)) is None and cache.get(("a",)) is one and cache.get(("c",)) is three
    with pytest.raises(ValueError):
        intake.ExpectationCache(limit=0)


def test_facts_of_and_recipient_facts_agree_on_the_header() -> None:
    """recipient_facts is facts_of with the node itself as the one agency named."""
    h = _base()
    mine = intake.recipient_facts(h, ME, SECTIONS)
    theirs = relay.facts_of(h, notice_pb2.OriginatorRestrictions(), SECTIONS)
    assert (mine.kind, mine.tlp, mine.sections) == (theirs.kind, theirs.tlp, theirs.sections)
    assert mine.restrictions.allow_agencies == frozenset({ME})
