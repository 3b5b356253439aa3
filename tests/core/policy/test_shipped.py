"""The shipped bundle: each kind of rule with a case it permits and a case it refuses."""

from __future__ import annotations

import pytest

from broker.core.policy import AgencyProfile, NoticeFacts, PolicyError

from .helpers import agency as _agency
from .helpers import by_section, notice, shipped

ALL = (
    "locate_arrest",
    "locate_missing",
    "identification",
    "investigation",
    "threat_warning",
    "sanctions",
    "judicial_procedure",
    "discreet_check",
    "seizure",
    "border_control",
    "return",
)
H = 3_600_000
NOW = 1_800_000_000_000


def agency(aid: str, country: str, roles: tuple[str, ...], **kw: object) -> AgencyProfile:
    kw.setdefault("purposes", ALL)
    return _agency(aid, country, roles, **kw)  # type: ignore[arg-type]


FR_NCB = agency("FR-NCB", "FR", ("ncb", "police"))
DE_BKA = agency("DE-BKA", "DE", ("police", "sirene"))
IT_BORDER = agency("IT-BORDER", "IT", ("border",))
EU_HUB = agency("EU-HUB", "EU", ("hub",))
NL_RDW = agency("NL-RDW", "NL", ("registry_vehicle",))
ES_CUSTOMS = agency("ES-CUSTOMS", "ES", ("customs",))
PT_JUDGE = agency("PT-JUDGE", "PT", ("judicial",))
BE_DVI = agency("BE-DVI", "BE", ("forensic",))
US_FBI = agency("US-FBI", "US", ("police",))
US_FORENSIC = agency("US-LAB", "US", ("forensic",))
REGISTRY = [FR_NCB, DE_BKA, IT_BORDER, EU_HUB, NL_RDW, ES_CUSTOMS, PT_JUDGE, BE_DVI, US_FBI]


def red(**kw: object) -> NoticeFacts:
    kw.setdefault("originator", "FR-NCB")
    kw.setdefault("purpose", "locate_arrest")
    kw.setdefault("data_subject", "suspect")
    sections = kw.pop(
        "sections", ("identity", "photos", "biometrics", "dna", "case_facts", "judicial")
    )
    return notice("interpol.red", sections, **kw)  # type: ignore[arg-type]


def sis(kind: str, sections: tuple[str, ...], purpose: str, **kw: object) -> NoticeFacts:
    kw.setdefault("originator", "DE-BKA")
    kw.setdefault("data_subject", "suspect")
    return notice(f"sis.{kind}", sections, purpose=purpose, **kw)  # type: ignore[arg-type]


def allowed(facts: NoticeFacts, who: AgencyProfile, now_ms: int = 0) -> frozenset[str]:
    shipped().check_notice(facts)
    return shipped().decide(facts, who, now_ms=now_ms).allowed_sections


def rules_of(facts: NoticeFacts, who: AgencyProfile, section: str) -> tuple[str, ...]:
    return by_section(shipped().decide(facts, who))[section].rules  # type: ignore[attr-defined]


# -- originator restrictions -------------------------------------------------------------


def test_originator_allow_group_and_deny_country() -> None:
    n = red(allow_groups=frozenset({"schengen"}))
    assert allowed(n, DE_BKA)
    assert not allowed(n, EU_HUB) and rules_of(n, EU_HUB, "identity") == ("originator.allow",)
    n = red(deny_countries=frozenset({"DE"}))
    assert not allowed(n, DE_BKA) and rules_of(n, DE_BKA, "identity") == ("originator.deny",)
    assert allowed(n, EU_HUB)


# -- authority types (SIS Arts. 44-50) ---------------------------------------------------


def test_object_registries_receive_object_alerts_only() -> None:
    art38 = sis("art38", ("object", "case_facts", "action"), "seizure", data_subject="none")
    assert allowed(art38, NL_RDW) == {"object", "action"}
    assert not allowed(red(), NL_RDW)
    assert "registries-object-alerts-only" in rules_of(red(), NL_RDW, "identity")
    art26 = sis("art26", ("identity", "judicial", "action"), "locate_arrest")
    assert not allowed(art26, NL_RDW)


def test_sis_categories_by_authority() -> None:
    art36 = sis("art36", ("identity", "photos", "case_facts", "action"), "discreet_check")
    assert allowed(art36, ES_CUSTOMS) == {"identity", "photos", "action"}
    art34 = sis(
        "art34", ("identity", "judicial", "action"), "judicial_procedure", data_subject="witness"
    )
    assert allowed(art34, PT_JUDGE) == {"identity", "judicial", "action"}
    assert allowed(art34, ES_CUSTOMS) == frozenset()  # customs: no Art. 34 alerts
    art26 = sis("art26", ("identity", "case_facts", "judicial", "action"), "locate_arrest")
    assert allowed(art26, IT_BORDER) == {"identity", "action"}
    assert allowed(art26, DE_BKA) == {"identity", "case_facts", "judicial", "action"}
    assert allowed(art26, US_FBI) == frozenset()  # not a SIS State
    assert allowed(art26, EU_HUB) == {"identity", "case_facts", "judicial", "action"}


# -- section need-to-know ----------------------------------------------------------------


def test_biometrics_only_to_police_and_bureau_roles() -> None:
    assert "biometrics" in allowed(red(), DE_BKA)
    assert "biometrics" not in allowed(red(), IT_BORDER)
    assert rules_of(red(), IT_BORDER, "biometrics") == ("biometrics-police-only",)


def test_dna_strictly_limited() -> None:
    assert "dna" in allowed(
        red(), FR_NCB.__class__("X-NCB", "IT", frozenset({"ncb"}), purposes=frozenset(ALL))
    )
    assert "dna" not in allowed(red(), US_FBI)
    assert "dna-strictly-limited" in rules_of(
        red(),
        DE_BKA.__class__("PL-POL", "PL", frozenset({"police"}), purposes=frozenset(ALL)),
        "dna",
    )
    yellow = notice(
        "interpol.yellow",
        ("identity", "dna"),
        originator="FR-NCB",
        purpose="identification",
        data_subject="victim",
    )
    assert "dna" in allowed(yellow, BE_DVI)  # forensic service in the EU
    assert "dna" not in allowed(yellow, US_FORENSIC)  # third country, not named
    assert rules_of(yellow, US_FORENSIC, "dna") == ("dna-third-countries-named-only",)
    named = notice(
        "interpol.yellow",
        ("identity", "dna"),
        originator="FR-NCB",
        purpose="identification",
        data_subject="victim",
        allow_agencies=frozenset({"US-LAB"}),
    )
    assert "dna" in allowed(named, US_FORENSIC)


# -- TLP 2.0 -----------------------------------------------------------------------------


def test_tlp_red_only_to_named_recipients_with_no_onward_transmission() -> None:
    n = red(tlp="RED", allow_agencies=frozenset({"DE-BKA"}))
    audience = {rd.recipient: rd for rd in shipped().audience(n, REGISTRY)}
    assert {r for r, rd in audience.items() if rd.allowed} == {"DE-BKA"}
    kinds = {o.kind for o in audience["DE-BKA"].obligations}
    assert "no_onward_transmission" in kinds
    with pytest.raises(PolicyError, match="TLP:RED"):
        shipped().check_notice(red(tlp="RED"))


def test_tlp_red_refusal_names_the_rule() -> None:
    n = red(tlp="RED", allow_agencies=frozenset({"DE-BKA"}), allow_countries=frozenset({"IT"}))
    assert rules_of(n, IT_BORDER, "identity") == ("tlp-red-named-only",)


def test_tlp_amber_strict_stays_in_the_recipient_organisation() -> None:
    n = red(tlp="AMBER+STRICT")
    bka = agency("DE-BKA", "DE", ("police",), organisation="Bundeskriminalamt")
    ob = {o.kind: o for o in shipped().decide(n, bka).obligations}
    assert "organisation_only" in ob and "Bundeskriminalamt" in ob["organisation_only"].text
    assert "organisation_only" not in {o.kind for o in shipped().decide(red(), bka).obligations}


# -- Europol handling codes --------------------------------------------------------------


def test_handling_codes_become_obligations() -> None:
    n = red(handling=("H0", "H2", "H3:do not approach; inform FR-NCB"))
    ob = shipped().decide(n, DE_BKA).obligations
    by_rule = {o.rule: o for o in ob}
    assert by_rule["h0-crime-only"].kind == "purpose_bound"
    assert by_rule["h2-no-dissemination"].kind == "no_onward_transmission"
    assert by_rule["h3-conditions"].kind == "acknowledge"
    assert "do not approach; inform FR-NCB" in by_rule["h3-conditions"].text
    assert "h2-no-dissemination" not in {
        o.rule for o in shipped().decide(red(), DE_BKA).obligations
    }


def test_h1_keeps_judicial_recipients_out_unless_named() -> None:
    diffusion = notice(
        "interpol.diffusion",
        ("identity", "case_facts"),
        originator="FR-NCB",
        purpose="locate_arrest",
        evaluation=("B", "2"),
        handling=("H1",),
    )
    pt = agency("PT-JUDGE", "PT", ("judicial",))
    assert not allowed(diffusion, pt)
    assert rules_of(diffusion, pt, "identity") == ("h1-no-judicial-recipients",)
    named = notice(
        "interpol.diffusion",
        ("identity", "case_facts"),
        originator="FR-NCB",
        purpose="locate_arrest",
        evaluation=("B", "2"),
        handling=("H1",),
        allow_agencies=frozenset({"PT-JUDGE", "DE-BKA"}),
    )
    assert allowed(named, pt) == {"identity", "case_facts"}
    assert "not_evidential" in {o.kind for o in shipped().decide(named, pt).obligations}


# -- evaluation --------------------------------------------------------------------------


def test_x4_is_never_auto_forwarded() -> None:
    x4 = red(evaluation=("X", "4"))
    assert not allowed(x4, DE_BKA)
    assert rules_of(x4, DE_BKA, "identity") == ("evaluation-x4-manual-only",)
    assert allowed(red(evaluation=("B", "2")), DE_BKA)
    assert allowed(red(evaluation=("X", "4"), allow_agencies=frozenset({"DE-BKA"})), DE_BKA)
    c4 = red(evaluation=("C", "4"))
    assert allowed(c4, DE_BKA) and not allowed(c4, IT_BORDER)


# -- purpose limitation ------------------------------------------------------------------


def test_purpose_limitation() -> None:
    narrow = agency("DE-BKA", "DE", ("police", "sirene"), purposes=("investigation",))
    assert not allowed(red(), narrow)
    assert rules_of(red(), narrow, "identity") == ("purpose-limitation",)
    assert allowed(red(), DE_BKA)
    silent = agency("DE-BKA", "DE", ("police",), purposes=())
    assert not allowed(red(), silent)


# -- embargo (SIS Art. 26(4)) ------------------------------------------------------------


def test_embargo_reaches_hubs_and_sirene_first() -> None:
    until = NOW + 24 * H
    art26 = sis(
        "art26",
        ("identity", "judicial", "action"),
        "locate_arrest",
        originator="FR-NCB",
        embargo_until_ms=until,
        created_at_ms=NOW,
    )
    police_only = agency("PL-POL", "PL", ("police",))
    audience = {
        rd.recipient: rd for rd in shipped().audience(art26, [*REGISTRY, police_only], now_ms=NOW)
    }
    assert audience["EU-HUB"].deliver_after_ms == 0
    assert audience["DE-BKA"].deliver_after_ms == 0  # SIRENE
    assert audience["PL-POL"].allowed and audience["PL-POL"].deliver_after_ms == until
    assert "sis-art26-embargo" in audience["PL-POL"].decisions[0].rules
    after = shipped().decide(art26, police_only, now_ms=until + 1)
    assert after.deliver_after_ms == 0


def test_embargo_is_checked_against_the_catalogue() -> None:
    b = shipped()
    with pytest.raises(PolicyError, match="takes no embargo"):
        b.check_notice(red(embargo_until_ms=NOW + H, created_at_ms=NOW))
    with pytest.raises(PolicyError, match="at most 48 hours"):
        b.check_notice(
            sis(
                "art26",
                ("identity", "judicial", "action"),
                "locate_arrest",
                embargo_until_ms=NOW + 49 * H,
                created_at_ms=NOW,
            )
        )


# -- agency status, retention ------------------------------------------------------------


def test_agency_status() -> None:
    for status in ("suspended", "revoked"):
        who = agency("DE-BKA", "DE", ("police", "sirene"), status=status)
        assert not allowed(red(), who)
        assert rules_of(red(), who, "identity") == ("registry.status",)


def test_retention_caps_by_kind() -> None:
    def cap(facts: NoticeFacts, who: AgencyProfile) -> tuple[int, str]:
        o = [o for o in shipped().decide(facts, who).obligations if o.kind == "max_retention_days"]
        assert len(o) == 1
        return o[0].days, o[0].rule

    assert cap(red(), DE_BKA) == (1826, "catalogue.retention")
    art36 = sis("art36", ("identity", "action"), "discreet_check")
    assert cap(art36, DE_BKA) == (365, "catalogue.retention")
    assert cap(art36, IT_BORDER) == (2, "sis-front-line-copies-48h")
    assert shipped().kinds["sis.art32_vulnerable"].retention_days == 365


# -- the catalogue -----------------------------------------------------------------------


def test_check_notice_validates_the_header() -> None:
    b = shipped()
    b.check_notice(red())
    for bad, message in (
        (red(data_subject=""), "data subject"),
        (red(data_subject="victim"), "does not fit"),
        (red(evaluation=("D", "1")), "no D"),
        (red(handling=("H3",)), "H3 needs its conditions"),
        (red(handling=("H7",)), "unknown handling code"),
        (red(sections=("identity", "case_facts")), "requires section"),
        (red(sections=("identity", "case_facts", "judicial", "object")), "carries no section"),
        (red(purpose="seizure"), "not allowed for interpol.red"),
        (notice("interpol.nope", ("identity",)), "unknown notice kind"),
        (
            notice(
                "interpol.diffusion",
                ("case_facts",),
                purpose="investigation",
                data_subject="suspect",
            ),
            "needs an evaluation",
        ),
    ):
        with pytest.raises(PolicyError, match=message):
            b.check_notice(bad)


def test_demo_agencies_see_different_sections() -> None:
    from broker.sandbox import DEMO_AGENCIES

    registry = [
        AgencyProfile(
            a.id, a.country, frozenset(a.roles), frozenset(a.groups), frozenset(a.purposes)
        )
        for a in DEMO_AGENCIES
    ]
    n = red(sections=("identity", "photos", "biometrics", "case_facts", "judicial"))
    audience = {rd.recipient: rd.allowed_sections for rd in shipped().audience(n, registry)}
    assert audience["DE-BKA"] == set(n.sections)
    assert audience["IT-BORDER"] == {"identity", "photos"}
    assert audience["EU-HUB"] == set(n.sections)
