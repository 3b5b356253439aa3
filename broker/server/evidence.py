"""EvidenceService: sealed attachments (upload, status, download) and chains of custody.

The broker never sees an attachment's key: it checks uploaded ciphertext against the
signed header's descriptor (chunk lengths, then the Merkle root of the whole) and serves
it to the parties the stored notice names: its originator, and each recipient whose
delivery holds the attachment's section (not withheld, not purged, not before its
embargo). Custody links are checked (signature by the caller's registered key, the
attachment's digests, the next seq after the stored head) and stored with a log leaf in
one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import Counter

from broker.core import attachment as att
from broker.core import custody
from broker.core.bounds import quote
from broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from broker.server import metrics
from broker.server.attachment_files import AttachmentFiles, read_chunk
from broker.server.peer import caller, require_agency, require_registered
from broker.server.status import abort, status_of, unary_handler
from broker.server.wire import now_ms, parse
from broker.store.api import DELIVERED, IN_FLIGHT, Store
from broker.store.custody import CustodyRow
from broker.v1 import evidence_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

SERVICE_NAME = "broker.v1.EvidenceService"
SWEEP_INTERVAL_S = 60.0  # how often files of closed or erased notices are looked for
READABLE = (IN_FLIGHT, DELIVERED)  # delivery states whose recipient may fetch attachments
log = logging.getLogger("broker.server")
# Metrics of attachments and custody (beside broker/server/metrics.py's).
ATTACHMENT_BYTES = Counter(
    "broker_attachment_bytes_total", "Attachment ciphertext bytes moved", ["direction"]
)
ATTACHMENTS_COMPLETED = Counter(
    "broker_attachments_completed_total", "Attachments uploaded in full and checked"
)
CUSTODY_LINKS = Counter("broker_custody_links_total", "Custody links accepted", ["action"])
SWEPT = Counter("broker_attachments_swept_total", "Attachments deleted with their notice")


def check_publish(header: notice_pb2.NoticeHeader, sections: set[str], max_bytes: int) -> None:
    """The publish path's check of the header's attachment descriptors."""
    for d in header.attachments:
        if d.size > max_bytes:
            raise ResourceExhausted(
                f"attachment {quote(d.section)} is {d.size} bytes; "
                f"this broker takes at most {max_bytes} ([attachments] max_bytes)"
            )
    try:
        att.check_header_attachments(header, sections, max_bytes)
    except att.AttachmentError as exc:
        raise InvalidArgument(str(exc)) from None


@dataclass(frozen=True)
class Target:
    """An attachment a call is about, as the stored notice describes it."""

    header: notice_pb2.NoticeHeader
    header_digest: bytes
    descriptor: evidence_pb2.AttachmentDescriptor
    layout: att.Layout
    readers: frozenset[str]  # the originator and the recipients who may fetch it


def _check_ref(ref: evidence_pb2.AttachmentRef) -> None:
    if not ref.notice_id:
        raise InvalidArgument("ref.notice_id is required (the notice's UUID)")
    if ref.version < 1:
        raise InvalidArgument("ref.version must be 1 or more")
    if not ref.section:
        raise InvalidArgument("ref.section is required (the attachment's section)")


class EvidenceService:
    def __init__(self, app: BrokerApp) -> None:
        self.app = app
        self.files = AttachmentFiles(app.config.attachments_dir)
        self.sweep_interval_s = SWEEP_INTERVAL_S

    # -- erasure ---------------------------------------------------------------------
    async def sweep(self) -> int:
        """Delete the files of attachments whose notice version is erased (withdrawn,
        superseded and purged, expired) or closed; the number deleted. Custody rows stay:
        they hold digests, not content, and the log refers to them."""
        refs = await asyncio.to_thread(lambda: list(self.files.refs()))
        if not refs:
            return 0

        def gone(store: Store) -> list[tuple[str, int, str]]:
            out = []
            for nid, version, section in refs:
                state = store.notice_state(nid)
                if not store.envelope_at(nid, version) or (state is not None and state.closed):
                    out.append((nid, version, section))
            return out

        removed = 0
        for nid, version, section in await self.app.runner.call(gone):
            if await asyncio.to_thread(self.files.remove, nid, version, section):
                removed += 1
        SWEPT.inc(removed)
        return removed

    async def sweep_loop(self) -> None:
        """Sweep every sweep_interval_s until cancelled (BrokerApp.stop)."""
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("attachment sweep failed; retrying at the next interval")

    def handler(self) -> grpc.GenericRpcHandler:
        def streaming(label: str, fn: Any) -> Any:
            async def run(request: Any, context: Any) -> AsyncIterator[bytes]:
                try:
                    async for out in fn(request, context):
                        yield out
                except BrokerError as exc:
                    metrics.RPCS.labels(label, status_of(exc).name).inc()
                    await abort(context, exc)
                except (asyncio.CancelledError, GeneratorExit):
                    raise
                except Exception as exc:
                    metrics.RPCS.labels(label, "INTERNAL").inc()
                    await abort(context, exc)
                metrics.RPCS.labels(label, "OK").inc()

            return run

        async def upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
            try:
                response = await self.upload(requests, context)
            except BrokerError as exc:
                metrics.RPCS.labels("UploadAttachment", status_of(exc).name).inc()
                await abort(context, exc)
            except Exception as exc:
                metrics.RPCS.labels("UploadAttachment", "INTERNAL").inc()
                await abort(context, exc)
            metrics.RPCS.labels("UploadAttachment", "OK").inc()
            return response.SerializeToString()

        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "UploadAttachment": grpc.stream_unary_rpc_method_handler(upload),
                "GetAttachmentStatus": unary_handler("GetAttachmentStatus", self.status),
                "DownloadAttachment": grpc.unary_stream_rpc_method_handler(
                    streaming("DownloadAttachment", self.download)
                ),
                "AppendCustody": unary_handler("AppendCustody", self.append_custody),
                "GetCustody": unary_handler("GetCustody", self.get_custody),
            },
        )

    def _agency(self, context: Any) -> str:
        agency = require_agency(caller(context, self.app.revoked))
        return require_registered(agency, self.app.registry)

    async def _target(
        self, ref: evidence_pb2.AttachmentRef, *, custody_read: bool = False
    ) -> Target:
        """The attachment ``ref`` names; NotFound if none, FailedPrecondition once its notice
        is closed (withdrawn, cancelled, expired), except to read its chain of custody."""
        _check_ref(ref)
        nid, version, section = ref.notice_id, ref.version, ref.section

        def read(store: Store) -> tuple[bytes, list[tuple[str, str, str, int]], str]:
            state = store.notice_state(nid)
            closed = state.closed if state is not None else ""
            return store.envelope_at(nid, version), store.deliveries_of(nid, version), closed

        envelope_bytes, deliveries, closed = await self.app.runner.call(read)
        if not envelope_bytes:
            raise NotFound(f"no notice {quote(nid)} v{version} is stored (or it was erased)")
        if closed and not custody_read:
            raise FailedPrecondition(
                f"notice {nid} is {closed}: its attachments are no longer served"
            )
        envelope = notice_pb2.Envelope.FromString(envelope_bytes)
        header = notice_pb2.NoticeHeader.FromString(envelope.header.header_bytes)
        try:
            descriptor = att.descriptor_for(header, section)
        except att.AttachmentError as exc:
            raise NotFound(str(exc)) from None
        now = now_ms()
        readers = {header.originator}
        for recipient, sections, state, not_before in deliveries:
            if section in json.loads(sections) and state in READABLE and not_before <= now:
                readers.add(recipient)
        return Target(
            header,
            hashlib.sha256(envelope.header.header_bytes).digest(),
            descriptor,
            att.layout_of(descriptor),
            frozenset(readers),
        )

    def _status(self, t: Target) -> evidence_pb2.AttachmentStatus:
        h = t.header
        stored = self.files.stored_chunks(h.notice_id, h.version, t.descriptor.section, t.layout)
        complete = self.files.complete(h.notice_id, h.version, t.descriptor.section) is not None
        return evidence_pb2.AttachmentStatus(
            chunks_stored=stored, chunk_count=t.layout.chunk_count, complete=complete
        )

    # -- UploadAttachment ------------------------------------------------------------
    async def upload(
        self, requests: AsyncIterator[bytes], context: Any
    ) -> evidence_pb2.AttachmentStatus:
        me = self._agency(context)
        target: Target | None = None
        upload = None
        try:
            async for data in requests:
                chunk = parse(evidence_pb2.UploadChunk, data)
                if target is None:
                    target = await self._target(chunk.ref)
                    if me != target.header.originator:
                        raise PermissionDenied(
                            f"you are {me}; only the originator "
                            f"{target.header.originator} uploads its attachments"
                        )
                    h, section = target.header, target.descriptor.section
                    if self.files.complete(h.notice_id, h.version, section):
                        return self._status(target)
                    upload = await asyncio.to_thread(
                        self.files.open_upload, h.notice_id, h.version, section, target.layout
                    )
                    if upload is None:
                        return self._status(target)
                elif chunk.ref != evidence_pb2.AttachmentRef(
                    notice_id=target.header.notice_id,
                    version=target.header.version,
                    section=target.descriptor.section,
                ):
                    raise InvalidArgument("every chunk of an upload must name the same attachment")
                if upload is None:  # unreachable: set with target
                    raise FailedPrecondition("the upload did not start; retry")
                await asyncio.to_thread(upload.write, int(chunk.index), chunk.ciphertext)
                ATTACHMENT_BYTES.labels("in").inc(len(chunk.ciphertext))
                if upload.stored == target.layout.chunk_count:
                    await asyncio.to_thread(upload.finish, target.descriptor.chunks_root)
                    ATTACHMENTS_COMPLETED.inc()
                    break
            if target is None:
                raise InvalidArgument("an upload must carry at least one chunk")
            return self._status(target)
        finally:
            if upload is not None:
                upload.close()

    # -- GetAttachmentStatus ---------------------------------------------------------
    async def status(self, data: bytes, context: Any) -> evidence_pb2.AttachmentStatus:
        me = self._agency(context)
        target = await self._target(parse(evidence_pb2.AttachmentRef, data))
        if me not in target.readers:
            raise PermissionDenied(f"{me} may not see this attachment")
        return self._status(target)

    # -- DownloadAttachment ----------------------------------------------------------
    async def download(self, data: bytes, context: Any) -> AsyncIterator[bytes]:
        me = self._agency(context)
        req = parse(evidence_pb2.DownloadRequest, data)
        t = await self._target(req.ref)
        if me not in t.readers:
            raise PermissionDenied(
                f"{me} may not download this attachment: its section "
                f"{t.descriptor.section} was not delivered to you"
            )
        path = self.files.complete(t.header.notice_id, t.header.version, t.descriptor.section)
        if path is None:
            raise FailedPrecondition("the attachment is not fully uploaded yet; try again later")
        if req.from_chunk >= t.layout.chunk_count:
            raise InvalidArgument(
                f"from_chunk must be below the chunk count {t.layout.chunk_count}"
            )
        with path.open("rb") as handle:
            for i in range(int(req.from_chunk), t.layout.chunk_count):
                chunk = await asyncio.to_thread(read_chunk, handle, t.layout, i)
                ATTACHMENT_BYTES.labels("out").inc(len(chunk))
                yield evidence_pb2.DownloadChunk(index=i, ciphertext=chunk).SerializeToString()

    # -- custody -----------------------------------------------------------------------
    async def append_custody(self, data: bytes, context: Any) -> evidence_pb2.AppendCustodyResponse:
        me = self._agency(context)
        signed = parse(evidence_pb2.SignedCustody, data)
        try:
            record = custody.parse_record(signed)
        except custody.CustodyError as exc:
            raise InvalidArgument(str(exc)) from None
        if record.agency != me:
            raise PermissionDenied(f"you are {me}; a custody record by {quote(record.agency)}")
        ref = evidence_pb2.AttachmentRef(
            notice_id=record.notice_id, version=record.version, section=record.section
        )
        t = await self._target(ref)
        if me not in t.readers:
            raise PermissionDenied(f"{me} does not hold this attachment")
        if self.files.complete(record.notice_id, record.version, record.section) is None:
            raise FailedPrecondition("the attachment is not fully uploaded yet")
        expected = custody.Expected(
            record.notice_id,
            record.version,
            record.section,
            t.descriptor.chunks_root,
            t.header_digest,
        )
        agency = self.app.registry.get(me)
        key = agency.signing_key if agency is not None else b""
        originator = t.header.originator
        now = now_ms()

        def run(store: Store) -> tuple[int, int]:
            chain = store.custody_chain(record.notice_id, record.version, record.section)
            seq = len(chain)
            previous = (
                chain[-1].record_digest
                if chain
                else custody.genesis(
                    record.notice_id, record.version, record.section, t.descriptor.chunks_root
                )
            )
            try:
                r = custody.check_link(signed, expected, seq, previous, lambda _a: key)
            except custody.CustodyError as exc:
                if record.seq != seq or record.previous_digest != previous:
                    raise FailedPrecondition(
                        f"{exc}; the chain holds {seq} link(s): fetch it (GetCustody) and "
                        "sign the next"
                    ) from None
                raise InvalidArgument(str(exc)) from None
            if seq == 0 and (r.action != evidence_pb2.CUSTODY_SEALED or me != originator):
                raise FailedPrecondition("the first custody link is the originator sealing it")
            if seq > 0 and r.action == evidence_pb2.CUSTODY_SEALED:
                raise InvalidArgument("only the first custody link may be 'sealed'")
            digest = custody.record_digest(signed.record)
            leaf = custody.custody_leaf(r, originator, signed.record, now)
            index = store.append_custody(
                r.notice_id,
                r.version,
                r.section,
                seq,
                signed.record,
                signed.signature,
                digest,
                leaf,
            )
            return seq, index

        seq, index = await self.app.runner.call(run)
        CUSTODY_LINKS.labels(custody.ACTIONS.get(record.action, "unknown")).inc()
        return evidence_pb2.AppendCustodyResponse(seq=seq, log_index=index)

    async def get_custody(self, data: bytes, context: Any) -> evidence_pb2.CustodyChain:
        party = caller(context, self.app.revoked)
        ref = parse(evidence_pb2.AttachmentRef, data)
        _check_ref(ref)
        try:
            readers = (await self._target(ref, custody_read=True)).readers
        except NotFound:
            # Erased (withdrawn, purged): the chain stays auditable by auditors and the
            # originator; nobody else learns whether it existed.
            owner = await self.app.runner.call(lambda s: s.notice_owner(ref.notice_id))
            readers = frozenset({owner} if owner else ())
            if not readers:
                raise
        if party.kind != "auditor":
            me = require_registered(require_agency(party), self.app.registry)
            if me not in readers:
                raise PermissionDenied(f"{me} may not see this attachment's custody")

        def read(store: Store) -> list[CustodyRow]:
            return store.custody_chain(ref.notice_id, ref.version, ref.section)

        rows = await self.app.runner.call(read)
        return evidence_pb2.CustodyChain(
            entries=[
                evidence_pb2.CustodyEntry(
                    signed=evidence_pb2.SignedCustody(record=r.record, signature=r.signature),
                    log_index=r.log_index,
                )
                for r in rows
            ]
        )
