"""Restrictions after publishing, and the re-check at forwarding: UpdateRestrictions
takes an originator's signed update, checks it as Publish checks restrictions, withholds
queued deliveries it no longer allows, tells holders it excludes to erase their copy (with
the signed update, which their node verifies) and logs the change.

Mixed into AgencyService (broker/server/service.py).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from broker.core import intake, logleaf, records, relay
from broker.core import lifecycle as lifecycle_core
from broker.errors import FailedPrecondition, InvalidArgument
from broker.server import metrics, oplog
from broker.server.peer import caller, require_agency, require_registered
from broker.server.wire import now_ms, parse
from broker.store.api import (
    Event,
    LeasedDelivery,
    Store,
)
from broker.v1 import agency_pb2, audit_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

log = logging.getLogger("broker.server")
Ctx = Any


def _withhold(seq: int, reason: str, leased: bool, store: Store) -> Event | None:
    return store.withhold(seq, reason, now_ms(), leased)


class RestrictionHandlers:
    """UpdateRestrictions and the forwarding-time re-check."""

    app: BrokerApp

    def _agency(self, context: Ctx) -> str:
        agency = require_agency(caller(context, self.app.revoked))
        return require_registered(agency, self.app.registry)

    def _restrictions(self, notice_id: str, envelope: notice_pb2.Envelope) -> bytes:
        return self.app.restriction_overrides.get(notice_id, envelope.restrictions)

    def _recheck(
        self,
        recipient: str,
        sections: tuple[str, ...],
        envelope: notice_pb2.Envelope,
        overrides: dict[str, bytes] | None = None,
    ) -> tuple[str | None, list[notice_pb2.Obligation]]:
        header = notice_pb2.NoticeHeader.FromString(envelope.header.header_bytes)
        restrictions = notice_pb2.OriginatorRestrictions.FromString(
            (overrides or {}).get(header.notice_id)
            or self._restrictions(header.notice_id, envelope)
        )
        facts = relay.facts_of(header, restrictions, sections)
        agency = self.app.registry.get(recipient)
        return relay.recheck(
            facts, None if agency is None else agency.profile, sections, self.app.policy, now_ms()
        )

    def _forwarding_leaf(
        self, recipient: str, d: LeasedDelivery, envelope: notice_pb2.Envelope, outcome: str
    ) -> audit_pb2.LogLeaf:
        """The log's record of a forwarding-time decision: the facts and the recipient's
        profile it was decided on (replay re-evaluates them and checks the profile against
        the administrator-signed registry entry in force)."""
        header = notice_pb2.NoticeHeader.FromString(envelope.header.header_bytes)
        restrictions_bytes = self._restrictions(header.notice_id, envelope)
        restrictions = notice_pb2.OriginatorRestrictions.FromString(restrictions_bytes)
        facts = relay.facts_of(header, restrictions, d.sections)
        agency = self.app.registry.get(recipient)
        record = json.dumps(
            {
                "notice": records.facts_json(facts),
                "recipient": None if agency is None else records.profile_json(agency.profile),
            },
            sort_keys=True,
        ).encode()
        return logleaf.forwarding_decision(
            notice_id=header.notice_id,
            version=header.version,
            originator=header.originator,
            recipient=recipient,
            sections=d.sections,
            outcome=outcome,
            policy_version=self.app.policy.version,
            registry_key=self.app.registry_key,
            restrictions=restrictions_bytes
            if header.notice_id in self.app.restriction_overrides
            else b"",
            record=record,
            logged_at_ms=now_ms(),
        )

    async def _withhold(self, seq: int, reason: str, leased: bool = False) -> bool:
        event = await self.app.runner.call(partial(_withhold, seq, reason, leased))
        if event is None:
            return False
        metrics.WITHHELD.inc()
        oplog.delivery(
            oplog.WITHHELD, event.notice_id, event.version, event.recipient, reason=reason
        )
        self.app.wake(event.agency)
        return True

    async def _forward_check(
        self,
        recipient: str,
        d: LeasedDelivery,
        envelope: notice_pb2.Envelope,
        logged: list[audit_pb2.LogLeaf],
    ) -> list[notice_pb2.Obligation] | None:
        """Re-check a leased delivery against the policy, registry and restrictions of now:
        None if it was withheld, else the obligations to carry with it. The decision's
        leaf is added to `logged` (appended to the log before anything is streamed)."""
        reason, obligations = self._recheck(recipient, d.sections, envelope)
        outcome = "allowed" if reason is None else "withheld"
        logged.append(self._forwarding_leaf(recipient, d, envelope, outcome))
        if reason is not None:
            await self._withhold(d.seq, reason, leased=True)
            return None
        return obligations

    async def update_restrictions(
        self, data: bytes, context: Ctx
    ) -> agency_pb2.UpdateRestrictionsResponse:
        me = self._agency(context)
        req = parse(agency_pb2.UpdateRestrictionsRequest, data)
        peek = agency_pb2.RestrictionUpdate()
        try:
            peek.ParseFromString(req.update)
        except DecodeError as exc:
            raise InvalidArgument("update is not a valid broker.v1.RestrictionUpdate") from exc
        owner = await self.app.runner.call(lambda s: s.notice_owner(peek.notice_id))
        agency = self.app.registry.get(me)
        if agency is None:
            raise InvalidArgument(f"{me} is not in the agency registry")
        if agency.profile.status != "active":
            raise FailedPrecondition(f"{me} is {agency.profile.status} and may not act on notices")
        update = relay.accept_restriction_update(
            req.update, req.signature, me, owner, agency.verify_key
        )
        restrictions = update.restrictions.SerializeToString(deterministic=True)
        nid = update.notice_id
        app = self.app

        def read(
            store: Store,
        ) -> tuple[Any, bytes, list[tuple[int, str, int, tuple[str, ...], bytes]]]:
            return (
                store.notice_state(nid),
                store.latest_envelope(nid),
                store.queued_with_envelopes(nid),
            )

        state, latest, queued = await app.runner.call(read)
        if state is None or not latest:
            raise FailedPrecondition(f"notice {nid} holds nothing to restrict any more")
        header = notice_pb2.NoticeHeader.FromString(
            notice_pb2.Envelope.FromString(latest).header.header_bytes
        )
        sections = sorted(
            notice_pb2.SectionDescriptor.FromString(s.descriptor).name
            for s in notice_pb2.Envelope.FromString(latest).sections
        )
        # The same checks as Publish, with the same messages (unknown groups, countries,
        # agencies; TLP:RED without named recipients ...).
        facts = relay.facts_of(header, update.restrictions, sections)
        relay.check_restrictions(
            header, update.restrictions, facts, app.registry, app.policy, signed_embargo=False
        )
        # Holders the new restrictions leave out are told, with the signed update, to erase.
        excluded = sorted(
            r
            for r in state.received
            if r in app.registry
            and intake.excluded(update.restrictions, app.registry[r].profile, app.policy)
        )
        override = {nid: restrictions}
        withhold = []
        for seq, recipient, _version, queued_sections, envelope_bytes in queued:
            envelope = notice_pb2.Envelope.FromString(envelope_bytes)
            reason, _ = self._recheck(recipient, queued_sections, envelope, override)
            if reason is not None:
                withhold.append((seq, reason))
        now = now_ms()
        action_id = lifecycle_core.restricted_action_id(nid, update.sequence)

        def write(store: Store) -> list[Event]:
            if not store.set_restrictions(nid, update.sequence, restrictions, data, now):
                return []  # the same signed update again: done before
            store.record_action(me, "notice.restrictions", nid, {"sequence": update.sequence}, now)
            events = [
                e for seq, reason in withhold if (e := store.withhold(seq, reason, now)) is not None
            ]
            if excluded:
                store.take_action(
                    action_id=action_id,
                    notice_id=nid,
                    actor=me,
                    kind="restricted",
                    action=req.update,
                    signature=req.signature,
                    effect=lifecycle_core.Effect(tell=tuple(excluded)),
                    now_ms=now,
                )
            store.tlog_append(
                [
                    logleaf.restrictions_updated(
                        notice_id=nid,
                        originator=me,
                        sequence=update.sequence,
                        update=req.update,
                        excluded=excluded,
                        withheld=len(events),
                        logged_at_ms=now,
                    )
                ]
            )
            return events

        events = await app.runner.call(write)
        app.set_restriction_override(nid, restrictions)
        for ev in events:
            metrics.WITHHELD.inc()
            oplog.delivery(oplog.WITHHELD, ev.notice_id, ev.version, ev.recipient)
            app.wake(ev.agency)
        for agency_id in excluded:
            app.wake(agency_id)
        withheld = len(events)
        return agency_pb2.UpdateRestrictionsResponse(withheld=withheld)
