"""broker.core.replay: logged decisions re-evaluated under the bundle they name."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from broker.bundles import read_bundle_dir as read_policy_dir
from broker.core import logleaf, records
from broker.core import replay as rp
from broker.core.policy import AgencyProfile, NoticeFacts, compile_bundle
from broker.core.relay import AcceptedNotice
from broker.sandbox import DEMO_AGENCIES, REPO_POLICIES
from broker.v1 import admin_pb2, audit_pb2, notice_pb2

FILES = read_policy_dir(REPO_POLICIES)
BUNDLE = compile_bundle(FILES)
VERSION = BUNDLE.version
PROFILES = tuple(
    AgencyProfile(
        id=a.id,
        country=a.country,
        roles=frozenset(a.roles),
        groups=frozenset(a.groups),
        purposes=frozenset(a.purposes),
    )
    for a in DEMO_AGENCIES
    if a.id != "FR-NCB"
)
FACTS = NoticeFacts(
    originator="FR-NCB",
    kind="interpol.red",
    purpose="locate_arrest",
    tlp="AMBER",
    sections=tuple(sorted(BUNDLE.kinds["interpol.red"].sections)),
    handling_codes=("H0",),
)
NOTICE = "6f1d3a52-4a57-4f43-9d3c-0b8f1e2a7c55"
DECISIONS = tuple(BUNDLE.decide(FACTS, p) for p in PROFILES)
ALLOWED = {(d.recipient, d.section) for rd in DECISIONS for d in rd.decisions if d.allowed}
DENIED = sorted({(d.recipient, d.section) for rd in DECISIONS for d in rd.decisions} - ALLOWED)


def record(decisions: Sequence[object] = DECISIONS, version: str = VERSION) -> str:
    return AcceptedNotice(
        checked=None,  # type: ignore[arg-type]
        envelope_bytes=b"",
        envelope_digest=b"",
        plans=(),
        decisions=tuple(decisions),  # type: ignore[arg-type]
        policy_version=version,
        facts=FACTS,
        recipients=PROFILES,
    ).decision_record()


def honest_plan() -> dict[str, list[str]]:
    plan: dict[str, list[str]] = {}
    for recipient, section in sorted(ALLOWED):
        plan.setdefault(recipient, []).append(section)
    return plan


def registry_leaf(p: AgencyProfile, at_ms: int = 1, **changed: object) -> audit_pb2.LogLeaf:
    """The broker's leaf of an administrator-signed entry (the signature is not checked
    without a CA certificate: the integration tests check it)."""
    fields: dict[str, object] = {
        "country": p.country,
        "roles": sorted(p.roles),
        "groups": sorted(p.groups),
        "purposes": sorted(p.purposes),
        "status": p.status,
        **changed,
    }
    entry = admin_pb2.AgencyEntry(id=p.id, revision=1, key_serial=1, **fields)  # type: ignore[arg-type]
    signed = admin_pb2.SignedAgencyEntry(entry=entry.SerializeToString(), signature=b"s")
    return logleaf.registry_change(
        agency_id=p.id,
        change="added",
        statement=b"k",
        actor="urn:broker:admin:ops",
        logged_at_ms=at_ms,
        signed_entry=signed.SerializeToString(),
        **fields,  # type: ignore[arg-type]
    )


def leaves(
    plan: dict[str, list[str]],
    rec: str,
    *,
    receipts: Sequence[tuple[str, Sequence[str]]] = (),
    active: str = VERSION,
    version: str = VERSION,
) -> list[tuple[int, audit_pb2.LogLeaf]]:
    out = [
        logleaf.policy_activated(
            version=active,
            activated_by="urn:broker:admin:ops",
            activated_at_ms=1,
            reason="go",
            sequence=1,
            signed_activation=None,
            logged_at_ms=1,
        ),
        *logleaf.publication(
            notice_id=NOTICE,
            version=1,
            originator="FR-NCB",
            kind="interpol.red",
            header_digest=b"h" * 32,
            envelope_digest=b"e" * 32,
            created_at_ms=2,
            expires_at_ms=3,
            accepted_at_ms=2,
            policy_version=version,
            decision_record=rec,
            planned=list(plan.items()),
            logged_at_ms=2,
        ),
    ]
    for recipient, sections in receipts:
        receipt = notice_pb2.Receipt(
            notice_id=NOTICE,
            version=1,
            recipient=recipient,
            header_digest=b"h" * 32,
            sections=sections,
        )
        proven = notice_pb2.ProvenReceipt(receipt=receipt.SerializeToString(), signer=recipient)
        out.append(logleaf.delivery_receipt(proven, "FR-NCB", 3))
    return list(enumerate(out))


def run(
    entries: list[tuple[int, audit_pb2.LogLeaf]],
    rec: str | None,
    files: dict[str, bytes] | None = FILES,
) -> rp.ReplayReport:
    records = {} if rec is None else {(NOTICE, 1): rec.encode()}
    registry = [(i - len(PROFILES), registry_leaf(p)) for i, p in enumerate(PROFILES)]
    return rp.replay([*registry, *entries], records, {VERSION: files})


def kinds(report: rp.ReplayReport) -> list[str]:
    return [f.kind for f in report.findings]


def test_the_bundle_has_something_to_deny() -> None:
    assert ALLOWED and DENIED


def test_an_honest_log_replays_clean() -> None:
    plan = honest_plan()
    rec = record()
    report = run(leaves(plan, rec, receipts=list(plan.items())), rec)
    assert report.ok, [f.describe() for f in report.findings]
    assert (report.decisions, report.replayed, report.receipts) == (1, 1, len(plan))
    assert report.bundles == (VERSION,)


def test_a_delivery_the_bundle_forbade_is_reported_once() -> None:
    recipient, section = DENIED[0]
    plan = honest_plan()
    plan.setdefault(recipient, []).append(section)
    rec = record()
    report = run(leaves(plan, rec, receipts=[(recipient, plan[recipient])]), rec)
    assert kinds(report) == [rp.NOT_PERMITTED]
    f = report.findings[0]
    assert (f.recipient, f.sections, f.policy_version) == (recipient, (section,), VERSION)
    assert "receipted" in f.detail


def test_a_record_that_lies_about_a_decision() -> None:
    recipient, section = DENIED[0]
    forged = [
        type(rd)(
            rd.recipient,
            tuple(
                type(d)(d.recipient, d.section, True, ("forged",), "ok")
                if (d.recipient, d.section) == (recipient, section)
                else d
                for d in rd.decisions
            ),
        )
        for rd in DECISIONS
    ]
    plan = honest_plan()
    plan.setdefault(recipient, []).append(section)
    rec = record(forged)
    report = run(leaves(plan, rec), rec)
    assert sorted(kinds(report)) == [rp.DECISION_DIFFERS, rp.NOT_PERMITTED]


def test_records_and_bundles_must_match_the_log() -> None:
    rec = record()
    entries = leaves(honest_plan(), rec)
    assert kinds(run(entries, None)) == [rp.RECORD_MISSING]
    assert kinds(run(entries, rec.replace("AMBER", "GREEN"))) == [rp.RECORD_TAMPERED]
    assert kinds(run(entries, rec, None)) == [rp.BUNDLE_MISSING]
    changed = dict(FILES)
    changed["catalogue.toml"] = changed["catalogue.toml"] + b"\n# edited\n"
    assert kinds(run(entries, rec, changed)) == [rp.BUNDLE_TAMPERED]
    other = record(version="cd" * 32)
    assert kinds(run(leaves(honest_plan(), other), other)) == [rp.RECORD_TAMPERED]


def test_a_decision_under_a_bundle_not_in_force() -> None:
    rec = record()
    report = run(leaves(honest_plan(), rec, active="ef" * 32), rec)
    assert kinds(report) == [rp.NOT_IN_FORCE]
    assert report.replayed == 1  # still re-evaluated under the bundle it names


def test_a_receipt_without_a_decision() -> None:
    rec = record()
    entries = [e for e in leaves({}, rec, receipts=[("DE-BKA", ["identity"])]) if e[0] != 2]
    assert kinds(run(entries, rec)) == [rp.UNEXPLAINED]


def test_records_written_by_a_newer_relay_still_replay() -> None:
    facts = rp.facts_from_record(
        {
            "originator": "FR-NCB",
            "kind": "interpol.red",
            "purpose": "locate_arrest",
            "tlp": "AMBER",
            "sections": ["identity"],
            "handling_codes": ["H0"],
            "data_subject": "victim",
            "restrictions": {"deny_agencies": ["X"], "embargo_until_ms": 5, "unknown": [1]},
            "something_new": 1,
        }
    )
    assert facts.data_subject == "victim"
    assert facts.restrictions.deny_agencies == frozenset({"X"})
    assert facts.restrictions.embargo_until_ms == 5
    profile = rp.profile_from_record({"id": "A", "country": "FR", "roles": ["police"], "x": 1})
    assert profile.roles == frozenset({"police"})


@pytest.mark.parametrize("bad", ["not json", json.dumps({"policy_version": VERSION})])
def test_an_unreadable_record_is_a_finding(bad: str) -> None:
    entries = leaves(honest_plan(), bad)
    assert kinds(run(entries, bad)) == [rp.REPLAY_ERROR]


def test_a_decision_in_flight_across_an_activation_is_in_force() -> None:
    rec = record()

    def activation(version: str, at: int) -> audit_pb2.LogLeaf:
        return logleaf.policy_activated(
            version=version,
            activated_by="urn:broker:admin:ops",
            activated_at_ms=at,
            reason="switch",
            sequence=2,
            signed_activation=None,
            logged_at_ms=at,
        )

    def decided_at(accepted: int) -> list[tuple[int, audit_pb2.LogLeaf]]:
        _, *rest = (leaf for _, leaf in leaves(honest_plan(), rec))
        rest[0].notice.accepted_at_ms = accepted
        return list(enumerate([activation(VERSION, 1), activation("ef" * 32, 10), *rest]))

    assert run(decided_at(5), rec).ok  # decided under the old bundle, logged after the switch
    assert kinds(run(decided_at(20), rec)) == [rp.NOT_IN_FORCE]


def receipt_leaf(recipient: str, sections: Sequence[str], received_at_ms: int) -> audit_pb2.LogLeaf:
    receipt = notice_pb2.Receipt(
        notice_id=NOTICE,
        version=1,
        recipient=recipient,
        header_digest=b"h" * 32,
        sections=sections,
        received_at_ms=received_at_ms,
    )
    proven = notice_pb2.ProvenReceipt(receipt=receipt.SerializeToString(), signer=recipient)
    return logleaf.delivery_receipt(proven, "FR-NCB", received_at_ms)


def test_a_profile_that_is_not_the_signed_entry_is_reported() -> None:
    """The operator widened a recipient's profile in the database: the decision record
    names roles the administrator never signed."""
    rec = record()
    victim = PROFILES[0]
    entries = leaves(honest_plan(), rec)
    narrowed = registry_leaf(victim, at_ms=1, roles=["liaison"])
    report = run([(-100, narrowed), *entries], rec)
    found = [f for f in report.findings if f.kind == rp.PROFILE_DIFFERS]
    assert [f.recipient for f in found] == [victim.id]
    assert "roles" in found[0].detail and "liaison" in found[0].detail


def test_a_receipt_after_a_change_needs_a_logged_recheck() -> None:
    """The notice's restrictions changed after publish; the recipient signed that it
    received its copy after that: without a forwarding-time re-check in the log, the
    broker skipped it."""
    rec = record()
    recipient, sections = sorted(honest_plan().items())[0]
    changed = logleaf.restrictions_updated(
        notice_id=NOTICE,
        originator="FR-NCB",
        sequence=1,
        update=b"u",
        excluded=(),
        withheld=0,
        logged_at_ms=100,
    )
    late = 100 + rp.SKEW_MS + 1
    entries = [
        *leaves(honest_plan(), rec),
        (50, changed),
        (51, receipt_leaf(recipient, sections, late)),
    ]
    assert kinds(run(entries, rec)) == [rp.UNCHECKED]
    # Received before the change (within the clocks' skew): nothing to re-check.
    early = [
        *leaves(honest_plan(), rec),
        (50, changed),
        (51, receipt_leaf(recipient, sections, 150)),
    ]
    assert run(early, rec).ok
    # With the re-check logged (and replayed under the bundle: allowed), it is clean.
    profile = next(p for p in PROFILES if p.id == recipient)
    forwarding = logleaf.forwarding_decision(
        notice_id=NOTICE,
        version=1,
        originator="FR-NCB",
        recipient=recipient,
        sections=sections,
        outcome="allowed",
        policy_version=VERSION,
        registry_key="r",
        restrictions=b"",
        record=json.dumps(
            {"notice": records.facts_json(FACTS), "recipient": records.profile_json(profile)},
            sort_keys=True,
        ).encode(),
        logged_at_ms=late - 10,
    )
    checked = [*leaves(honest_plan(), rec), (50, changed), (51, forwarding)]
    checked.append((52, receipt_leaf(recipient, sections, late)))
    assert run(checked, rec).ok, run(checked, rec).findings
    # A re-check that claims "allowed" for what the bundle denies is reported.
    denied_recipient, denied_section = DENIED[0]
    lying = logleaf.forwarding_decision(
        notice_id=NOTICE,
        version=1,
        originator="FR-NCB",
        recipient=denied_recipient,
        sections=[denied_section],
        outcome="allowed",
        policy_version=VERSION,
        registry_key="r",
        restrictions=b"",
        record=json.dumps(
            {
                "notice": records.facts_json(FACTS),
                "recipient": records.profile_json(
                    next(p for p in PROFILES if p.id == denied_recipient)
                ),
            },
            sort_keys=True,
        ).encode(),
        logged_at_ms=200,
    )
    assert rp.NOT_PERMITTED in kinds(run([*leaves(honest_plan(), rec), (60, lying)], rec))
