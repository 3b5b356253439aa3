"""The hot path's decision cache gives exactly the engine's decisions and records."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import decisions as dc
from broker.core import records
from broker.core.delivery import encode_obligations
from broker.core.policy import Restrictions

from .policy.test_shipped import REGISTRY, red, shipped

NOW = 1_800_000_000_000
SECTIONS = ("identity", "photos", "biometrics", "dna", "case_facts", "judicial")
TLPS = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT")


@settings(max_examples=60)
@given(
    st.lists(st.sampled_from(SECTIONS), min_size=1, unique=True),
    st.sampled_from(TLPS),
    st.lists(st.sampled_from(["H0", "H1", "H2", "H3:call first"]), unique=True, max_size=3),
    st.lists(st.sampled_from(["DE", "IT", "US", "EU"]), unique=True, max_size=2),
)
def test_cached_shape_equals_engine(
    sections: list[str], tlp: str, handling: list[str], deny: list[str]
) -> None:
    facts = red(
        sections=tuple(sorted(set(sections) | {"identity", "case_facts", "judicial"})),
        tlp=tlp,
        handling=tuple(handling),
        deny_countries=frozenset(deny),
        created_at_ms=NOW,
    )
    bundle = shipped()
    cache = dc.DecisionCache()
    shape = cache.outcome(bundle, "r1", REGISTRY, facts, NOW)
    others = [p for p in REGISTRY if p.id != facts.originator]
    engine = {d.recipient: d for d in bundle.audience(facts, REGISTRY, now_ms=NOW)}
    for profile in others:
        want = engine[profile.id]
        assert shape.allowed(profile.id) == want.allowed_sections
        assert shape.decision(profile.id).decisions == want.decisions
        mine = tuple(sorted(want.allowed_sections))
        assert [
            (o.section, o.kind, o.rule, o.days) for o in shape.obligations(profile.id, mine)
        ] == [
            (d.section, o.kind, o.rule, o.days)
            for d in want.decisions
            if d.allowed
            for o in d.obligations
        ]
        assert shape.wire_obligations(profile.id, mine) == encode_obligations(
            shape.obligations(profile.id, mine)
        )
    # The record assembled from fragments is byte for byte the one records writes.
    chosen = [p for p in others if shape.allowed(p.id)]
    assert dc.decision_record(bundle.version, facts, shape, [p.id for p in chosen]) == (
        records.decision_record(bundle.version, facts, chosen, [engine[p.id] for p in chosen])
    )


def test_shapes_are_shared_across_notices_but_not_registries_or_embargoes() -> None:
    bundle = shipped()
    cache = dc.DecisionCache()
    a = red(created_at_ms=NOW)
    b = dataclasses.replace(a, created_at_ms=NOW + 5)
    first = cache.outcome(bundle, "r1", REGISTRY, a, NOW)
    assert cache.outcome(bundle, "r1", REGISTRY, b, NOW + 5) is first  # same shape
    assert cache.outcome(bundle, "r2", REGISTRY, a, NOW) is not first  # registry changed
    embargoed = dataclasses.replace(a, restrictions=Restrictions(embargo_until_ms=NOW + 1000))
    during = cache.outcome(bundle, "r1", REGISTRY, embargoed, NOW)
    after = cache.outcome(bundle, "r1", REGISTRY, embargoed, NOW + 2000)
    assert during is not after
    assert during.embargoed and not after.embargoed
    assert (cache.hits, cache.misses) == (1, 4)


def test_cache_is_bounded() -> None:
    bundle = shipped()
    cache = dc.DecisionCache(limit=2)
    for tlp in TLPS:
        cache.outcome(bundle, "r", REGISTRY, red(tlp=tlp), NOW)
    assert len(cache) == 2


def test_decided_under_changes_with_anything_the_decision_read() -> None:
    token = dc.decided_under("p1", "r1", "", 0)
    assert dc.still_decided(token, "p1", "r1", "", NOW)
    assert not dc.still_decided(token, "p2", "r1", "", NOW)
    assert not dc.still_decided(token, "p1", "r2", "", NOW)
    assert not dc.still_decided(token, "p1", "r1", "abc", NOW)
    held = dc.decided_under("p1", "r1", "", NOW + 10)
    assert dc.still_decided(held, "p1", "r1", "", NOW)
    assert not dc.still_decided(held, "p1", "r1", "", NOW + 10)  # the embargo ended
    for bad in ("", "p1|r1|", "p1|r1||x", "a|b|c|d|e"):
        assert not dc.still_decided(bad, "p1", "r1", "", NOW)


def test_withholding_leaves_from_the_shape_equal_those_read_from_the_record() -> None:
    from broker.core import logleaf

    bundle = shipped()
    facts = red(created_at_ms=NOW)
    shape = dc.DecisionCache().outcome(bundle, "r", REGISTRY, facts, NOW)
    planned = [
        ("IT-BORDER", tuple(sorted(shape.allowed("IT-BORDER")))),
        ("DE-BKA", ("identity",)),  # sealed less than allowed: not sealed, not denied
    ]
    record = dc.decision_record(bundle.version, facts, shape, [r for r, _s in planned])
    refused = tuple(
        (r, d.section, d.rules)
        for r, sealed in planned
        for d in shape.decision(r).decisions
        if d.section not in sealed and not d.allowed
    )
    common = dict(
        notice_id="n",
        version=1,
        originator="FR-NCB",
        policy_version=bundle.version,
        decision_record=record,
        planned=planned,
        logged_at_ms=NOW,
    )
    fast = logleaf.withholdings(**common, sections=facts.sections, refused=refused)  # type: ignore[arg-type]
    slow = logleaf.withholdings(**common)  # type: ignore[arg-type]
    assert fast == slow
    assert {(leaf.withheld.recipient, leaf.withheld.reason) for leaf in fast} == {
        ("IT-BORDER", logleaf.DENIED_BY_POLICY),
        ("DE-BKA", logleaf.NOT_SEALED),
    }
