"""AdminService: policy bundles and the agency registry, for administrators only.

Every call first checks that the caller's certificate names an administrator
(urn:broker:admin:<id>); agencies, auditors and brokers get PERMISSION_DENIED.
Every change is recorded in admin_actions with who made it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import Message

from broker.core import activation as act
from broker.core import explain, relay
from broker.core.identity import IdentityError, Party, validate_id, verify_key_statement
from broker.core.lifecycle import reason_digest
from broker.core.policy import AgencyProfile, Bundle, compile_bundle
from broker.core.policy.bundle import PolicyError
from broker.core.policy.model import AGENCY_STATUSES
from broker.core.records import facts_from_record
from broker.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from broker.registry import catalogue_problem
from broker.server import console_reads, oplog
from broker.server.peer import caller
from broker.server.status import unary_handler
from broker.server.wire import now_ms, parse
from broker.store.api import AgencyRecord, Store
from broker.v1 import admin_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

Ctx = Any
_LOCATED = re.compile(r"^(?P<file>[^:\s]+\.toml):(?P<line>\d+):(?P<col>\d+): (?P<msg>.*)$", re.S)
_FILED = re.compile(r"^(?P<file>[^:\s]+\.toml): (?P<msg>.*)$", re.S)
_TOML_AT = re.compile(r"\(at line (?P<line>\d+), column (?P<col>\d+)\)")


def diagnostic(exc: PolicyError) -> admin_pb2.Diagnostic:
    """Split a PolicyError message into file, line, column and text where it names them."""
    text = str(exc)
    m = _LOCATED.match(text)
    if m:
        return admin_pb2.Diagnostic(
            file=m["file"], line=int(m["line"]), column=int(m["col"]), message=m["msg"]
        )
    m = _FILED.match(text)
    if m:
        at = _TOML_AT.search(m["msg"])
        return admin_pb2.Diagnostic(
            file=m["file"],
            line=int(at["line"]) if at else 0,
            column=int(at["col"]) if at else 0,
            message=m["msg"],
        )
    return admin_pb2.Diagnostic(message=text)


def entry_of(a: AgencyRecord) -> admin_pb2.AgencyEntry:
    return admin_pb2.AgencyEntry(
        id=a.id,
        country=a.country,
        roles=list(a.roles),
        groups=list(a.groups),
        purposes=list(a.purposes),
        status=a.status,
        key_serial=a.serial,
    )


MAX_ENTRY_VALIDITY_MS = 366 * 86_400_000


class AdminService:
    """Implements broker.v1.AdminService on a BrokerApp."""

    def __init__(self, app: BrokerApp) -> None:
        self.app = app

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(name: str, fn: Callable[[bytes, str], Awaitable[Message]]) -> Any:
            return unary_handler(name, lambda request, context: fn(request, self._admin(context)))

        methods = {
            "ValidatePolicy": self.validate,
            "ExplainDecision": self.explain,
            "DiffPolicy": self.diff,
            "ActivatePolicy": self.activate,
            "PolicyHistory": self.history,
            "GetPolicyBundle": self.get_bundle,
            "RegisterAgency": self.register_agency,
            "UpdateAgency": self.update_agency,
            "SetAgencyStatus": self.set_status,
            "RotateAgencyKeys": self.rotate_keys,
            "ListAgencies": self.list_agencies,
            "ListAdminActions": self.list_actions,
            "ListKeyStatements": self.list_key_statements,
        }
        return grpc.method_handlers_generic_handler(
            "broker.v1.AdminService", {name: unary(name, fn) for name, fn in methods.items()}
        )

    def _admin(self, context: Ctx) -> str:
        party = caller(context, self.app.revoked)
        if party.kind != "admin":
            raise PermissionDenied(
                f"{party.uri()} is not an administrator; AdminService is for administrators only"
            )
        return party.id

    # -- policy ---------------------------------------------------------------------------
    def _compile(self, bundle: admin_pb2.PolicyBundle) -> Bundle:
        try:
            return compile_bundle(act.bundle_files(bundle))
        except PolicyError as exc:
            raise InvalidArgument(f"the bundle does not compile: {exc}") from exc

    async def validate(self, data: bytes, admin: str) -> admin_pb2.ValidatePolicyResponse:
        req = parse(admin_pb2.ValidatePolicyRequest, data)
        files = act.bundle_files(req.bundle)
        try:
            bundle = compile_bundle(files)
        except PolicyError as exc:
            return admin_pb2.ValidatePolicyResponse(ok=False, diagnostics=[diagnostic(exc)])
        return admin_pb2.ValidatePolicyResponse(
            ok=True, version=bundle.version, kinds=len(bundle.kinds), rules=len(bundle.rules)
        )

    async def explain(self, data: bytes, admin: str) -> admin_pb2.ExplainDecisionResponse:
        req = parse(admin_pb2.ExplainDecisionRequest, data)
        policy = self._compile(req.bundle) if req.bundle.files else self.app.policy
        recipient = self.app.registry.get(req.recipient)
        if recipient is None:
            raise NotFound(f"agency {req.recipient!r} is not in the registry")
        if not req.draft.originator:
            raise InvalidArgument("draft.originator is required")
        facts = relay.facts_of(req.draft, req.restrictions, list(req.sections))
        draft = explain.complete_draft(policy, facts)  # the kind's defaults, said as assumed
        try:
            policy.check_notice(draft.facts)
        except PolicyError as exc:
            raise InvalidArgument(str(exc)) from exc
        decision = policy.decide(draft.facts, recipient.profile, now_ms=now_ms())
        return admin_pb2.ExplainDecisionResponse(
            policy_version=policy.version,
            recipient=req.recipient,
            decisions=[
                admin_pb2.SectionDecision(
                    section=d.section,
                    allowed=d.allowed,
                    rules=list(d.rules),
                    reason=d.reason,
                    obligations=[str(o) for o in getattr(d, "obligations", ())],
                    obligation_details=[
                        notice_pb2.Obligation(
                            section=d.section, kind=o.kind, text=o.text, rule=o.rule, days=o.days
                        )
                        for o in getattr(d, "obligations", ())
                    ],
                )
                for d in decision.decisions
                if d.section in draft.asked
            ],
            assumed=list(draft.assumed),
        )

    async def diff(self, data: bytes, admin: str) -> admin_pb2.DiffPolicyResponse:
        req = parse(admin_pb2.DiffPolicyRequest, data)
        draft = self._compile(req.bundle)
        active = self.app.policy
        limit = min(req.corpus or 1000, 10_000)
        corpus = await self.app.runner.call(lambda s: s.recent_notices(limit))
        profiles: list[AgencyProfile] = [a.profile for a in self.app.registry.values()]
        now = now_ms()
        resp = admin_pb2.DiffPolicyResponse(
            active_version=active.version, draft_version=draft.version, notices=len(corpus)
        )
        for row in corpus:
            record = json.loads(row.decisions)
            if not record.get("notice"):
                continue
            facts = facts_from_record(record["notice"])
            for profile in profiles:
                if profile.id == facts.originator:
                    continue
                before = active.decide(facts, profile, now_ms=now)
                after = draft.decide(facts, profile, now_ms=now)
                for b, a in zip(before.decisions, after.decisions, strict=True):
                    if b.allowed == a.allowed:
                        continue
                    change = a if a.allowed else b
                    resp.changes.add(
                        notice_id=row.notice_id,
                        version=row.version,
                        kind=row.kind,
                        recipient=profile.id,
                        section=a.section,
                        gained=a.allowed,
                        reason=f"{change.reason} [{', '.join(a.rules)}]",
                    )
                    if a.allowed:
                        resp.gained += 1
                    else:
                        resp.lost += 1
        return resp

    async def activate(self, data: bytes, admin: str) -> admin_pb2.ActivatePolicyResponse:
        req = parse(admin_pb2.ActivatePolicyRequest, data)
        bundle = self._compile(req.bundle)
        verified = act.verify_activation(
            req.activation, self.app.ca_cert, now_ms(), expected_version=bundle.version
        )
        if verified.admin.id != admin:
            raise PermissionDenied(
                f"you are {admin}; an activation signed by {verified.admin.id} must come from them"
            )
        a = verified.activation
        bundle_bytes = req.bundle.SerializeToString(deterministic=True)
        signed = req.activation.SerializeToString(deterministic=True)

        def write(store: Store) -> int:
            store.put_bundle(bundle.version, bundle_bytes)
            seq: int = store.activate_bundle(
                bundle.version, signed, admin, a.activated_at_ms, a.reason, a.sequence
            )
            store.record_action(
                admin,
                "policy.activate",
                bundle.version,
                {"sequence": seq, "reason": a.reason},
                now_ms(),
            )
            store.tlog_sync(now_ms())  # logged before the broker decides under it
            return seq

        seq = await self.app.runner.call(write)
        self.app.install_policy(bundle, signed)
        oplog.policy_activated(bundle.version, admin, seq)
        return admin_pb2.ActivatePolicyResponse(version=bundle.version, sequence=seq)

    async def history(self, data: bytes, admin: str) -> admin_pb2.PolicyHistoryResponse:
        parse(admin_pb2.PolicyHistoryRequest, data)
        rows = await self.app.runner.call(lambda s: s.policy_history())
        return admin_pb2.PolicyHistoryResponse(
            entries=[
                admin_pb2.PolicyHistoryEntry(
                    sequence=r.sequence,
                    version=r.version,
                    admin=r.admin,
                    activated_at_ms=r.activated_at_ms,
                    reason=r.reason,
                    active=r.active,
                )
                for r in rows
            ]
        )

    async def get_bundle(self, data: bytes, admin: str) -> admin_pb2.PolicyBundle:
        req = parse(admin_pb2.GetPolicyBundleRequest, data)
        raw = await self.app.runner.call(lambda s: s.get_bundle(req.version))
        return admin_pb2.PolicyBundle.FromString(raw)

    # -- registry ---------------------------------------------------------------------------
    def _check_entry(self, entry: admin_pb2.AgencyEntry) -> None:
        validate_id(entry.id)
        if not re.fullmatch(r"[A-Z]{2}", entry.country):
            raise InvalidArgument("country must be an ISO 3166-1 alpha-2 code such as FR or NO")
        if entry.status not in AGENCY_STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(AGENCY_STATUSES)}")
        unknown = sorted(set(entry.groups) - set(self.app.policy.groups))
        if unknown:
            raise InvalidArgument(f"unknown group(s) {unknown}: define them in groups.toml first")
        problem = catalogue_problem(self.app.policy, entry.roles, entry.groups, entry.purposes)
        if problem is not None:
            raise InvalidArgument(f"{problem[0]}: {problem[1]}")
        now = now_ms()
        if not now < entry.not_after_ms <= now + MAX_ENTRY_VALIDITY_MS:
            raise InvalidArgument(
                "not_after_ms must be in the future and at most 366 days ahead: registry "
                "entries are short-lived (renew them: broker admin agency sign-registry --renew)"
            )

    def _verify_statement(self, statement: notice_pb2.SignedKeyStatement, agency: str) -> Any:
        from broker import pki

        try:
            return verify_key_statement(
                statement, pki.ca_public_key(self.app.ca_cert), now_ms(), expected_agency=agency
            )
        except IdentityError as exc:
            raise InvalidArgument(f"key statement: {exc}") from exc

    def _signed_entry(
        self, signed: admin_pb2.SignedAgencyEntry, admin: str
    ) -> admin_pb2.AgencyEntry:
        verified = act.verify_agency_entry(signed, self.app.ca_cert, now_ms())
        if verified.admin.id != admin:
            raise PermissionDenied(
                f"you are {admin}; an entry signed by {verified.admin.id} must come from them"
            )
        self._check_entry(verified.entry)
        return verified.entry

    async def _records(self) -> dict[str, AgencyRecord]:
        return {r.id: r for r in await self.app.runner.call(lambda s: s.agencies())}

    async def _current(self, agency: str) -> AgencyRecord:
        current = (await self._records()).get(agency)
        if current is None:
            raise NotFound(f"agency {agency!r} is not in the registry")
        return current

    def _next_revision(self, current: AgencyRecord, entry: admin_pb2.AgencyEntry) -> None:
        revision = 0
        if current.signed_entry is not None:
            signed = admin_pb2.SignedAgencyEntry.FromString(current.signed_entry)
            revision = admin_pb2.AgencyEntry.FromString(signed.entry).revision
        if entry.revision != revision + 1:
            raise FailedPrecondition(
                f"{entry.id} is at revision {revision}; sign revision {revision + 1} "
                "(re-read the registry and sign again)"
            )

    async def _store(
        self,
        admin: str,
        action: str,
        entry: admin_pb2.AgencyEntry,
        signed: admin_pb2.SignedAgencyEntry,
        keys: tuple[bytes, bytes, bytes],
        detail: dict[str, Any],
    ) -> admin_pb2.AgencyResponse:
        statement, signing_key, encryption_key = keys
        record = AgencyRecord(
            id=entry.id,
            country=entry.country,
            roles=tuple(sorted(entry.roles)),
            groups=tuple(sorted(entry.groups)),
            purposes=tuple(sorted(entry.purposes)),
            status=entry.status,
            statement=statement,
            signing_key=signing_key,
            encryption_key=encryption_key,
            serial=entry.key_serial,
            signed_entry=signed.SerializeToString(deterministic=True),
        )

        def write(store: Store) -> None:
            store.upsert_agency(record)
            store.record_action(
                admin, action, entry.id, {**detail, "revision": entry.revision}, now_ms()
            )
            store.tlog_sync(now_ms())  # logged before the broker decides with it

        await self.app.runner.call(write)
        await self.app.reload_registry()
        oplog.registry_changed(action, entry.id, admin, entry.status, entry.revision)
        return admin_pb2.AgencyResponse(agency=entry)

    @staticmethod
    def _same(entry: admin_pb2.AgencyEntry, cur: AgencyRecord, *fields: str) -> None:
        now = {
            "country": entry.country,
            "roles": tuple(sorted(entry.roles)),
            "groups": tuple(sorted(entry.groups)),
            "purposes": tuple(sorted(entry.purposes)),
            "status": entry.status,
            "key_serial": entry.key_serial,
        }
        before = {
            "country": cur.country,
            "roles": cur.roles,
            "groups": cur.groups,
            "purposes": cur.purposes,
            "status": cur.status,
            "key_serial": cur.serial,
        }
        changed = sorted(f for f in fields if now[f] != before[f])
        if changed:
            raise InvalidArgument(f"this call cannot change {', '.join(changed)}")

    async def register_agency(self, data: bytes, admin: str) -> admin_pb2.AgencyResponse:
        req = parse(admin_pb2.RegisterAgencyRequest, data)
        entry = self._signed_entry(req.entry, admin)
        if entry.id in await self._records():
            raise AlreadyExists(f"agency {entry.id} is already registered; use update")
        keys = self._verify_statement(req.key_statement, entry.id)
        if entry.revision != 1 or entry.status != "active" or entry.key_serial != keys.serial:
            raise InvalidArgument(
                "a new agency's entry must have revision 1, status active and the "
                f"statement's key serial ({keys.serial})"
            )
        material = (req.key_statement.SerializeToString(), keys.signing_key, keys.encryption_key)
        detail = {"country": entry.country, "roles": sorted(entry.roles)}
        return await self._store(admin, "agency.register", entry, req.entry, material, detail)

    async def update_agency(self, data: bytes, admin: str) -> admin_pb2.AgencyResponse:
        req = parse(admin_pb2.UpdateAgencyRequest, data)
        entry = self._signed_entry(req.entry, admin)
        cur = await self._current(entry.id)
        self._next_revision(cur, entry)
        self._same(entry, cur, "status", "key_serial")
        detail: dict[str, list[Any]] = {
            "country": [cur.country, entry.country],
            "roles": [list(cur.roles), sorted(entry.roles)],
            "groups": [list(cur.groups), sorted(entry.groups)],
            "purposes": [list(cur.purposes), sorted(entry.purposes)],
        }
        material = (cur.statement, cur.signing_key, cur.encryption_key)
        # Only what changed, as [before, after]; an entry signed again without a change (the
        # bootstrap entries' first signature, a renewal) is recorded as what it is.
        changed = {k: v for k, v in detail.items() if v[0] != v[1]}
        action = "agency.update" if changed else "agency.sign"
        detail = changed  # the revision is added to every action's detail
        return await self._store(admin, action, entry, req.entry, material, detail)

    async def set_status(self, data: bytes, admin: str) -> admin_pb2.AgencyResponse:
        req = parse(admin_pb2.SetAgencyStatusRequest, data)
        entry = self._signed_entry(req.entry, admin)
        cur = await self._current(entry.id)
        self._next_revision(cur, entry)
        self._same(entry, cur, "country", "roles", "groups", "purposes", "key_serial")
        if cur.status == "revoked" and entry.status != "revoked":
            raise FailedPrecondition(f"{entry.id} is revoked; register it again under a new id")
        # The reason may name people: the broker keeps its digest only (the administrator
        # keeps the text; issue 9, item 6).
        detail = {"from": cur.status, "to": entry.status, "reason": reason_digest(req.reason)}
        material = (cur.statement, cur.signing_key, cur.encryption_key)
        response = await self._store(
            admin, f"agency.{entry.status}", entry, req.entry, material, detail
        )
        if entry.status == "revoked" and cur.status != "revoked":
            signed = req.entry.SerializeToString(deterministic=True)
            uri = Party("agency", entry.id).uri()
            await self.app.revocations.revoke(frozenset({uri}), by=admin, signed=signed)
        return response

    async def rotate_keys(self, data: bytes, admin: str) -> admin_pb2.AgencyResponse:
        req = parse(admin_pb2.RotateAgencyKeysRequest, data)
        entry = self._signed_entry(req.entry, admin)
        cur = await self._current(entry.id)
        self._next_revision(cur, entry)
        self._same(entry, cur, "country", "roles", "groups", "purposes", "status")
        keys = self._verify_statement(req.key_statement, entry.id)
        if keys.serial <= cur.serial:
            raise FailedPrecondition(
                f"the new key statement has serial {keys.serial}; it must be above {cur.serial}"
            )
        if entry.key_serial != keys.serial:
            raise InvalidArgument(f"the entry must name the new key serial {keys.serial}")
        material = (req.key_statement.SerializeToString(), keys.signing_key, keys.encryption_key)
        detail = {"serial": [cur.serial, keys.serial]}
        return await self._store(admin, "agency.rotate_keys", entry, req.entry, material, detail)

    async def list_agencies(self, data: bytes, admin: str) -> admin_pb2.ListAgenciesResponse:
        parse(admin_pb2.ListAgenciesRequest, data)
        records = await self.app.runner.call(lambda s: s.agencies())
        resp = admin_pb2.ListAgenciesResponse()
        for r in records:
            if r.signed_entry is not None:
                signed = admin_pb2.SignedAgencyEntry.FromString(r.signed_entry)
                resp.agencies.append(admin_pb2.AgencyEntry.FromString(signed.entry))
                resp.signed.append(signed)
            else:
                resp.agencies.append(entry_of(r))
                resp.signed.append(admin_pb2.SignedAgencyEntry())
        return resp

    async def list_actions(self, data: bytes, admin: str) -> admin_pb2.ListAdminActionsResponse:
        req = parse(admin_pb2.ListAdminActionsRequest, data)
        limit = min(req.limit or 100, 10_000)
        rows = await self.app.runner.call(lambda s: s.admin_actions(limit))
        return admin_pb2.ListAdminActionsResponse(
            actions=[
                admin_pb2.AdminAction(
                    sequence=r.seq,
                    actor=r.actor,
                    action=r.action,
                    target=r.target,
                    detail=r.detail,
                    at_ms=r.at_ms,
                )
                for r in rows
            ]
        )

    # -- console reads (wire forms in broker/server/console_reads.py) -------------------
    async def list_key_statements(
        self, data: bytes, admin: str
    ) -> admin_pb2.ListKeyStatementsResponse:
        parse(admin_pb2.ListKeyStatementsRequest, data)
        records = await self.app.runner.call(lambda s: s.agencies())
        return console_reads.key_statements_message(records)
