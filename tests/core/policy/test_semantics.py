"""Engine semantics on small inline bundles: default deny, forbid overrides permit, gates,
groups that never mean everyone, obligations, holds, determinism."""

from __future__ import annotations

import pytest

from broker.core.policy import Decision, PolicyError, RecipientDecision

from .helpers import GROUPS, agency, bundle, by_section, notice

RULES = """
[[rule]]
id = "police-all"
effect = "permit"
reason = "police may read"
recipient_roles = ["police"]

[[rule]]
id = "border-a"
effect = "permit"
reason = "border reads a"
sections = ["a"]
recipient_roles = ["border"]

[[rule]]
id = "no-c-outside-g1"
effect = "forbid"
reason = "c stays in g1"
sections = ["c"]
unless = { recipient_groups = ["g1"] }

[[rule]]
id = "keep-short"
effect = "oblige"
reason = "short"
recipient_roles = ["border"]
obligation = "max_retention_days"
days = 7
text = "keep {days} days"

[[rule]]
id = "ack"
effect = "oblige"
reason = "ack"
handling = ["H3"]
obligation = "acknowledge"
text = "H3 says: {caveats} ({organisation})"

[[rule]]
id = "embargo"
effect = "hold"
reason = "hubs first"
kinds = ["k2"]
unless = { recipient_groups = ["g2"] }
"""


def test_default_deny_permit_and_forbid_overrides() -> None:
    b = bundle(RULES)
    police_fr = b.decide(notice(), agency("FR-POL", "FR"))
    police_it = b.decide(notice(), agency("IT-POL", "IT"))
    border = b.decide(notice(), agency("FR-BOR", "FR", ["border"]))
    registry = b.decide(notice(), agency("FR-REG", "FR", ["registry"]))
    assert police_fr.allowed_sections == {"a", "b", "c"}
    assert police_it.allowed_sections == {"a", "b"}
    c = by_section(police_it)["c"]
    assert isinstance(c, Decision)
    assert (c.allowed, c.rules, c.reason) == (False, ("no-c-outside-g1",), "c stays in g1")
    assert border.allowed_sections == {"a"}
    b_ = by_section(border)["b"]
    assert b_.rules == ("default-deny",) and not b_.allowed  # type: ignore[attr-defined]
    assert not registry.allowed
    assert {d.rules for d in registry.decisions} == {("default-deny",)}
    a = by_section(police_fr)["a"]
    assert a.rules == ("police-all",) and a.reason == "police may read"  # type: ignore[attr-defined]


def test_every_matching_rule_is_named() -> None:
    b = bundle(
        RULES + '\n[[rule]]\nid = "fr-too"\neffect = "permit"\nreason = "fr"\n'
        'recipient_countries = ["FR"]\n'
    )
    d = by_section(b.decide(notice(), agency("FR-POL", "FR")))["a"]
    assert d.rules == ("police-all", "fr-too")  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", ["suspended", "revoked"])
def test_suspended_or_revoked_agency_receives_nothing(status: str) -> None:
    b = bundle(RULES)
    rd = b.decide(notice(), agency("FR-POL", "FR", status=status))
    assert not rd.allowed
    assert {d.rules for d in rd.decisions} == {("registry.status",)}
    assert status in rd.decisions[0].reason


def test_originator_allow_and_deny_lists() -> None:
    b = bundle(RULES)
    fr, de, it = agency("FR-POL", "FR"), agency("DE-POL", "DE"), agency("IT-POL", "IT")
    hub = agency("HUB", "EU")
    cases = [
        ({"deny_agencies": frozenset({"FR-POL"})}, {"DE-POL", "IT-POL", "HUB"}),
        ({"deny_countries": frozenset({"DE"})}, {"FR-POL", "IT-POL", "HUB"}),
        ({"deny_groups": frozenset({"g1"})}, {"IT-POL", "HUB"}),
        ({"allow_groups": frozenset({"g1"})}, {"FR-POL", "DE-POL"}),
        ({"allow_countries": frozenset({"IT"})}, {"IT-POL"}),
        ({"allow_agencies": frozenset({"HUB"})}, {"HUB"}),
        ({"allow_groups": frozenset({"g2"}), "deny_agencies": frozenset({"HUB"})}, set()),
    ]
    for restrictions, expected in cases:
        audience = b.audience(notice(**restrictions), [fr, de, it, hub])
        assert {r.recipient for r in audience if r.allowed} == expected, restrictions
        for r in audience:
            if not r.allowed:
                assert r.decisions[0].rules[0] in ("originator.deny", "originator.allow")


def test_unknown_or_empty_groups_never_mean_everyone() -> None:
    b = bundle(RULES)
    everyone = [agency("FR-POL", "FR"), agency("IT-POL", "IT"), agency("HUB", "EU")]
    # An allow list naming a group nobody is in lets nobody through.
    for group in ("g2",):
        audience = b.audience(notice(allow_groups=frozenset({group})), everyone[:2])
        assert not any(r.allowed for r in audience)
    # The originator cannot name a group the bundle does not define ...
    with pytest.raises(PolicyError, match="unknown group"):
        b.check_notice(notice(allow_groups=frozenset({"ghost"})))
    # ... and if it reached the engine anyway, it would match nobody.
    audience = b.audience(notice(allow_groups=frozenset({"ghost"})), everyone)
    assert not any(r.allowed for r in audience)
    # A registry claiming membership of an undefined group gains nothing.
    ghost = agency("IT-X", "IT", groups=["ghost", "g1"])
    assert b.in_group(ghost, "g1") and not b.in_group(ghost, "ghost")
    assert b.decide(notice(), ghost).allowed_sections == {"a", "b", "c"}  # g1 explicitly
    # A rule cannot name an undefined group, and a group cannot be empty (test_compile).
    with pytest.raises(PolicyError, match="unknown group"):
        bundle(RULES.replace('["g1"]', '["ghost"]'))


def test_obligations_carry_retention_caveats_and_organisation() -> None:
    b = bundle(RULES)
    n = notice(handling=("H3:call the desk first", "H2"))
    police = by_section(b.decide(n, agency("FR-POL", "FR", organisation="Police nationale")))
    obligations = police["a"].obligations  # type: ignore[attr-defined]
    assert [o.kind for o in obligations] == ["acknowledge", "max_retention_days"]
    assert obligations[0].text == "H3 says: call the desk first (Police nationale)"
    assert obligations[0].rule == "ack"
    assert (obligations[1].days, obligations[1].rule) == (100, "catalogue.retention")
    border = by_section(b.decide(n, agency("FR-BOR", "FR", ["border"])))
    cap = border["a"].obligations[-1]  # type: ignore[attr-defined]
    assert (cap.kind, cap.days, cap.rule, cap.text) == (
        "max_retention_days",
        7,
        "keep-short",
        "keep 7 days",
    )
    assert border["b"].obligations == ()  # type: ignore[attr-defined]  # refused: none
    rd = b.decide(n, agency("FR-POL", "FR"))
    assert "FR-POL" in rd.obligations[0].text  # own organisation by default


def test_hold_defers_delivery_while_the_embargo_lasts() -> None:
    b = bundle(RULES)
    until = 10_000
    n = notice("k2", ("a", "b"), purpose="p2", embargo_until_ms=until)
    fr, hub = agency("FR-POL", "FR"), agency("HUB", "EU")
    held = b.decide(n, fr, now_ms=5_000)
    assert held.allowed_sections == {"a", "b"}
    assert held.deliver_after_ms == until
    a = by_section(held)["a"]
    assert a.deliver_after_ms == until and a.rules == ("police-all", "embargo")  # type: ignore[attr-defined]
    assert "embargo" in a.reason  # type: ignore[attr-defined]
    assert b.decide(n, hub, now_ms=5_000).deliver_after_ms == 0
    assert b.decide(n, fr, now_ms=until).deliver_after_ms == 0  # over
    assert b.decide(n, fr).deliver_after_ms == until  # now_ms defaults to 0: in force
    assert b.decide(notice("k2", ("a",), purpose="p2"), fr).deliver_after_ms == 0


def test_audience_excludes_originator_and_matches_decide() -> None:
    b = bundle(RULES)
    registry = [
        agency(f"A{i}", c, r)
        for i, (c, r) in enumerate(
            [("FR", ["police"]), ("IT", ["border"]), ("DE", ["police", "border"]), ("EU", ["x"])]
        )
    ]
    n = notice(originator="A2", handling=("H3:x",))
    audience = b.audience(n, registry, now_ms=1)
    assert [r.recipient for r in audience] == ["A0", "A1", "A3"]
    for rd in audience:
        profile = next(p for p in registry if p.id == rd.recipient)
        single = b.decide(n, profile, now_ms=1)
        assert rd == single and rd.decisions == single.decisions
        assert rd.allowed_sections == single.allowed_sections


def test_same_bundle_and_inputs_give_the_same_decision() -> None:
    registry = [agency("FR-POL", "FR"), agency("IT-BOR", "IT", ["border"])]
    n = notice(handling=("H3:x",))
    first = [rd.decisions for rd in bundle(RULES).audience(n, registry)]
    for _ in range(3):
        again = bundle(RULES)  # a fresh compilation: nothing cached carries over
        assert [rd.decisions for rd in again.audience(n, list(reversed(registry)))] == first


def test_recipient_decision_value_semantics() -> None:
    d = Decision("X", "a", True, ("r",), "why")
    rd = RecipientDecision("X", [d])
    assert rd.allowed and rd.allowed_sections == {"a"} and rd.decisions == (d,)
    assert rd == RecipientDecision("X", (d,)) and hash(rd) == hash(RecipientDecision("X", (d,)))
    assert "RecipientDecision" in repr(rd)


def test_groups_by_country_agency_and_registry() -> None:
    b = bundle(RULES, groups=GROUPS)
    assert b.in_group(agency("X", "FR"), "g1")
    assert b.in_group(agency("HUB", "EU"), "g2")
    assert b.in_group(agency("Y", "IT", groups=["g2"]), "g2")
    assert not b.in_group(agency("Y", "IT"), "g1")
    assert not b.in_group(agency("Y", "IT"), "nope")
