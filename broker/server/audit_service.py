"""AuditService handlers: checkpoints, entries, proofs, proofs of delivery, replay inputs.

Requests arrive as raw bytes and are parsed here (INVALID_ARGUMENT for bad
protobuf); every handler resolves the caller from its certificate first.

Authorization:

* an auditor (urn:broker:auditor:<id>) sees every entry, every notice's proof
  of delivery and decision record, and the policy bundles;
* an agency sees the entries about its own notices (as originator: published,
  decision, withholdings, receipts and lifecycle events) and its own receipts
  and dead-lettered deliveries (as recipient: never what was withheld from
  it, nor another recipient's receipt); proofs of delivery and decision
  records of its own notices only; a leaf it may not see is NOT_FOUND, like
  one that does not exist. Checkpoints and consistency proofs reveal only
  sizes and hashes: every agency may fetch them (witnesses need them), and
  an agency may hand in its cosignature of a checkpoint;
* administrators and brokers are refused (separation of duties: those who
  change policy and registry do not audit them).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import Message

from broker.core import auditing, logleaf
from broker.core.checkpoint import Checkpoint, format_checkpoint, verify_cosignature
from broker.errors import InvalidArgument, NotFound, PermissionDenied
from broker.server import console_reads
from broker.server.peer import caller
from broker.server.status import unary_handler
from broker.server.wire import now_ms, parse
from broker.store.tlog import StoredCheckpoint, TransparencyLogMixin
from broker.v1 import audit_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

Ctx = Any
AUDIT_SERVICE_NAME = "broker.v1.AuditService"
MAX_ENTRIES = 1000
MAX_REFS = 256
MAX_COSIGNATURE_SKEW_S = 300


@dataclass(frozen=True)
class Reader:
    """Who is auditing: an agency id, or None for an auditor (sees everything)."""

    agency: str | None
    uri: str

    @property
    def is_auditor(self) -> bool:
        return self.agency is None


def checkpoint_message(cp: StoredCheckpoint) -> audit_pb2.SignedCheckpoint:
    return audit_pb2.SignedCheckpoint(
        note=cp.full_note,
        size=cp.size,
        root=cp.root,
        issued_at_ms=cp.issued_at_ms,
        cosignatures=len(cp.cosignatures),
    )


class AuditService:
    """Implements broker.v1.AuditService on a BrokerApp."""

    def __init__(self, app: BrokerApp) -> None:
        self.app = app

    # -- wiring ------------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        def unary(
            name: str, fn: Callable[[bytes, Reader], Awaitable[Message]]
        ) -> grpc.RpcMethodHandler:
            return unary_handler(
                f"AuditService.{name}",
                lambda request, context: fn(request, self._reader(context)),
            )

        methods = {
            "GetCheckpoint": self.get_checkpoint,
            "GetEntries": self.get_entries,
            "GetInclusionProof": self.get_inclusion_proof,
            "GetConsistencyProof": self.get_consistency_proof,
            "GetProofOfDelivery": self.get_proof_of_delivery,
            "GetDecisionRecords": self.get_decision_records,
            "GetPolicyBundle": self.get_policy_bundle,
            "AddCosignature": self.add_cosignature,
            "ListCheckpoints": self.list_checkpoints,
            "GetQueues": self.get_queues,
        }
        return grpc.method_handlers_generic_handler(
            AUDIT_SERVICE_NAME, {name: unary(name, fn) for name, fn in methods.items()}
        )

    def _reader(self, context: Ctx) -> Reader:
        party = caller(context, self.app.revoked)
        if party.kind == "auditor":
            return Reader(None, party.uri())
        if party.kind == "agency":
            return Reader(party.id, party.uri())
        raise PermissionDenied(
            f"{party.uri()} may not audit: AuditService is for auditors and agencies"
        )

    async def _store(self, fn: Callable[[TransparencyLogMixin], Any]) -> Any:
        return await self.app.runner.call(fn)

    # -- checkpoints ---------------------------------------------------------------
    async def get_checkpoint(self, data: bytes, who: Reader) -> audit_pb2.SignedCheckpoint:
        req = parse(audit_pb2.GetCheckpointRequest, data)
        size, k = req.size, req.min_cosignatures
        cp: StoredCheckpoint | None
        if size or k:
            cp = await self._store(lambda s: s.tlog_checkpoint(size, k))
        else:  # the latest: signed now if the log grew since the last one
            cp = await self.app.checkpoints.issue()
        if cp is None:
            if size:
                raise NotFound(f"the broker signed no checkpoint of size {size}")
            raise NotFound(f"no checkpoint has {k} cosignatures yet")
        return checkpoint_message(cp)

    async def add_cosignature(self, data: bytes, who: Reader) -> audit_pb2.AddCosignatureResponse:
        req = parse(audit_pb2.AddCosignatureRequest, data)
        if who.agency is None:
            raise PermissionDenied("witnesses are agencies: cosign with an agency certificate")
        agency = self.app.registry.get(who.agency)
        if agency is None:
            raise PermissionDenied(f"{who.agency} is not in the agency registry")
        cp: StoredCheckpoint | None = await self._store(lambda s: s.tlog_checkpoint(req.size))
        if cp is None or req.size == 0:
            raise NotFound(f"the broker signed no checkpoint of size {req.size}")
        text = format_checkpoint(Checkpoint(self.app.checkpoints.origin, cp.size, cp.root))
        verifier = auditing.witness_verifier(who.agency, agency.signing_key)
        signed_at = verify_cosignature(text, req.signature_line, verifier)
        if signed_at > time.time() + MAX_COSIGNATURE_SKEW_S:
            raise InvalidArgument("the cosignature is dated in the future: check the clock")
        line, size, at = req.signature_line.removesuffix("\n"), cp.size, now_ms()
        count: int = await self._store(
            lambda s: s.tlog_add_cosignature(size, verifier.name, line, signed_at, at)
        )
        return audit_pb2.AddCosignatureResponse(cosignatures=count)

    # -- entries and proofs ------------------------------------------------------------
    async def get_entries(self, data: bytes, who: Reader) -> audit_pb2.GetEntriesResponse:
        req = parse(audit_pb2.GetEntriesRequest, data)
        limit = min(req.limit or MAX_ENTRIES, MAX_ENTRIES)

        def op(s: TransparencyLogMixin) -> tuple[int, list[tuple[int, bytes]], int]:
            size = s.tlog_size()
            end = req.end or size
            if not req.start <= end <= size:
                raise InvalidArgument(
                    f"entries [{req.start}, {end}) are not within the log's {size} entries"
                )
            entries, nxt = s.tlog_entries(req.start, end, limit, who.agency)
            return size, entries, nxt

        size, entries, nxt = await self._store(op)
        return audit_pb2.GetEntriesResponse(
            entries=[audit_pb2.LogEntry(index=i, leaf=leaf) for i, leaf in entries],
            tree_size=size,
            next=nxt,
        )

    async def get_inclusion_proof(self, data: bytes, who: Reader) -> audit_pb2.InclusionProof:
        req = parse(audit_pb2.GetInclusionProofRequest, data)
        size = req.tree_size or (await self.app.checkpoints.covering(req.index + 1)).size

        def op(s: TransparencyLogMixin) -> tuple[bytes, list[bytes]]:
            return s.tlog_entry(req.index, who.agency), s.tlog_inclusion(req.index, size)

        leaf, hashes = await self._store(op)
        return audit_pb2.InclusionProof(
            entry=audit_pb2.LogEntry(index=req.index, leaf=leaf), tree_size=size, hashes=hashes
        )

    async def get_consistency_proof(self, data: bytes, who: Reader) -> audit_pb2.ConsistencyProof:
        req = parse(audit_pb2.GetConsistencyProofRequest, data)
        hashes = await self._store(lambda s: s.tlog_consistency(req.old_size, req.new_size))
        return audit_pb2.ConsistencyProof(
            old_size=req.old_size, new_size=req.new_size, hashes=hashes
        )

    # -- proof of delivery -------------------------------------------------------------
    async def get_proof_of_delivery(self, data: bytes, who: Reader) -> audit_pb2.ProofOfDelivery:
        req = parse(audit_pb2.GetProofOfDeliveryRequest, data)
        if not req.notice_id:
            raise InvalidArgument("GetProofOfDeliveryRequest.notice_id is required")
        material = await self._store(
            lambda s: s.tlog_pod_material(req.notice_id, req.version, who.agency)
        )
        kinds = {kind for _, _, kind in material.entries}
        if not {logleaf.NOTICE, logleaf.DECISION} <= kinds:
            raise NotFound(f"notice {req.notice_id} v{material.version} is not in the log")
        cp = await self.app.checkpoints.covering(max(i for i, _, _ in material.entries) + 1)
        indexes = [i for i, _, _ in material.entries]
        proofs: list[list[bytes]] = await self._store(
            lambda s: [s.tlog_inclusion(i, cp.size) for i in indexes]
        )
        pod = audit_pb2.ProofOfDelivery(
            format=1,
            notice_id=material.notice_id,
            version=material.version,
            checkpoint=checkpoint_message(cp),
        )
        for (index, leaf, kind), proof in zip(material.entries, proofs, strict=True):
            proven = audit_pb2.ProvenEntry(
                entry=audit_pb2.LogEntry(index=index, leaf=leaf), proof=proof
            )
            if kind == logleaf.NOTICE and not pod.HasField("notice"):
                pod.notice.CopyFrom(proven)
            elif kind == logleaf.DECISION and not pod.HasField("decision"):
                pod.decision.CopyFrom(proven)
            elif kind == logleaf.RECEIPT:
                recipient = logleaf.parse(leaf).receipt.recipient
                evidence = pod.receipts.add(logged=proven)
                stored = material.receipts.get(recipient)
                if stored is not None:
                    evidence.receipt.ParseFromString(stored)
                statement = material.statements.get(recipient)
                if statement is not None:
                    evidence.key_statement.CopyFrom(
                        notice_pb2.SignedKeyStatement.FromString(statement)
                    )
            else:
                pod.events.append(proven)
        return pod

    # -- replay inputs ---------------------------------------------------------------
    async def get_decision_records(
        self, data: bytes, who: Reader
    ) -> audit_pb2.GetDecisionRecordsResponse:
        req = parse(audit_pb2.GetDecisionRecordsRequest, data)
        if len(req.notices) > MAX_REFS:
            raise InvalidArgument(f"at most {MAX_REFS} notices per GetDecisionRecords")
        refs = [(n.notice_id, n.version) for n in req.notices]
        rows = await self._store(lambda s: s.tlog_decision_records(refs, who.agency))
        return audit_pb2.GetDecisionRecordsResponse(
            records=[
                audit_pb2.DecisionRecord(
                    notice_id=r.notice_id,
                    version=r.version,
                    policy_version=r.policy_version,
                    record=r.record.encode("utf-8"),
                )
                for r in rows
            ]
        )

    async def get_policy_bundle(self, data: bytes, who: Reader) -> audit_pb2.AuditBundle:
        req = parse(audit_pb2.GetAuditBundleRequest, data)
        if not who.is_auditor:
            raise PermissionDenied(f"{who.uri} is not an auditor; policy bundles are for auditors")
        bundle = await self.app.runner.call(lambda s: s.get_bundle(req.version))
        return audit_pb2.AuditBundle(version=req.version, bundle=bundle)

    # -- console reads (wire forms in broker/server/console_reads.py) -------------------
    async def list_checkpoints(self, data: bytes, who: Reader) -> audit_pb2.ListCheckpointsResponse:
        req = parse(audit_pb2.ListCheckpointsRequest, data)
        if req.until_ms and req.until_ms < req.since_ms:
            raise InvalidArgument("ListCheckpointsRequest.until_ms is before since_ms")
        limit = min(req.limit or console_reads.MAX_ROWS, console_reads.MAX_ROWS)
        await self.app.checkpoints.issue()  # the latest covers the log as it is now
        rows, total = await self.app.runner.call(
            lambda s: s.checkpoints_between(req.since_ms, req.until_ms, limit)
        )
        return audit_pb2.ListCheckpointsResponse(
            checkpoints=[checkpoint_message(cp) for cp in rows], total=total
        )

    async def get_queues(self, data: bytes, who: Reader) -> audit_pb2.QueuesResponse:
        req = parse(audit_pb2.GetQueuesRequest, data)
        if not who.is_auditor:
            raise PermissionDenied(f"{who.uri} is not an auditor; the queues are for auditors")
        limit = min(req.limit or console_reads.MAX_ROWS, console_reads.MAX_ROWS)
        at = now_ms()
        snapshot = await self.app.runner.call(lambda s: s.queue_snapshot(at, limit))
        return console_reads.queues_message(snapshot, at)
