"""Sealed attachments from an agency node: seal a file in chunks, publish the notice that
carries its key, upload and download it resumably, open it, and sign custody links.

Memory is constant in the file's size at every step: the file is read, sealed, written,
sent, received, checked and opened one chunk at a time (tests/client/test_attachments.py
bounds it with tracemalloc). The construction is in :mod:`broker.core.attachment`.

Originator::

    ev = Evidence(node)
    sent = await ev.publish(path, section="photos", kind=..., purpose=..., sections={...},
                            recipients=["DE-BKA"])   # seals, publishes, uploads, signs "sealed"

Recipient (with a ReceivedNotice from node.listen)::

    await ev.fetch(notice, "photos", out_path)       # download, check, sign "received";
                                                     # open, sign "opened"
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from nacl import bindings as sodium

from broker.client.types import PublishedNotice, ReceivedNotice, now_ms
from broker.core import attachment as att
from broker.core import custody
from broker.errors import FailedPrecondition, InvalidArgument, NotFound
from broker.v1 import evidence_pb2, evidence_pb2_grpc, notice_pb2

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
UPLOAD_ATTEMPTS = 5


def _noop(done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class SealedFile:
    """A file sealed for one attachment: what the header carries, what the section seals,
    and where the ciphertext waits to be uploaded."""

    descriptor: evidence_pb2.AttachmentDescriptor
    key: evidence_pb2.AttachmentKey
    ciphertext: Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal_file(
    source: Path,
    ciphertext: Path,
    *,
    notice_id: str,
    version: int,
    originator: str,
    section: str,
    chunk_size: int = att.DEFAULT_CHUNK_SIZE,
    media_type: str = "application/octet-stream",
    progress: Progress = _noop,
) -> SealedFile:
    """Seal ``source`` into ``ciphertext`` (written, fsynced) one chunk at a time.

    The key is drawn from os.urandom; libsodium draws the stream header. Raises
    InvalidArgument for an unusable chunk size or section name.
    """
    if not att.MIN_CHUNK_SIZE <= chunk_size <= att.MAX_CHUNK_SIZE:
        raise InvalidArgument(
            f"chunk_size must be from {att.MIN_CHUNK_SIZE} to {att.MAX_CHUNK_SIZE} bytes"
        )
    size = source.stat().st_size
    count = att.chunk_count_for(size, chunk_size)
    header = notice_pb2.NoticeHeader(notice_id=notice_id, version=version, originator=originator)
    key = os.urandom(att.KEY_BYTES)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    roots = att.StreamingRoot()
    plain_digest = hashlib.sha256()
    ciphertext.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, ciphertext.open("wb") as out:
        for i in range(count):
            chunk = src.read(chunk_size)
            plain_digest.update(chunk)
            tag = att.TAG_FINAL if i == count - 1 else att.TAG_MESSAGE
            sealed = sodium.crypto_secretstream_xchacha20poly1305_push(
                state, chunk, att.chunk_ad(header, section, i, count), tag
            )
            roots.add(sealed)
            out.write(sealed)
            progress(min((i + 1) * chunk_size, size), size)
        if src.read(1):
            raise FailedPrecondition(f"{source} grew while it was being sealed; seal it again")
        out.flush()
        os.fsync(out.fileno())
    descriptor = evidence_pb2.AttachmentDescriptor(
        section=section,
        size=size,
        chunk_size=chunk_size,
        chunk_count=count,
        ciphertext_size=size + att.ABYTES * count,
        chunks_root=roots.root(),
    )
    try:
        att.check_descriptor(descriptor, size)
    except att.AttachmentError as exc:
        raise InvalidArgument(str(exc)) from None
    secret = evidence_pb2.AttachmentKey(
        notice_id=notice_id,
        version=version,
        section=section,
        key=key,
        stream_header=stream_header,
        file_name=source.name,
        media_type=media_type,
        plaintext_digest=plain_digest.digest(),
    )
    return SealedFile(descriptor, secret, ciphertext)


@dataclass(frozen=True)
class FetchedAttachment:
    path: Path
    file_name: str
    media_type: str
    size: int
    plaintext_digest: bytes
    evidence_digest: bytes


class Evidence:
    """Attachments and custody for one AgencyNode (its channel, identity and keys)."""

    def __init__(self, node: Any, *, work_dir: Path | None = None) -> None:
        self.node = node
        self.stub = evidence_pb2_grpc.EvidenceServiceStub(node.channel)
        self.work_dir = work_dir or Path(node.config.state_dir) / node.me / "attachments"
        self.timeout = float(node.config.rpc_timeout_s)

    def _ciphertext_path(self, notice_id: str, version: int, section: str) -> Path:
        name = hashlib.sha256(f"{notice_id}\x00{version}\x00{section}".encode()).hexdigest()
        return self.work_dir / f"{name}.ct"

    # -- originator ------------------------------------------------------------------
    async def publish(
        self,
        source: Path,
        *,
        section: str,
        sections: Mapping[str, bytes | str] | None = None,
        chunk_size: int = att.DEFAULT_CHUNK_SIZE,
        media_type: str = "application/octet-stream",
        progress: Progress = _noop,
        **publish: Any,
    ) -> tuple[PublishedNotice, SealedFile]:
        """Seal ``source`` as the attachment in ``section``, publish the notice (the other
        ``sections`` and ``publish`` arguments as for AgencyNode.publish), upload it and
        sign the first custody link. Returns (the published notice, the sealed file)."""
        notice_id = publish.pop("notice_id", None) or str(uuid.uuid4())
        version = int(publish.get("version", 1))
        others = dict(sections or {})
        if section in others:
            raise InvalidArgument(f"section {section} holds the attachment; give it no content")
        sealed = await asyncio.to_thread(
            seal_file,
            source,
            self._ciphertext_path(notice_id, version, section),
            notice_id=notice_id,
            version=version,
            originator=self.node.me,
            section=section,
            chunk_size=chunk_size,
            media_type=media_type,
            progress=progress,
        )
        others[section] = sealed.key.SerializeToString(deterministic=True)
        published = await self.node.publish(
            notice_id=notice_id, sections=others, attachments=[sealed.descriptor], **publish
        )
        await self.upload(sealed, progress=progress)
        await self.record(
            published.notice_id,
            published.version,
            section,
            evidence_pb2.CUSTODY_SEALED,
            sealed.descriptor.chunks_root,
            published.header_digest,
        )
        return published, sealed

    def _ref(self, sealed: SealedFile) -> evidence_pb2.AttachmentRef:
        return evidence_pb2.AttachmentRef(
            notice_id=sealed.key.notice_id, version=sealed.key.version, section=sealed.key.section
        )

    async def status(self, ref: evidence_pb2.AttachmentRef) -> evidence_pb2.AttachmentStatus:
        result: evidence_pb2.AttachmentStatus = await self.stub.GetAttachmentStatus(
            ref, timeout=self.timeout
        )
        return result

    async def upload(
        self, sealed: SealedFile, *, progress: Progress = _noop, stop_after: int | None = None
    ) -> evidence_pb2.AttachmentStatus:
        """Upload the sealed file, resuming after the chunks the broker holds, retrying a
        broken connection. ``stop_after`` (tests) ends the stream after that many chunks."""
        ref = self._ref(sealed)
        layout = att.layout_of(sealed.descriptor)
        total = sealed.descriptor.ciphertext_size
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            status = await self.status(ref)
            if status.complete:
                progress(total, total)
                return status
            start = int(status.chunks_stored)

            async def chunks(start: int = start) -> AsyncIterator[evidence_pb2.UploadChunk]:
                with sealed.ciphertext.open("rb") as f:
                    f.seek(layout.offset(start))
                    for i in range(start, layout.chunk_count):
                        if stop_after is not None and i - start >= stop_after:
                            return
                        data = await asyncio.to_thread(f.read, layout.ciphertext_len(i))
                        yield evidence_pb2.UploadChunk(ref=ref, index=i, ciphertext=data)
                        progress(layout.offset(i) + len(data), total)

            try:
                result: evidence_pb2.AttachmentStatus = await self.stub.UploadAttachment(
                    chunks(), timeout=max(self.timeout, 3600.0)
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == UPLOAD_ATTEMPTS:
                    raise
                await asyncio.sleep(0.2 * attempt)
                continue
            if result.complete or stop_after is not None:
                return result
        raise FailedPrecondition("the upload did not complete; run it again to resume")

    # -- recipient -------------------------------------------------------------------
    async def download(
        self,
        notice: ReceivedNotice,
        section: str,
        *,
        progress: Progress = _noop,
        stop_after: int | None = None,
    ) -> Path:
        """Download the attachment's ciphertext (resuming a partial download), check it
        against the signed header's chunks_root and sign a "received" custody link.
        Returns the local ciphertext path; raises att.AttachmentError when the broker
        served anything but the signed ciphertext (the file is dropped)."""
        header = notice.header
        descriptor = _descriptor(header, section)
        layout = att.layout_of(descriptor)
        done = self._ciphertext_path(header.notice_id, header.version, section)
        if done.exists():
            return done
        part = done.with_suffix(".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        start = min(have // (layout.chunk_size + att.ABYTES), layout.chunk_count - 1)
        total = descriptor.ciphertext_size
        ref = evidence_pb2.AttachmentRef(
            notice_id=header.notice_id, version=header.version, section=section
        )
        roots = att.StreamingRoot()
        with part.open("ab+") as out:
            out.truncate(layout.offset(start))
            out.seek(0)
            for i in range(start):  # the chunks a broken download left, hashed again
                roots.add(out.read(layout.ciphertext_len(i)))
            out.seek(0, os.SEEK_END)
            call = self.stub.DownloadAttachment(
                evidence_pb2.DownloadRequest(ref=ref, from_chunk=start),
                timeout=max(self.timeout, 3600.0),
            )
            expected = start
            try:
                async for chunk in call:
                    if chunk.index != expected or len(chunk.ciphertext) != layout.ciphertext_len(
                        expected
                    ):
                        raise att.AttachmentError(att.OPEN_FAILED)
                    await asyncio.to_thread(out.write, chunk.ciphertext)
                    roots.add(chunk.ciphertext)
                    expected += 1
                    progress(layout.offset(expected - 1) + len(chunk.ciphertext), total)
                    if stop_after is not None and expected - start >= stop_after:
                        call.cancel()
                        break
            finally:
                out.flush()
                os.fsync(out.fileno())
        if expected < layout.chunk_count:
            if stop_after is not None:
                return part
            raise att.AttachmentError(att.OPEN_FAILED)
        if roots.root() != descriptor.chunks_root:
            part.unlink(missing_ok=True)
            raise att.AttachmentError(att.OPEN_FAILED)
        os.replace(part, done)
        _fsync_dir(done.parent)
        await self.record(
            header.notice_id,
            header.version,
            section,
            evidence_pb2.CUSTODY_RECEIVED,
            descriptor.chunks_root,
            notice.header_digest,
        )
        return done

    async def open(
        self, notice: ReceivedNotice, section: str, out: Path, *, progress: Progress = _noop
    ) -> FetchedAttachment:
        """Decrypt a downloaded attachment into ``out`` (written to out.part, fsynced, then
        renamed: ``out`` appears only once every chunk opened and the whole verified), and
        sign an "opened" custody link. Raises att.AttachmentError otherwise."""
        header = notice.header
        descriptor = _descriptor(header, section)
        key = att.parse_key(notice.sections.get(section, b""))
        source = self._ciphertext_path(header.notice_id, header.version, section)
        await asyncio.to_thread(_open_file, header, descriptor, key, source, out, progress)
        await self.record(
            header.notice_id,
            header.version,
            section,
            evidence_pb2.CUSTODY_OPENED,
            descriptor.chunks_root,
            notice.header_digest,
        )
        return FetchedAttachment(
            out,
            key.file_name,
            key.media_type,
            descriptor.size,
            key.plaintext_digest,
            descriptor.chunks_root,
        )

    async def fetch(
        self, notice: ReceivedNotice, section: str, out: Path, *, progress: Progress = _noop
    ) -> FetchedAttachment:
        """download, then open."""
        await self.download(notice, section, progress=progress)
        return await self.open(notice, section, out, progress=progress)

    # -- custody ---------------------------------------------------------------------
    async def chain(self, notice_id: str, version: int, section: str) -> evidence_pb2.CustodyChain:
        ref = evidence_pb2.AttachmentRef(notice_id=notice_id, version=version, section=section)
        result: evidence_pb2.CustodyChain = await self.stub.GetCustody(ref, timeout=self.timeout)
        return result

    async def record(
        self,
        notice_id: str,
        version: int,
        section: str,
        action: int,
        evidence_digest: bytes,
        header_digest: bytes,
        note: str = "",
    ) -> evidence_pb2.AppendCustodyResponse:
        """Sign the next custody link after the chain's head and append it (once more if
        another party appended first)."""
        for attempt in (1, 2, 3):
            chain = await self.chain(notice_id, version, section)
            if chain.entries:
                previous = custody.record_digest(chain.entries[-1].signed.record)
            else:
                previous = custody.genesis(notice_id, version, section, evidence_digest)
            record = evidence_pb2.CustodyRecord(
                notice_id=notice_id,
                version=version,
                section=section,
                evidence_digest=evidence_digest,
                header_digest=header_digest,
                seq=len(chain.entries),
                previous_digest=previous,
                agency=self.node.me,
                action=action,  # type: ignore[arg-type]
                at_ms=now_ms(),
                note=note,
            )
            signed = custody.sign_record(record, self.node.credentials.signing_seed)
            try:
                result: evidence_pb2.AppendCustodyResponse = await self.stub.AppendCustody(
                    signed, timeout=self.timeout
                )
                return result
            except grpc.aio.AioRpcError as exc:
                # another holder appended first (FAILED_PRECONDITION; UNAVAILABLE when two
                # replicas raced on PostgreSQL): sign the next link after the new head
                retry = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
                if exc.code() not in retry or attempt == 3:
                    raise
        raise AssertionError("unreachable")

    async def forwarded(self, notice: ReceivedNotice, section: str, to: str) -> None:
        """Sign a "forwarded" custody link naming where the evidence went."""
        d = _descriptor(notice.header, section)
        await self.record(
            notice.notice_id,
            notice.version,
            section,
            evidence_pb2.CUSTODY_FORWARDED,
            d.chunks_root,
            notice.header_digest,
            note=f"to {to}",
        )


def _descriptor(header: notice_pb2.NoticeHeader, section: str) -> evidence_pb2.AttachmentDescriptor:
    try:
        return att.descriptor_for(header, section)
    except att.AttachmentError as exc:
        raise InvalidArgument(str(exc)) from None


def _open_file(
    header: notice_pb2.NoticeHeader,
    descriptor: evidence_pb2.AttachmentDescriptor,
    key: evidence_pb2.AttachmentKey,
    source: Path,
    out: Path,
    progress: Progress,
) -> None:
    opener = att.ChunkOpener(header, descriptor, key)
    layout = opener.layout
    part = out.with_name(out.name + ".part")
    try:
        with source.open("rb") as src, part.open("wb") as dst:
            for i in range(layout.chunk_count):
                dst.write(opener.open(i, src.read(layout.ciphertext_len(i))))
                progress(min((i + 1) * layout.chunk_size, layout.size), layout.size)
            opener.finish(trailing=src.read(1))
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    os.replace(part, out)
    _fsync_dir(out.parent)


def from_inbox(node: Any, notice_id: str, version: int = 0) -> ReceivedNotice:
    """A notice this node took in (its newest version, or ``version``), opened again from
    the sealed delivery its inbox keeps. Raises NotFound if the inbox does not hold it."""
    sql = "SELECT delivery FROM inbox WHERE notice_id=?"
    params: tuple[Any, ...] = (notice_id,)
    if version:
        sql, params = sql + " AND version=?", (notice_id, version)
    row = node.inbox.conn.execute(sql + " ORDER BY version DESC LIMIT 1", params).fetchone()
    if row is None or not row[0]:
        raise NotFound(
            f"this node holds no notice {notice_id}: receive it first (broker node listen)"
        )
    delivery = notice_pb2.Delivery.FromString(bytes(row[0]))
    notice: ReceivedNotice = node.open(delivery)
    return notice
