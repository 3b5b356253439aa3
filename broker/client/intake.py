"""What a recipient's node takes in, and what it applies: only what is signed.

Deliveries (`_take`): the node opens and verifies each one, then refuses, without a
receipt, a notice closed here for good (withdrawn, cancelled, expired: a tombstone) and
a version older than one it holds or saw (stale: the application never sees versions
[2, 1]); it works out under the signed policy and its own signed registry entry the
obligations that apply (the stricter union with what the broker carried) and whether an
embargo in the signed header still holds the notice from it (then the notice waits in
the inbox until the embargo ends).

Lifecycle actions (`_take_control`): signed actions are verified against the actor's
CA-bound key. The broker's own, unsigned orders to delete are applied only where signed
data backs them: EXPIRED when the notice's signed expiry (with any signed extension)
has passed, SUPERSEDED when the control carries the newer version's header signed by the
originator, RESTRICTED when it carries the originator's signed restriction update and
that update leaves this node out. Anything else is refused (no receipt) and reported.

The sweep (`_sweep`): embargoed notices reach the application when their embargo ends,
copies are erased at their signed expiry or maximum retention, and the erasure recorded.

A delivery whose opened sections lack a field the originator's signed content manifest
declares (broker/core/content.py) is refused, without a receipt, as the originator's lie
(a `content_manifest` finding): the broker checked the manifest's names at publish, the
node checks that they are true. A notice whose sections lack fields the signed policy's
catalogue asks of them is still shown, and reported (`content_incomplete`): a broker that
skipped its check passed it on, or it predates manifests.

Every refusal and difference is a Finding (broker/client/findings.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from google.protobuf.message import DecodeError

from broker import pki
from broker.client.directory import View
from broker.client.findings import Finding, FindingLog
from broker.client.gossip import Gossip
from broker.client.inbox import Inbox
from broker.client.reasons import open_reason
from broker.client.types import (
    LifecycleHandler,
    LifecycleNotice,
    ListenStats,
    ReceivedNotice,
    now_ms,
)
from broker.core import content, intake, lifecycle, relay
from broker.core import envelope as env
from broker.core.bounds import quote
from broker.core.decisions import DecisionCache
from broker.core.identity import IdentityError
from broker.core.policy import AgencyProfile, Bundle
from broker.errors import InvalidArgument
from broker.v1 import agency_pb2, notice_pb2

log = logging.getLogger("broker.client")
# Clocks differ: a broker whose clock runs a little ahead releases an embargo or expires a
# notice a moment before this node's clock says so. Within this much, that is not a finding
# and a signed expiry counts as passed.
SKEW_MS = 5_000
CLOSING = {
    notice_pb2.LIFECYCLE_WITHDRAW: "withdrawn",
    notice_pb2.LIFECYCLE_CANCEL: "cancelled",
    notice_pb2.LIFECYCLE_EXPIRED: "expired",
}


class NodeIntake:
    """The receiving rules of an AgencyNode (mixed in)."""

    me: str
    credentials: pki.AgencyCredentials
    inbox: Inbox
    gossip: Gossip
    stats: ListenStats
    findings: FindingLog
    verified: Any  # broker.client.directory.Verified
    _view: View | None
    _found: list[Finding]
    _report: Callable[[str, str, str, str], Finding | None]  # NodeVerifier._report
    _decisions: DecisionCache  # NodePublisher's
    _expectations: intake.ExpectationCache  # AgencyNode's
    open: Callable[[notice_pb2.Delivery], ReceivedNotice]  # AgencyNode.open
    _receipt: Callable[[ReceivedNotice], notice_pb2.Receipt]  # AgencyNode._receipt

    # -- helpers ---------------------------------------------------------------------------
    def _finding(self, kind: str, notice_id: str, subject: str, detail: str) -> None:
        # Recorded once per kind, notice and subject (NodeVerifier._report): a refused
        # delivery is not receipted, so the broker sends it again on every new stream.
        self._report(kind, notice_id, subject, detail)

    def _own(self) -> tuple[Bundle, AgencyProfile] | None:
        """The signed policy and this node's own signed registry entry, if it has them."""
        view = self._view
        if view is None or self.me not in view.members:
            return None
        return view.policy, view.members[self.me].profile

    # -- deliveries -----------------------------------------------------------------------
    def _take(
        self, delivery: notice_pb2.Delivery, batch: set[tuple[str, int]]
    ) -> tuple[ReceivedNotice | None, notice_pb2.Receipt | None]:
        """Open a delivery: (the notice if the application should see it now, its receipt).

        None for the notice when it is a redelivery, when it waits for its embargo (taken
        in here) or when it is refused (then there is no receipt either).
        """
        closed = self._closed_before_opening(delivery)
        if closed is not None:
            return None, None
        try:
            notice = self.open(delivery)
        except env.OpenError:
            self.stats.rejected += 1
            log.warning(
                "delivery did not open; not receipted", extra={"sequence": delivery.sequence}
            )
            return None, None
        nid, version = notice.notice_id, notice.version
        h = notice.header
        self.gossip.note(notice.originator, nid, h.checkpoint_size, h.checkpoint_root)
        lies = content.manifest_lies(notice.manifest, notice.sections)
        if lies:  # signed by the originator, so the lie is its own: refused, no receipt
            self.stats.rejected += 1
            self._finding(
                "content_manifest",
                nid,
                notice.originator,
                f"{notice.kind} v{version}: "
                + "; ".join(
                    f"section {quote(s)} lacks {', '.join(quote(f) for f in fields)}"
                    for s, fields in sorted(lies.items())
                )
                + ", which the originator's signed content manifest declares; refused",
            )
            return None, None
        key = (nid, version)
        seen = self.inbox.versions(nid)
        if key in batch or version in seen:
            self.stats.duplicates += 1
            return None, self._receipt(notice)
        newer = [v for v in seen if v > version] + [v for n, v in batch if n == nid and v > version]
        if newer:
            self.stats.rejected += 1
            self._finding(
                "stale_version",
                nid,
                notice.originator,
                f"version {version} delivered after version {max(newer)}; refused",
            )
            return None, None
        batch.add(key)
        now = now_ms()
        own = self._own()
        release = 0
        if own is not None:
            policy, profile = own
            expected = self._expected(policy, profile, notice.header, notice.sections, now)
            if expected is None:  # nothing to compare with: what the broker carried applies
                expected = intake.expectation(notice.obligations, 0)
            release = expected.release_ms
            applied, dropped, added = intake.apply(notice.obligations, expected)
            if dropped or added:
                self._finding(
                    "obligations_differ",
                    nid,
                    notice.originator,
                    f"the broker carried {len(notice.obligations)} obligation(s), the signed "
                    f"policy attaches {len(expected.obligations)}; dropped {list(dropped)}, "
                    f"added {list(added)}; the stricter set applies",
                )
            notice = replace(notice, obligations=applied)
            self._content_complete(notice, policy)
            # What the inbox keeps (and a held notice is released with) is what applies.
            del delivery.obligations[:]
            delivery.obligations.extend(applied)
        elif notice.header.embargo_until_ms > now:
            release = notice.header.embargo_until_ms  # without the policy: hold to be safe
        if release > now:
            if own is not None and release - now > SKEW_MS:
                self._finding(
                    "early_release",
                    nid,
                    notice.originator,
                    f"delivered {(release - now) // 1000} s before its signed embargo ends; held",
                )
            self.inbox.take_in(
                nid,
                version,
                delivery.SerializeToString(),
                now,
                expires_at_ms=notice.header.expires_at_ms,
                release_at_ms=release,
                erase_at_ms=intake.erase_deadline(notice.obligations, now, 0),
            )
            return None, self._receipt(notice)
        return notice, self._receipt(notice)

    def _expected(
        self,
        policy: Bundle,
        profile: AgencyProfile,
        header: notice_pb2.NoticeHeader,
        sections: Mapping[str, bytes],
        now: int,
    ) -> intake.Expectation | None:
        """What the signed policy asks of this node for a notice: decided once per notice
        shape, policy and view (its digest covers this node's signed entry), not per
        delivery. None when the policy cannot decide it (a kind it no longer knows)."""
        names = tuple(sorted(sections))
        view_key = f"{self._view.digest if self._view else ''}/{self.me}"
        key = (policy.version, view_key, intake.shape_key(header, names, now))
        got = self._expectations.get(key)
        if got is not None:
            return got
        try:
            facts = intake.recipient_facts(header, self.me, names)
            shape = self._decisions.outcome(policy, view_key, (profile,), facts, now)
            got = intake.expectation(
                shape.obligations(self.me, names), shape.deliver_after_ms(self.me, names)
            )
        except (InvalidArgument, ValueError) as exc:  # a kind this policy no longer knows
            log.warning("obligations not recomputed", extra={"error": str(exc)})
            return None
        self._expectations.put(key, got)
        return got

    def _content_complete(self, notice: ReceivedNotice, policy: Bundle) -> None:
        """Report (and still show) a notice whose sections lack fields the signed policy's
        catalogue asks of them: a broker that skipped its manifest check let it through (or
        it was published before manifests, or under another catalogue). Call it only once
        `manifest_lies` found the notice's manifest true."""
        spec = policy.kinds.get(notice.kind)
        # The manifest was found true (manifest_lies): sections it covers are not parsed again.
        lacking = (
            content.missing_fields(spec, notice.sections, notice.manifest)
            if spec is not None
            else {}
        )
        if lacking:
            self._finding(
                "content_incomplete",
                notice.notice_id,
                notice.originator,
                f"{notice.kind} v{notice.version}: "
                + "; ".join(f"section {quote(s)} lacks {', '.join(f)}" for s, f in lacking.items())
                + " (content_fields of the signed policy; its content manifest declared "
                "none of them, so the broker should have refused it); shown",
            )

    def _closed_before_opening(self, delivery: notice_pb2.Delivery) -> str | None:
        """Refuse a notice closed here (withdrawn, cancelled, expired) before opening it:
        a tombstone stays shut whatever the broker sends under that id."""
        try:
            header = notice_pb2.NoticeHeader.FromString(delivery.header.header_bytes)
        except DecodeError:
            return None  # opening refuses it
        closed = self.inbox.closed(header.notice_id) if header.notice_id else None
        if closed is not None:
            self.stats.rejected += 1
            self._finding(
                "after_closure",
                header.notice_id,
                header.originator,
                f"version {header.version} delivered after the notice was {closed}; refused",
            )
        return closed

    # -- lifecycle actions ------------------------------------------------------------------
    def _actor_key(self, control: notice_pb2.ControlDelivery, actor: str) -> bytes:
        try:
            keys = self.verified.statement(control.actor_statement, now_ms(), actor)
        except IdentityError as exc:
            raise InvalidArgument(f"no CA-signed key for {actor}") from exc
        key: bytes = keys.verify_key  # Ed25519, or Ed25519 || ML-DSA-65 (hybrid signatures)
        return key

    def _verified_action(self, control: notice_pb2.ControlDelivery) -> notice_pb2.LifecycleAction:
        """Check who took a lifecycle action, and for the broker's own orders that signed
        data backs them; raise InvalidArgument otherwise."""
        if control.restriction_update:
            return self._verified_restriction(control)
        action = lifecycle.peek_action(control.action)
        if action.actor == lifecycle.BROKER:
            if action.kind not in lifecycle.BROKER_ONLY:
                raise InvalidArgument("the broker may only expire or supersede")
            self._check_broker_order(control, action)
            return action
        lifecycle.verify_action(control.action, self._actor_key(control, action.actor))
        if action.kind in lifecycle.BROKER_ONLY:
            raise InvalidArgument("only the broker expires or supersedes")
        return action

    def _check_broker_order(
        self, control: notice_pb2.ControlDelivery, action: notice_pb2.LifecycleAction
    ) -> None:
        nid = action.notice_id
        lowest = 2 if action.kind == notice_pb2.LIFECYCLE_SUPERSEDED else 1
        if action.version < lowest or action.action_id != lifecycle.broker_action_id(
            action.kind, nid, action.version
        ):
            # Not an order the broker takes: its own actions are one per notice, version
            # and kind, under an id derived from them, and only a version 2 or later
            # supersedes (red-team finding: a SUPERSEDED v0 under an originator's withdraw
            # id passed unchecked and hid the withdrawal from the application).
            raise _Unsigned(
                f"the broker's order names version {action.version} under action id "
                f"{quote(action.action_id)}, not one the broker takes"
            )
        held = self.inbox.held_versions(nid)
        if action.kind == notice_pb2.LIFECYCLE_EXPIRED:
            expiry = self.inbox.expiry(nid)
            if held and expiry > now_ms() + SKEW_MS:
                raise _Unsigned(
                    f"the broker says it expired, but its signed expiry is {expiry} ms "
                    f"({(expiry - now_ms()) // 1000} s from now)"
                )
            return
        # SUPERSEDED: only with a newer version's header, signed by the originator, as
        # soon as the node holds any version (it erases those below the action's).
        if not held:
            return  # nothing to erase: harmless
        try:
            header = notice_pb2.NoticeHeader.FromString(control.superseding.header_bytes)
            keys = self.verified.statement(
                control.originator_statement, now_ms(), header.originator
            )
        except (DecodeError, IdentityError) as exc:
            raise _Unsigned(
                f"the supersession carries no verifiable newer header ({exc})"
            ) from None
        from broker.core.envelope import verify_header_signature

        signed = control.superseding
        originator = self._originator_of(nid)
        if not (
            verify_header_signature(signed, keys.verify_key)
            # The broker attaches the newest header: a version published after the one
            # that dropped this node proves the supersession as well, even where a later
            # version put this node back and it holds that one already (crash trials).
            and intake.proves_supersession(header, action.version, nid, originator)
        ):
            raise _Unsigned(
                "the supersession's newer header is not signed by the originator, or is older "
                "than the version it claims supersedes the ones held"
            )

    def _originator_of(self, notice_id: str) -> str:
        row = self.inbox.conn.execute(
            "SELECT delivery FROM inbox WHERE notice_id=? AND delivery<>x'' LIMIT 1", (notice_id,)
        ).fetchone()
        if row is None:
            return ""
        delivery = notice_pb2.Delivery.FromString(bytes(row[0]))
        return env.peek_originator(delivery.header)

    def _verified_restriction(
        self, control: notice_pb2.ControlDelivery
    ) -> notice_pb2.LifecycleAction:
        """A RESTRICTED order: the originator's signed restriction update, which must leave
        this node out. Returned as a LifecycleAction for the receipt and the application."""
        try:
            update = agency_pb2.RestrictionUpdate.FromString(control.restriction_update)
        except DecodeError as exc:
            raise InvalidArgument("the restriction update does not parse") from exc
        try:
            signer = notice_pb2.KeyStatement.FromString(control.actor_statement.statement)
        except DecodeError as exc:
            raise InvalidArgument("the restriction update comes without its signer's key") from exc
        originator = self._originator_of(update.notice_id) or signer.agency_id
        if originator != signer.agency_id:
            raise InvalidArgument("the restriction update is not signed by the notice's originator")
        key = self._actor_key(control, originator)
        relay.accept_restriction_update(
            control.restriction_update, control.restriction_signature, originator, originator, key
        )
        own = self._own()
        if own is not None and not intake.excluded(update.restrictions, own[1], own[0]):
            raise _Unsigned("the originator's new restrictions do not leave this node out")
        return notice_pb2.LifecycleAction(
            action_id=lifecycle.restricted_action_id(update.notice_id, update.sequence),
            notice_id=update.notice_id,
            actor=originator,
            kind=notice_pb2.LIFECYCLE_RESTRICTED,
            at_ms=update.at_ms,
        )

    async def _take_control(
        self, control: notice_pb2.ControlDelivery, on_lifecycle: LifecycleHandler | None
    ) -> notice_pb2.Receipt | None:
        """Verify and apply a lifecycle action; return its receipt (None: refused)."""
        try:
            action = self._verified_action(control)
        except _Unsigned as exc:
            self.stats.rejected += 1
            peek = _peek(control)
            self._finding("unsigned_erasure", peek.notice_id, "broker", f"{exc}; refused")
            return None
        except InvalidArgument as exc:
            self.stats.rejected += 1
            log.warning("lifecycle action refused", extra={"error": str(exc)})
            return None
        erased = 0
        nid = action.notice_id
        self.gossip.note(action.actor, nid, action.checkpoint_size, action.checkpoint_root)
        if action.kind in CLOSING:
            erased = self.inbox.held(nid)
            self.inbox.close_notice(nid, CLOSING[action.kind], action.action_id, now_ms())
        elif action.kind == notice_pb2.LIFECYCLE_SUPERSEDED:
            erased = self.inbox.delete(nid, below_version=max(action.version, 1), why="superseded")
        elif action.kind == notice_pb2.LIFECYCLE_RESTRICTED:
            erased = self.inbox.delete(nid, why="restricted")
        elif action.kind == notice_pb2.LIFECYCLE_EXTEND:
            self.inbox.extend(nid, action.until_ms)
        reason = open_reason(action, self.me, self.credentials.encryption_private_key)
        first = self.inbox.record_action(
            action.action_id,
            nid,
            lifecycle.NAMES.get(action.kind, "unknown"),
            action.actor,
            reason,
            now_ms(),
        )
        if first and on_lifecycle is not None:
            await on_lifecycle(LifecycleNotice(action, erased, reason))
        self.stats.actions += 1
        signed_bytes = control.restriction_update or control.action.action
        return notice_pb2.Receipt(
            notice_id=nid,
            version=action.version,
            recipient=self.me,
            header_digest=hashlib.sha256(signed_bytes).digest(),
            received_at_ms=now_ms(),
            action_id=action.action_id,
            checkpoint_size=self.gossip.log_view.head[0],  # this node's view, signed in
            checkpoint_root=self.gossip.log_view.head[1],
        )


class _Unsigned(InvalidArgument):
    """The broker ordered something that no signed data backs."""


def _peek(control: notice_pb2.ControlDelivery) -> notice_pb2.LifecycleAction:
    try:
        return lifecycle.peek_action(control.action)
    except InvalidArgument:
        return notice_pb2.LifecycleAction()
