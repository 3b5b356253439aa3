"""`broker bench policy`: decisions per second of the compiled engine, and of cedarpy.

A realistic registry (N agencies generated from the shipped groups: bureaus,
SIRENE, police, border, customs, judicial, immigration, registries, forensic
services and EU bodies, a few suspended or revoked) and notices drawn from the
catalogue (every kind, random sections, markings, evaluations, restrictions,
embargoes). One decision is one (recipient, section); a notice decided for its
whole audience counts (agencies - 1) x sections decisions.

Engine modes, all single-threaded on one core:
  masks      Bundle.evaluate: every (recipient, section) allowed or refused, as masks
  audience   Bundle.audience + allowed_sections of every recipient (what a resolver reads)
  explained  audience + every Decision materialised (rules, reason, obligations)
cedarpy: is_authorized_batch over the same (recipient, section) requests, with the
policies and entities parsed once (only the batch calls are timed), and a check
that both agree on every decision they both made.
"""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.core.policy import AgencyProfile, Bundle, NoticeFacts, Restrictions, compile_bundle
from broker.core.policy.model import EVALUATION_INFORMATION, EVALUATION_SOURCES

NOW_MS = 1_790_000_000_000
HOUR_MS = 3_600_000
POLICIES = Path(__file__).resolve().parent.parent.parent / "policies"

POLICE_PURPOSES = (
    "locate_arrest",
    "locate_missing",
    "identification",
    "investigation",
    "threat_warning",
    "sanctions",
    "judicial_procedure",
    "discreet_check",
    "seizure",
)
# Authority types an agency of a SIS State may have, in the order they are created.
SIS_UNITS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("ncb", "police"), POLICE_PURPOSES),
    (("sirene", "police"), POLICE_PURPOSES),
    (
        ("border",),
        (
            "locate_arrest",
            "locate_missing",
            "discreet_check",
            "seizure",
            "border_control",
            "return",
            "sanctions",
            "threat_warning",
        ),
    ),
    (("police",), POLICE_PURPOSES),
    (("customs",), ("seizure", "discreet_check", "threat_warning", "sanctions")),
    (("judicial",), ("locate_arrest", "judicial_procedure", "seizure", "sanctions")),
    (("immigration",), ("border_control", "return", "locate_arrest", "locate_missing")),
    (("registry_vehicle",), ("seizure",)),
    (("forensic",), ("identification", "locate_missing")),
    (("visa",), ("border_control", "return", "sanctions")),
    (("registry_firearms",), ("seizure",)),
)
OTHER_UNITS = (*SIS_UNITS[:1], (("border",), SIS_UNITS[2][1]), (("police",), POLICE_PURPOSES))
EU_BODIES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("EU-HUB", ("hub",), POLICE_PURPOSES),
    ("EU-EUROJUST", ("eurojust",), ("locate_arrest", "judicial_procedure", "seizure")),
    ("EU-EBCG", ("ebcg",), ("border_control", "return", "locate_arrest", "locate_missing")),
)
TLP_WEIGHTS = {"CLEAR": 5, "GREEN": 25, "AMBER": 45, "AMBER+STRICT": 20, "RED": 5}


def read_bundle(directory: Path = POLICIES) -> Bundle:
    files = {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*.toml")}
    return compile_bundle(files)


def generate_registry(bundle: Bundle, n: int, seed: int = 1) -> list[AgencyProfile]:
    """N agencies: EU bodies, then unit after unit across SIS States and other members."""
    rng = random.Random(seed)
    sis = sorted(bundle.groups["sis"].countries) if "sis" in bundle.groups else []
    members = sorted(bundle.groups["interpol"].countries) if "interpol" in bundle.groups else []
    others = [c for c in members if c not in sis]
    rng.shuffle(others)
    others = others[: max(20, len(sis))]
    out: list[AgencyProfile] = []

    def add(
        aid: str,
        country: str,
        roles: Sequence[str],
        purposes: Sequence[str],
        groups: Sequence[str] = (),
    ) -> None:
        i = len(out)
        status = "revoked" if i % 97 == 96 else "suspended" if i % 53 == 52 else "active"
        out.append(
            AgencyProfile(
                aid, country, frozenset(roles), frozenset(groups), frozenset(purposes), status
            )
        )

    for aid, roles, purposes in EU_BODIES:
        if len(out) < n:
            add(aid, "EU", roles, purposes, ("eu_agencies",))
    tier = 0
    while len(out) < n:
        progressed = False
        for country in sis + others:
            units = SIS_UNITS if country in sis else OTHER_UNITS
            if tier < len(units) and len(out) < n:
                roles, purposes = units[tier]
                add(f"{country}-{roles[0].upper()}-{tier}", country, roles, purposes)
                progressed = True
        if not progressed:  # every unit type exists everywhere: add more police units
            for country in sis + others:
                if len(out) < n:
                    add(f"{country}-POLICE-{tier}", country, ("police",), POLICE_PURPOSES)
        tier += 1
    return out


def generate_notices(
    bundle: Bundle, registry: Sequence[AgencyProfile], count: int, seed: int = 2
) -> list[NoticeFacts]:
    """`count` valid notices drawn from the catalogue (check_notice passes for each)."""
    rng = random.Random(seed)
    kinds = sorted(bundle.kinds)
    active = [a for a in registry if a.status == "active"]
    groups = sorted(bundle.groups)
    countries = sorted({a.country for a in registry})
    tlps = list(TLP_WEIGHTS)
    weights = list(TLP_WEIGHTS.values())
    out: list[NoticeFacts] = []
    while len(out) < count:
        spec = bundle.kinds[rng.choice(kinds)]
        optional = [s for s in spec.sections if s not in spec.required_sections]
        chosen = set(spec.required_sections) | {s for s in optional if rng.random() < 0.7}
        sections = tuple(s for s in spec.sections if s in chosen)
        tlp = rng.choices(tlps, weights)[0]
        handling = [c for c in ("H0", "H1", "H2") if rng.random() < 0.2]
        if rng.random() < 0.1:
            handling.append("H3:inform the originator before any arrest")
        evaluation = ("", "")
        if "evaluation" in spec.required_header_fields or rng.random() < 0.6:
            evaluation = (rng.choice(EVALUATION_SOURCES), rng.choice(EVALUATION_INFORMATION))
        originator = rng.choice(active).id
        allow_agencies: frozenset[str] = frozenset()
        kw: dict[str, Any] = {}
        roll = rng.random()
        if tlp == "RED" or roll < 0.05:
            allow_agencies = frozenset(a.id for a in rng.sample(active, rng.randint(1, 5)))
        elif roll < 0.15:
            kw["allow_groups"] = frozenset(rng.sample(groups, 1))
        elif roll < 0.25:
            kw["deny_countries"] = frozenset(rng.sample(countries, 2))
        elif roll < 0.30:
            kw["deny_groups"] = frozenset(rng.sample(groups, 1))
        embargo = 0
        if spec.embargo_max_hours and rng.random() < 0.3:
            embargo = NOW_MS + rng.randint(1, spec.embargo_max_hours) * HOUR_MS
        facts = NoticeFacts(
            originator=originator,
            kind=spec.name,
            purpose=rng.choice(spec.purposes),
            tlp=tlp,
            sections=sections,
            handling_codes=tuple(handling),
            restrictions=Restrictions(
                allow_agencies=allow_agencies, embargo_until_ms=embargo, **kw
            ),
            data_subject=rng.choice(spec.data_subjects),
            evaluation=evaluation,
            created_at_ms=NOW_MS,
        )
        bundle.check_notice(facts)
        out.append(facts)
    return out


@dataclass
class Figure:
    name: str
    decisions: int = 0
    seconds: float = 0.0
    notices: int = 0

    @property
    def per_second(self) -> float:
        return self.decisions / self.seconds if self.seconds else 0.0

    @property
    def us_per_decision(self) -> float:
        return 1e6 * self.seconds / self.decisions if self.decisions else 0.0


@dataclass
class Report:
    agencies: int
    sections_per_notice: float
    rules: int
    bundle_version: str
    figures: list[Figure] = field(default_factory=list)
    cedar: Figure | None = None
    cedar_error: str = ""
    disagreements: int = 0
    compared: int = 0
    machine: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        def fig(f: Figure) -> dict[str, Any]:
            return {
                "decisions": f.decisions,
                "notices": f.notices,
                "seconds": round(f.seconds, 4),
                "decisions_per_second": round(f.per_second),
                "us_per_decision": round(f.us_per_decision, 4),
            }

        out: dict[str, Any] = {
            "bundle_version": self.bundle_version,
            "rules": self.rules,
            "agencies": self.agencies,
            "sections_per_notice": round(self.sections_per_notice, 2),
            "engine": {f.name: fig(f) for f in self.figures},
            "machine": self.machine,
        }
        if self.cedar is not None:
            out["cedarpy"] = fig(self.cedar)
            out["speedup_vs_cedarpy"] = {
                f.name: round(f.per_second / self.cedar.per_second, 1)
                for f in self.figures
                if self.cedar.per_second
            }
            out["agreement"] = {"compared": self.compared, "disagreements": self.disagreements}
        else:
            out["cedarpy"] = self.cedar_error
        return out

    def text(self) -> str:
        lines = [
            f"policy bundle {self.bundle_version[:16]} ({self.rules} rules), "
            f"{self.agencies} agencies, {self.sections_per_notice:.1f} sections per notice",
            f"machine: {self.machine.get('cpu', '?')}, {self.machine.get('cores', '?')} cores, "
            f"pinned to {self.machine.get('pinned', 'no core')}, "
            f"Python {self.machine.get('python', '?')}",
            "",
            f"{'':<26}{'decisions/s':>14}{'µs/decision':>13}{'vs cedarpy':>12}",
        ]
        for f in [*self.figures, *([self.cedar] if self.cedar else [])]:
            ratio = ""
            if self.cedar is not None and self.cedar.per_second and f is not self.cedar:
                ratio = f"{f.per_second / self.cedar.per_second:.0f}x"
            lines.append(f"{f.name:<26}{f.per_second:>14,.0f}{f.us_per_decision:>13.3f}{ratio:>12}")
        if self.cedar is None:
            lines.append(f"{'cedarpy':<26}{self.cedar_error}")
        else:
            lines.append("")
            lines.append(
                f"agreement with cedarpy: {self.compared - self.disagreements:,} of "
                f"{self.compared:,} decisions identical"
            )
        return "\n".join(lines)


def _pin() -> str:
    try:
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        return "no core"
    return f"core {cpu}"


def _machine(pinned: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "pinned": pinned,
        "python": platform.python_version(),
    }


def _time(
    name: str,
    notices: Sequence[NoticeFacts],
    per_notice: Callable[[NoticeFacts], object],
    recipients: int,
    seconds: float,
) -> Figure:
    fig = Figure(name)
    for n in notices[:20]:  # warm the caches (registry index, restriction masks)
        per_notice(n)
    deadline = time.perf_counter() + seconds
    clock = time.perf_counter
    i = 0
    started = clock()
    while True:
        n = notices[i % len(notices)]
        per_notice(n)
        fig.decisions += recipients * len(n.sections)
        fig.notices += 1
        i += 1
        if i % 16 == 0 and clock() >= deadline:
            break
    fig.seconds = clock() - started
    return fig


def run(
    agencies: int = 200,
    seconds: float = 3.0,
    notices: int = 500,
    policy_dir: Path = POLICIES,
    *,
    pin: bool = True,
) -> Report:
    """Time the engine modes (seconds/4 each) and cedarpy (seconds/2), pinned to one core."""
    pinned = _pin() if pin else "no core"
    bundle = read_bundle(policy_dir)
    registry = generate_registry(bundle, agencies)
    sample = generate_notices(bundle, registry, notices)
    idx = bundle.index(registry)
    recipients = len(registry) - 1
    report = Report(
        agencies=len(registry),
        sections_per_notice=sum(len(n.sections) for n in sample) / len(sample),
        rules=len(bundle.rules),
        bundle_version=bundle.version,
        machine=_machine(pinned),
    )

    def masks(n: NoticeFacts) -> object:
        return bundle.evaluate(n, idx, now_ms=NOW_MS)

    def audience(n: NoticeFacts) -> object:
        return [rd.allowed_sections for rd in bundle.audience(n, idx, now_ms=NOW_MS)]

    def explained(n: NoticeFacts) -> object:
        return [rd.decisions for rd in bundle.audience(n, idx, now_ms=NOW_MS)]

    def from_list(n: NoticeFacts) -> object:
        return [rd.allowed_sections for rd in bundle.audience(n, registry, now_ms=NOW_MS)]

    share = seconds / 4
    report.figures = [
        _time("engine masks", sample, masks, recipients, share),
        _time("engine audience", sample, audience, recipients, share),
        _time("engine audience (list)", sample, from_list, recipients, share),
        _time("engine explained", sample, explained, recipients, share),
    ]
    _cedar(report, bundle, registry, sample, max(seconds / 2, 0.5))
    return report


def _cedar(
    report: Report,
    bundle: Bundle,
    registry: Sequence[AgencyProfile],
    sample: Sequence[NoticeFacts],
    seconds: float,
) -> None:
    try:
        import cedarpy  # noqa: F401
    except ImportError:
        report.cedar_error = "cedarpy not installed (pip install cedarpy)"
        return
    from broker.bench.cedar import CedarOracle

    oracle = CedarOracle(bundle, registry)
    fig = Figure("cedarpy (batch)")
    clock = time.perf_counter
    deadline = clock() + seconds
    i = 0
    while clock() < deadline or i == 0:
        n = sample[i % len(sample)]
        recipients = sorted((a for a in registry if a.id != n.originator), key=lambda a: a.id)
        started = clock()
        results = oracle.decide_notice(n, recipients, NOW_MS)
        fig.seconds += clock() - started
        fig.decisions += len(results)
        fig.notices += 1
        ours = [
            d.allowed for rd in bundle.audience(n, registry, now_ms=NOW_MS) for d in rd.decisions
        ]
        theirs = [bool(r.allowed) for r in results]
        report.compared += len(ours)
        report.disagreements += sum(a != b for a, b in zip(ours, theirs, strict=True))
        i += 1
    report.cedar = fig
