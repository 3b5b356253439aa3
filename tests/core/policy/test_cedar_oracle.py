"""Cedar as an oracle: random bundles and requests, translated to Cedar and decided by
cedarpy, must give the same decisions (and the same deciding rules, holds and obligations)
as the compiled engine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.core.policy import AgencyProfile, Bundle, NoticeFacts, Restrictions, compile_bundle
from broker.core.policy.model import DATA_SUBJECTS, OBLIGATION_KINDS, TLP_LEVELS

from .helpers import CATALOGUE, shipped

cedar = pytest.importorskip("cedarpy")
from broker.bench.cedar import GATES, CedarOracle, translate  # noqa: E402
from broker.bench.policy import generate_notices, generate_registry  # noqa: E402

KINDS = {"k1": ("a", "b", "c"), "k2": ("a", "b", "d"), "x.k3": ("c", "d")}
PURPOSES = {"k1": ("p1", "p2"), "k2": ("p2", "p3"), "x.k3": ("p1",)}
ROLES = ("police", "border", "registry", "judicial")
COUNTRIES = ("FR", "DE", "IT", "US")
AGENCIES = ("A", "B", "C", "D", "E")
GROUP_NAMES = ("g1", "g2", "g3")
EVALUATIONS = ("A1", "B2", "C3", "X4", "X*", "*4")
NOW = 1_000_000

small = st.integers(min_value=1, max_value=3)


def subset(values: tuple[str, ...], min_size: int = 1) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=min_size, max_size=3, unique=True)


@st.composite
def groups(draw: st.DrawFn) -> dict[str, dict[str, list[str]]]:
    out = {}
    for name in GROUP_NAMES[: draw(small)]:
        g = {"countries": draw(subset(COUNTRIES, 0)), "agencies": draw(subset(AGENCIES, 0))}
        if not g["countries"] and not g["agencies"]:
            g["countries"] = [draw(st.sampled_from(COUNTRIES))]
        out[name] = g
    return out


@st.composite
def condition(
    draw: st.DrawFn, group_names: list[str], *, recipient: bool = False
) -> dict[str, Any]:
    keys = {
        "kinds": subset(tuple(KINDS)),
        "sections": subset(("a", "b", "c", "d")),
        "tlp": subset(TLP_LEVELS),
        "purposes": subset(("p1", "p2", "p3")),
        "handling": subset(("H0", "H1", "H2", "H3")),
        "evaluation": subset(EVALUATIONS),
        "data_subjects": subset(DATA_SUBJECTS),
        "originator_agencies": subset(AGENCIES),
        "embargoed": st.booleans(),
        "recipient_agencies": subset(AGENCIES),
        "recipient_countries": subset(COUNTRIES),
        "recipient_groups": subset(tuple(group_names)),
        "recipient_roles": subset(ROLES),
        "recipient_named": st.booleans(),
        "recipient_declares_purpose": st.booleans(),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(keys)), min_size=1, max_size=2, unique=True))
    if recipient and not any(
        k.startswith("recipient_") and k != "recipient_declares_purpose" for k in chosen
    ):
        chosen.append(
            draw(
                st.sampled_from(
                    [
                        "recipient_agencies",
                        "recipient_countries",
                        "recipient_groups",
                        "recipient_roles",
                    ]
                )
            )
        )
    out = {k: draw(keys[k]) for k in chosen}
    if "kinds" in out and "sections" in out:  # a rule's sections must be carried by its kinds
        carried = {s for k in out["kinds"] for s in KINDS[k]}
        out["sections"] = [s for s in out["sections"] if s in carried] or [sorted(carried)[0]]
    return out


@st.composite
def rule(draw: st.DrawFn, i: int, group_names: list[str]) -> dict[str, Any]:
    effect = draw(st.sampled_from(("permit", "permit", "forbid", "hold", "oblige")))
    r: dict[str, Any] = {"id": f"r{i}", "effect": effect, "reason": f"reason {i}"}
    r.update(draw(condition(group_names, recipient=effect == "permit")))
    if effect == "hold" and r.get("embargoed") is False:
        del r["embargoed"]
    if draw(st.booleans()):
        r["unless"] = draw(st.lists(condition(group_names), min_size=1, max_size=2))
    if effect == "oblige":
        r["obligation"] = draw(st.sampled_from(OBLIGATION_KINDS))
        r["text"] = "{organisation}: {caveats}"
        if r["obligation"] == "max_retention_days":
            r["days"] = draw(st.integers(min_value=1, max_value=200))
    return r


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def render(gs: dict[str, dict[str, list[str]]], rules: list[dict[str, Any]]) -> dict[str, bytes]:
    g_text = "".join(
        f"[groups.{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in g.items() if v) + "\n"
        for name, g in gs.items()
    )
    r_text = "".join(
        "[[rule]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in r.items()) + "\n"
        for r in rules
    )
    half = len(rules) // 2
    r2 = "".join(
        "[[rule]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in r.items()) + "\n"
        for r in rules[half:]
    )
    r1 = r_text[: len(r_text) - len(r2)]
    out = {"catalogue.toml": CATALOGUE.encode(), "groups.toml": g_text.encode()}
    if r1:
        out["rules/a.toml"] = r1.encode()
    out["rules/b.toml"] = r2.encode()
    return out


@st.composite
def profile(draw: st.DrawFn, aid: str, group_names: list[str]) -> AgencyProfile:
    return AgencyProfile(
        aid,
        draw(st.sampled_from(COUNTRIES)),
        frozenset(draw(subset(ROLES, 0))),
        frozenset(draw(subset((*group_names, "ghost"), 0))),
        frozenset(draw(subset(("p1", "p2", "p3"), 0))),
        draw(st.sampled_from(("active", "active", "active", "suspended", "revoked"))),
    )


@st.composite
def facts(draw: st.DrawFn, group_names: list[str]) -> NoticeFacts:
    kind = draw(st.sampled_from(sorted(KINDS)))
    sections = draw(st.lists(st.sampled_from(KINDS[kind]), min_size=1, max_size=3, unique=True))
    handling = draw(subset(("H0", "H1", "H2", "H3:see me"), 0))
    evaluation = draw(st.sampled_from([("", ""), ("A", "1"), ("X", "4"), ("C", "3"), ("B", "4")]))
    gnames = (*group_names, "ghost")
    restrictions = Restrictions(
        allow_agencies=frozenset(draw(subset(AGENCIES, 0))),
        deny_agencies=frozenset(draw(subset(AGENCIES, 0)) if draw(st.booleans()) else ()),
        allow_countries=frozenset(draw(subset(COUNTRIES, 0)) if draw(st.booleans()) else ()),
        deny_countries=frozenset(draw(subset(COUNTRIES, 0)) if draw(st.booleans()) else ()),
        allow_groups=frozenset(draw(subset(gnames, 0)) if draw(st.booleans()) else ()),
        deny_groups=frozenset(draw(subset(gnames, 0)) if draw(st.booleans()) else ()),
        embargo_until_ms=draw(st.sampled_from((0, NOW - 1, NOW, NOW + 1))),
    )
    return NoticeFacts(
        originator=draw(st.sampled_from(AGENCIES)),
        kind=kind,
        purpose=draw(st.sampled_from(PURPOSES[kind])),
        tlp=draw(st.sampled_from(TLP_LEVELS)),
        sections=tuple(sections),
        handling_codes=tuple(handling),
        restrictions=restrictions,
        data_subject=draw(st.sampled_from(DATA_SUBJECTS)),
        evaluation=evaluation,
    )


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Bundle, list[AgencyProfile], list[NoticeFacts]]:
    gs = draw(groups())
    names = sorted(gs)
    n_rules = draw(st.integers(min_value=1, max_value=8))
    rules = [draw(rule(i, names)) for i in range(n_rules)]
    bundle = compile_bundle(render(gs, rules))
    n_agencies = draw(st.integers(min_value=1, max_value=5))
    profiles = [draw(profile(a, names)) for a in AGENCIES[:n_agencies]]
    notices = draw(st.lists(facts(names), min_size=1, max_size=3))
    return bundle, profiles, notices


def check_agreement(
    bundle: Bundle, profiles: list[AgencyProfile], notices: list[NoticeFacts], now_ms: int
) -> int:
    oracle = CedarOracle(bundle, profiles)
    effects = oracle.translated.effects
    retention_rules = {r.id: r.days for r in bundle.rules if r.obligation == "max_retention_days"}
    order = {r.id: i for i, r in enumerate(bundle.rules)}
    recipients = sorted(profiles, key=lambda p: p.id)
    compared = 0
    for n in notices:
        theirs = oracle.decide(n, recipients, now_ms)
        extras = oracle.applicable_extras(n, recipients, now_ms)
        ours = [d for p in recipients for d in bundle.decide(n, p, now_ms=now_ms).decisions]
        via_audience = {
            rd.recipient: rd.decisions for rd in bundle.audience(n, profiles, now_ms=now_ms)
        }
        for p in recipients:
            if p.id != n.originator:
                assert via_audience[p.id] == bundle.decide(n, p, now_ms=now_ms).decisions
        assert len(ours) == len(theirs)
        for d, c, extra in zip(ours, theirs, extras, strict=True):
            where = (n, d)
            assert not c.errors, (c.errors, where)
            assert d.allowed == c.allowed, (d, c, where)
            if d.allowed:
                assert {r for r in d.rules if effects[r] == "permit"} == c.reasons, where
                holds = {r for r in extra if effects[r] == "hold"}
                assert {r for r in d.rules if effects[r] == "hold"} == holds, where
                assert d.deliver_after_ms == (n.restrictions.embargo_until_ms if holds else 0)
                obliges = {r for r in extra if effects[r] == "oblige"}
                named = {o.rule for o in d.obligations if o.kind != "max_retention_days"}
                assert named == obliges - set(retention_rules), where
                applicable = obliges & set(retention_rules)
                caps = [
                    (bundle.kinds[n.kind].retention_days, -1, "catalogue.retention"),
                    *((retention_rules[r], order[r], r) for r in applicable),
                ]
                best = min(caps)
                cap = [o for o in d.obligations if o.kind == "max_retention_days"]
                assert [(o.days, o.rule) for o in cap] == [(best[0], best[2])], where
            elif not c.reasons:
                assert d.rules == ("default-deny",), where
            elif c.reasons & set(GATES):
                first = next(g for g in GATES if g in c.reasons)
                assert d.rules == (first,), where
            else:
                assert set(d.rules) == c.reasons, where
                assert d.obligations == () and d.deliver_after_ms == 0
            compared += 1
    return compared


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario())
def test_engine_agrees_with_cedar_on_random_bundles(
    s: tuple[Bundle, list[AgencyProfile], list[NoticeFacts]],
) -> None:
    bundle, profiles, notices = s
    check_agreement(bundle, profiles, notices, NOW)


def test_engine_agrees_with_cedar_on_the_shipped_bundle() -> None:
    bundle = shipped()
    registry = generate_registry(bundle, 60, seed=7)
    notices = generate_notices(bundle, registry, 40, seed=8)
    from broker.bench.policy import NOW_MS

    assert check_agreement(bundle, registry, notices, NOW_MS) > 5000


def test_translation_names_every_rule() -> None:
    t = translate(shipped())
    for r in shipped().rules:
        assert f'@id("{r.id}")' in (t.decision_policies + t.extra_policies)
    for g in GATES:
        assert f'@id("{g}")' in t.decision_policies
