"""The AuditService client (asyncio, mutual TLS), as an auditor or an agency.

:class:`AuditClient` maps each RPC to a method; entries and decision records are
fetched in pages (PAGE, RECORDS_PAGE), gRPC errors become the project's error
family, and an answer that cannot be right (a page that does not advance) raises
:class:`AuditFailure`, the error of a failed audit. Part of :mod:`broker.client.audit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from broker import pki
from broker.core.activation import bundle_files
from broker.core.identity import Party
from broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from broker.v1 import admin_pb2, audit_pb2, audit_pb2_grpc

PAGE = 1000

RECORDS_PAGE = 256
_ERRORS: dict[grpc.StatusCode, type[BrokerError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


class AuditFailure(InvalidArgument):
    """What the broker served does not hold up: the audit failed (not a usage error)."""


class AuditClient:
    """AuditService over mutual TLS, as `party` (an auditor or an agency)."""

    def __init__(
        self, broker: str, keys_dir: Path, party: Party, *, timeout_s: float = 30.0
    ) -> None:
        files = pki.load_party(keys_dir, party)
        creds = grpc.ssl_channel_credentials(
            root_certificates=files.ca_cert.read_bytes(),
            private_key=files.key.read_bytes(),
            certificate_chain=files.cert.read_bytes(),
        )
        self.party = party
        self.broker = broker
        self.timeout_s = timeout_s
        self.channel = grpc.aio.secure_channel(
            broker, creds, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        self.stub = audit_pb2_grpc.AuditServiceStub(self.channel)

    async def __aenter__(self) -> AuditClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable(
                    f"broker at {self.broker} unavailable: {exc.details()}; is it running?"
                ) from None
            raise _ERRORS.get(code, InvalidArgument)(str(exc.details())) from None

    async def checkpoint(
        self, size: int = 0, min_cosignatures: int = 0
    ) -> audit_pb2.SignedCheckpoint:
        req = audit_pb2.GetCheckpointRequest(size=size, min_cosignatures=min_cosignatures)
        response: audit_pb2.SignedCheckpoint = await self._call(self.stub.GetCheckpoint, req)
        return response

    async def entries(self, start: int, end: int) -> list[audit_pb2.LogEntry]:
        """Every entry in [start, end) the caller may see."""
        out: list[audit_pb2.LogEntry] = []
        while start < end:
            req = audit_pb2.GetEntriesRequest(start=start, end=end, limit=PAGE)
            resp: audit_pb2.GetEntriesResponse = await self._call(self.stub.GetEntries, req)
            out.extend(resp.entries)
            if resp.next <= start:
                raise AuditFailure(f"the broker's entries page did not advance past {start}")
            start = resp.next
        return out

    async def inclusion(self, index: int, tree_size: int = 0) -> audit_pb2.InclusionProof:
        req = audit_pb2.GetInclusionProofRequest(index=index, tree_size=tree_size)
        response: audit_pb2.InclusionProof = await self._call(self.stub.GetInclusionProof, req)
        return response

    async def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        req = audit_pb2.GetConsistencyProofRequest(old_size=old_size, new_size=new_size)
        resp: audit_pb2.ConsistencyProof = await self._call(self.stub.GetConsistencyProof, req)
        return list(resp.hashes)

    async def pod(self, notice_id: str, version: int = 0) -> audit_pb2.ProofOfDelivery:
        req = audit_pb2.GetProofOfDeliveryRequest(notice_id=notice_id, version=version)
        response: audit_pb2.ProofOfDelivery = await self._call(self.stub.GetProofOfDelivery, req)
        return response

    async def decision_records(
        self, refs: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], bytes]:
        """Decision records by (notice id, version); those the broker does not serve are absent."""
        out: dict[tuple[str, int], bytes] = {}
        for i in range(0, len(refs), RECORDS_PAGE):
            page = refs[i : i + RECORDS_PAGE]
            try:
                records = await self._records(page)
            except NotFound:  # one missing: ask one by one, so the others are still checked
                records = []
                for ref in page:
                    try:
                        records += await self._records([ref])
                    except NotFound:
                        continue
            for r in records:
                out[(r.notice_id, r.version)] = bytes(r.record)
        return out

    async def _records(self, refs: Sequence[tuple[str, int]]) -> list[audit_pb2.DecisionRecord]:
        req = audit_pb2.GetDecisionRecordsRequest(
            notices=[audit_pb2.NoticeRef(notice_id=n, version=v) for n, v in refs]
        )
        resp: audit_pb2.GetDecisionRecordsResponse = await self._call(
            self.stub.GetDecisionRecords, req
        )
        return list(resp.records)

    async def bundle(self, version: str) -> dict[str, bytes] | None:
        """A policy bundle's files (unverified: replay checks the version); None if unknown."""
        try:
            resp: audit_pb2.AuditBundle = await self._call(
                self.stub.GetPolicyBundle, audit_pb2.GetAuditBundleRequest(version=version)
            )
        except NotFound:
            return None
        return bundle_files(admin_pb2.PolicyBundle.FromString(resp.bundle))

    async def add_cosignature(self, size: int, line: str) -> int:
        req = audit_pb2.AddCosignatureRequest(size=size, signature_line=line)
        resp: audit_pb2.AddCosignatureResponse = await self._call(self.stub.AddCosignature, req)
        return int(resp.cosignatures)
