"""The originator verifies instead of trusting the broker's status (issue 9, item 2).

The node remembers what it signed: the audience of each version it sealed, from its
own wraps (broker/client/sent.py, SentLog), and the lifecycle actions it took with who
must acknowledge them (ActLog). :meth:`NodeVerifier.verify_delivery` checks the
broker's delivery status against that, never the other way round:

- every recipient sealed for must appear in the status (else ``recipient_missing``),
  and nobody else (``unsealed_recipient``);
- every receipt must verify against the key the CA bound to its recipient, name the
  header this node signed and exactly the sections sealed for that recipient
  (``receipt_unverified``);
- the notice's publication and each receipt must be in the transparency log: the
  proof of delivery's inclusion proofs are checked against a checkpoint this node can
  rely on (a prefix of, or itself, a checkpoint cosigned by its witnesses) and
  ``not_logged`` is reported when they are not there;
- every recipient a withdrawal or cancellation must reach (everyone sealed for) must
  be told, and its acknowledgement must be signed by it.

Each recipient ends up ``verified`` (signed receipt checked and provably logged),
``unverified`` (no receipt yet, or one that cannot be proven yet or at all: the detail
says which) or ``missing`` (sealed for, absent from the broker's status). A receipt
verified once stays verified (kept in the node's state), so a later key rotation does
not undo it.

:meth:`NodeVerifier.verify_logged` runs in the listener's sweep: it asks for the proof
of each newly published notice's leaf and reports ``not_logged`` when the broker cannot
show it within the witnesses' lag.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker.client.audit import Trust
from broker.client.findings import Finding, FindingLog
from broker.client.gossip import Gossip
from broker.client.logview import LogView
from broker.client.sent import ActLog, Sent, SentLog, VerifiedReceipt
from broker.client.types import now_ms
from broker.core import auditing
from broker.core import pod as pod_core
from broker.core import receipts as rcp
from broker.core.identity import IdentityError, verify_key_statement
from broker.errors import FailedPrecondition
from broker.trustconfig import TrustConfig
from broker.v1 import agency_pb2, audit_pb2, notice_pb2

log = logging.getLogger("broker.client")
VERIFIED, UNVERIFIED, MISSING = "verified", "unverified", "missing"
LOGGED_EVERY_S = 5.0  # how often the sweep checks that new notices are in the log


@dataclass(frozen=True)
class RecipientCheck:
    recipient: str
    version: int
    sealed: tuple[str, ...]  # the sections this node sealed for it
    state: str  # what the broker says (PENDING, DELIVERED ...; "" when it says nothing)
    verdict: str  # verified | unverified | missing
    detail: str


@dataclass(frozen=True)
class ActionCheck:
    action_id: str
    kind: str
    recipient: str
    state: str
    verdict: str
    detail: str


@dataclass(frozen=True)
class DeliveryReport:
    notice_id: str
    logged: tuple[int, ...]  # versions whose publication is provably in the log
    recipients: tuple[RecipientCheck, ...]
    actions: tuple[ActionCheck, ...]
    findings: tuple[Finding, ...]  # every finding about the notice, kept in the node's state

    def verdicts(self) -> dict[str, str]:
        """recipient -> verdict for the newest version each was sealed."""
        out: dict[str, str] = {}
        for r in sorted(self.recipients, key=lambda r: r.version):
            out[r.recipient] = r.verdict
        return out

    def never_verified(self) -> tuple[str, ...]:
        """Recipients of no version with a verified receipt: the expiry report's
        "never provably delivered to"."""
        done = {r.recipient for r in self.recipients if r.verdict == VERIFIED}
        return tuple(sorted({r.recipient for r in self.recipients} - done))

    def to_json(self) -> dict[str, Any]:
        return {
            "notice_id": self.notice_id,
            "logged_versions": list(self.logged),
            "recipients": [r.__dict__ for r in self.recipients],
            "actions": [a.__dict__ for a in self.actions],
            "findings": [f.__dict__ for f in self.findings],
            "never_verified": list(self.never_verified()),
        }


@dataclass(frozen=True)
class _Proven:
    """What the log proves of one published version."""

    report: pod_core.PodReport | None
    relied: bool  # its checkpoint is one this node can rely on
    why: str  # when not proven: what the broker could not show


class NodeVerifier:
    """The originator's checks of an AgencyNode (mixed in)."""

    me: str
    sent: SentLog
    acts: ActLog
    findings: FindingLog
    log_view: LogView
    trust_config: TrustConfig
    ca_key: EllipticCurvePublicKey
    audit_stub: Any
    gossip: Gossip
    _found: list[Finding]
    _retry: Callable[..., Any]
    directory: Callable[..., Any]
    delivery_status: Callable[..., Any]
    _logged_at: float = 0.0

    def _trust(self) -> Trust:
        return self.log_view.trust

    def _report(self, kind: str, notice_id: str, subject: str, detail: str) -> Finding | None:
        """Record a finding once (the same kind, notice and subject are not repeated)."""
        seen = self.findings.conn.execute(
            "SELECT 1 FROM findings WHERE kind=? AND notice_id=? AND subject=?",
            (kind, notice_id, subject),
        ).fetchone()
        if seen is not None:
            return None
        found = Finding(kind, notice_id, subject, detail, now_ms())
        self.findings.add(found)
        self._found.append(found)
        log.warning(
            "finding %s on notice %s: %s",
            kind,
            notice_id,
            detail,
            extra={"kind": kind, "notice_id": notice_id, "detail": detail},
        )
        return found

    # -- the log ------------------------------------------------------------------------
    async def _settle(self, note: str) -> bool:
        """Whether a served checkpoint is one this node can rely on (see LogView.settle);
        when it is newer than the cosigned one kept, fetch the newest cosigned view once."""
        for attempt in (1, 2):
            served = self._trust().open(note, min_cosignatures=0).checkpoint.size
            sizes = auditing.consistency_sizes(self.log_view.head[0], served)
            proof: list[bytes] = []
            if sizes is not None:
                got = await self._retry(
                    self.audit_stub.GetConsistencyProof,
                    audit_pb2.GetConsistencyProofRequest(old_size=sizes[0], new_size=sizes[1]),
                )
                proof = list(got.hashes)
            if self.log_view.settle(note, proof):
                return True
            if attempt == 1:
                await self.directory(refresh=True)  # the newest cosigned checkpoint
        return False

    async def _proven(self, s: Sent) -> _Proven:
        request = audit_pb2.GetProofOfDeliveryRequest(notice_id=s.notice_id, version=s.version)
        try:
            pod = await self._retry(self.audit_stub.GetProofOfDelivery, request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return _Proven(None, False, "the broker says it is not in the log")
            raise
        trust = self._trust()
        try:
            report = pod_core.verify_pod(
                pod, self.ca_key, trust.log, origin=trust.origin, pq_verifier=trust.log_pq
            )
        except (pod_core.PodError, auditing.CheckpointError) as exc:
            return _Proven(None, False, f"its proof of delivery does not verify: {exc}")
        if report.header_digest != s.header_digest or report.originator != self.me:
            return _Proven(None, False, "the log records another header than the one signed")
        relied = await self._settle(pod.checkpoint.note)
        if relied:
            self.sent.mark_logged(s.notice_id, s.version)
        return _Proven(report, relied, "" if relied else "awaiting a cosigned checkpoint")

    async def verify_logged(self, limit: int = 64) -> list[Finding]:
        """Check that notices published since the last call are in the log (the sweep
        calls this every LOGGED_EVERY_S); report those the broker cannot prove."""
        found: list[Finding] = []
        grace_ms = 1000 * max(2 * self.trust_config.max_lag_s, 30)
        for s in self.sent.unlogged(limit):
            try:
                proven = await self._proven(s)
            except grpc.aio.AioRpcError as exc:
                log.info("log check postponed", extra={"error": exc.details()})
                break
            if proven.relied:
                continue
            if proven.report is None or now_ms() - s.sent_at_ms > grace_ms:
                why = proven.why if proven.report is None else "not in a cosigned checkpoint"
                f = self._report("not_logged", s.notice_id, "", f"version {s.version}: {why}")
                if f is not None:
                    found.append(f)
                if proven.report is None:
                    self.sent.mark_logged(s.notice_id, s.version)  # reported; not asked again
        return found

    async def _verify_logged_now(self) -> None:
        """The sweep's call: at most every LOGGED_EVERY_S."""
        if time.monotonic() - self._logged_at < LOGGED_EVERY_S:
            return
        self._logged_at = time.monotonic()
        try:
            await self.verify_logged()
        except Exception:  # a failed check is retried at the next sweep
            log.warning("checking the log failed; retried later", exc_info=True)

    # -- delivery -----------------------------------------------------------------------
    def _check_receipt(
        self,
        proven: notice_pb2.ProvenReceipt,
        statement: notice_pb2.SignedKeyStatement,
        recipient: str,
    ) -> notice_pb2.Receipt:
        """The receipt, if its recipient's CA-bound key signed it; raises ReceiptError."""
        try:
            at = notice_pb2.Receipt.FromString(proven.receipt).received_at_ms
            keys = verify_key_statement(statement, self.ca_key, at, expected_agency=recipient)
        except (IdentityError, ValueError) as exc:
            raise rcp.ReceiptError(f"no CA-signed key verifies it ({exc})") from None
        if proven.signer != recipient:
            raise rcp.ReceiptError(f"it is signed by {proven.signer or 'nobody'}")
        return rcp.verify_proven_receipt(proven, keys.verify_key)

    def _recipient(
        self,
        s: Sent,
        recipient: str,
        sealed: tuple[str, ...],
        row: agency_pb2.RecipientStatus | None,
        proven: _Proven,
        known: dict[tuple[int, str, str], VerifiedReceipt],
        newly: list[VerifiedReceipt],
    ) -> RecipientCheck:
        state = "" if row is None else _state(row.state)

        def check(verdict: str, detail: str) -> RecipientCheck:
            return RecipientCheck(recipient, s.version, sealed, state, verdict, detail)

        nid = s.notice_id
        if (s.version, recipient, "") in known:
            return check(VERIFIED, "signed receipt verified and logged (earlier)")
        if row is None:
            self._report(
                "recipient_missing",
                nid,
                recipient,
                f"version {s.version} was sealed for {recipient}; the broker's status omits it",
            )
            return check(MISSING, "sealed for, but absent from the broker's status")
        if not row.receipt.receipt:
            return check(UNVERIFIED, f"no receipt yet (the broker says {state})")
        try:
            receipt = self._check_receipt(row.receipt, row.key_statement, recipient)
            _same_delivery(receipt, s, recipient, sealed)
        except rcp.ReceiptError as exc:
            self._report("receipt_unverified", nid, recipient, f"version {s.version}: {exc}")
            return check(UNVERIFIED, f"its receipt does not verify: {exc}")
        # The recipient's signed view of the log, compared with ours (broker/client/gossip.py).
        self.gossip.note(recipient, nid, receipt.checkpoint_size, receipt.checkpoint_root)
        logged = None
        if proven.report is not None:
            logged = next((r for r in proven.report.receipts if r.recipient == recipient), None)
        if logged is None:
            if proven.report is not None:
                self._report(
                    "not_logged",
                    nid,
                    recipient,
                    f"the receipt of {recipient} for version {s.version} is not in the log",
                )
            return check(UNVERIFIED, "signed receipt verified; it is not in the log")
        if not proven.relied:
            return check(UNVERIFIED, "signed receipt verified; awaiting a cosigned checkpoint")
        newly.append(
            VerifiedReceipt(nid, s.version, recipient, "", logged.log_index, receipt.received_at_ms)
        )
        return check(VERIFIED, f"signed receipt verified, logged at entry {logged.log_index}")

    def _actions(
        self,
        notice_id: str,
        status: agency_pb2.DeliveryStatusResponse,
        known: dict[tuple[int, str, str], VerifiedReceipt],
        newly: list[VerifiedReceipt],
    ) -> list[ActionCheck]:
        rows = {(a.action_id, a.recipient): a for a in status.actions}
        out = []
        for act in self.acts.of(notice_id):
            for recipient in act.audience:
                row = rows.get((act.action_id, recipient))
                state = "" if row is None else _state(row.state)

                def check(
                    verdict: str, detail: str, a: Any = act, r: str = recipient, st: str = state
                ) -> None:
                    out.append(ActionCheck(a.action_id, a.kind, r, st, verdict, detail))

                never_sent = _never_sent(status, recipient)
                if (0, recipient, act.action_id) in known:
                    check(VERIFIED, "acknowledgement verified (earlier)")
                elif row is None and never_sent:
                    check(UNVERIFIED, f"not told: the broker says its copy was {never_sent}")
                elif row is None:
                    self._report(
                        "recipient_missing",
                        notice_id,
                        recipient,
                        f"the {act.kind} {act.action_id} must reach {recipient}; "
                        "the broker's status shows no such delivery",
                    )
                    check(MISSING, f"must be told of the {act.kind}; the broker did not")
                elif not row.receipt.receipt:
                    check(UNVERIFIED, f"not acknowledged yet (the broker says {state})")
                else:
                    try:
                        ack = self._check_receipt(row.receipt, row.key_statement, recipient)
                        _same_action(ack, act.action_id, act.digest)
                    except rcp.ReceiptError as exc:
                        self._report(
                            "receipt_unverified",
                            notice_id,
                            recipient,
                            f"the acknowledgement of {act.action_id}: {exc}",
                        )
                        check(UNVERIFIED, f"its acknowledgement does not verify: {exc}")
                        continue
                    newly.append(
                        VerifiedReceipt(
                            notice_id, 0, recipient, act.action_id, -1, ack.received_at_ms
                        )
                    )
                    check(VERIFIED, "signed acknowledgement verified")
        return out

    async def verify_delivery(self, notice_id: str, version: int = 0) -> DeliveryReport:
        """Check the broker's delivery status of a notice this node published against
        what it sealed, the receipts' signatures and the transparency log.

        Raises FailedPrecondition when this node has no record of sealing the notice (it
        was published from another state directory); grpc errors as delivery_status.
        """
        sent = self.sent.get(notice_id, version)
        if not sent:
            raise FailedPrecondition(
                f"this node has no record of sealing notice {notice_id}"
                + (f" v{version}" if version else "")
                + " (published from another state directory?): nothing to verify against"
            )
        status: agency_pb2.DeliveryStatusResponse = await self.delivery_status(notice_id, version)
        known = self.acts.verified(notice_id)
        rows = {(r.recipient, r.version): r for r in status.recipients}
        newly: list[VerifiedReceipt] = []
        checks: list[RecipientCheck] = []
        logged: list[int] = []
        for s in sent:
            proven = await self._proven(s)
            if proven.relied:
                logged.append(s.version)
            elif proven.report is None:
                self._report("not_logged", notice_id, "", f"version {s.version}: {proven.why}")
            for recipient, sealed in sorted(s.audience.items()):
                row = rows.pop((recipient, s.version), None)
                checks.append(self._recipient(s, recipient, sealed, row, proven, known, newly))
        for recipient, v in sorted(rows):
            if any(s.version == v for s in sent):
                self._report(
                    "unsealed_recipient",
                    notice_id,
                    recipient,
                    f"the status names {recipient} for version {v}, which this node never "
                    "sealed for it",
                )
        actions = self._actions(notice_id, status, known, newly)
        self.acts.mark_verified(newly)
        await self.gossip.recheck()  # the recipients' views of the log against ours
        return DeliveryReport(
            notice_id,
            tuple(logged),
            tuple(checks),
            tuple(actions),
            tuple(f for _seq, f in self.findings.since(0, notice_id)),
        )

    def expected_audience(self, notice_id: str) -> tuple[str, ...]:
        """Everyone the newest version was sealed for: who a withdrawal must reach (those
        an update left out were told to delete theirs when it was published)."""
        sent = self.sent.get(notice_id)
        return tuple(sorted(sent[-1].audience)) if sent else ()


def _same_delivery(
    receipt: notice_pb2.Receipt, s: Sent, recipient: str, sealed: tuple[str, ...]
) -> None:
    """Raise ReceiptError unless the receipt acknowledges exactly what was sealed."""
    if (receipt.notice_id, receipt.version, receipt.recipient) != (
        s.notice_id,
        s.version,
        recipient,
    ):
        raise rcp.ReceiptError("it acknowledges another delivery")
    if receipt.header_digest != s.header_digest:
        raise rcp.ReceiptError("it acknowledges another header than the one signed")
    if sorted(receipt.sections) != sorted(sealed):
        raise rcp.ReceiptError(
            f"it names sections {sorted(receipt.sections)}, sealed {sorted(sealed)}"
        )


def _same_action(ack: notice_pb2.Receipt, action_id: str, digest: bytes) -> None:
    if ack.action_id != action_id or ack.header_digest != digest:
        raise rcp.ReceiptError("it acknowledges another action")


def _never_sent(status: agency_pb2.DeliveryStatusResponse, recipient: str) -> str:
    """The state the broker gives a recipient's newest copy when it says the copy never
    reached it (withheld, given up) and no receipt says otherwise; "" otherwise."""
    rows = [r for r in status.recipients if r.recipient == recipient]
    if not rows:
        return ""
    newest = max(rows, key=lambda r: r.version)
    never = (agency_pb2.DELIVERY_STATE_WITHHELD, agency_pb2.DELIVERY_STATE_DEAD_LETTERED)
    if newest.state in never and not any(r.receipt.receipt for r in rows):
        return _state(newest.state)
    return ""


def _state(state: int) -> str:
    return agency_pb2.DeliveryState.Name(state).removeprefix("DELIVERY_STATE_")  # type: ignore[arg-type]
