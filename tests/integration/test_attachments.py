"""Sealed attachments end to end: a real broker over mutual TLS, real nodes, real files."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import grpc
import pytest

from broker.client.attachments import Evidence, seal_file
from broker.core import attachment as att
from broker.v1 import evidence_pb2
from tests.adversarial.kit import SECTIONS, agencies, until
from tests.integration.conftest import Running

pytestmark = pytest.mark.integration
CHUNK = 64 * 1024


def metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_file(path: Path, size: int) -> bytes:
    """A file of `size` pseudo-random bytes; its SHA-256."""
    h = hashlib.sha256()
    with path.open("wb") as f:
        left, block = size, hashlib.sha256(b"seed").digest() * 2048
        while left:
            part = block[: min(left, len(block))]
            f.write(part)
            h.update(part)
            left -= len(part)
            block = hashlib.sha256(block[:32]).digest() * 2048
    return h.digest()


async def publish_file(
    broker: Running, node: object, source: Path, **kw: object
) -> tuple[str, Evidence]:
    ev = Evidence(node)
    published, _sealed = await ev.publish(
        source,
        section="photos",
        sections=SECTIONS,
        kind="interpol.red",
        purpose="locate_arrest",
        recipients=["DE-BKA"],
        chunk_size=CHUNK,
        **kw,
    )
    return published.notice_id, ev


async def test_round_trip_with_custody(broker: Running, tmp_path: Path) -> None:
    source = tmp_path / "image.dd"
    digest = make_file(source, 5 * CHUNK + 123)
    moved = {d: metric("broker_attachment_bytes_total", direction=d) for d in ("in", "out")}
    async with agencies(broker, "FR-NCB", "DE-BKA") as nodes:
        notice_id, _ = await publish_file(broker, nodes["FR-NCB"].node, source)
        de = nodes["DE-BKA"]
        await until(lambda: any(n.notice_id == notice_id for n in de.notices))
        notice = next(n for n in de.notices if n.notice_id == notice_id)
        ev = Evidence(de.node)
        got = await ev.fetch(notice, "photos", tmp_path / "out.dd")
        assert got.file_name == "image.dd"
        assert hashlib.sha256(got.path.read_bytes()).digest() == digest == got.plaintext_digest
        chain = await ev.chain(notice_id, 1, "photos")
        actions = [
            evidence_pb2.CustodyRecord.FromString(e.signed.record).action for e in chain.entries
        ]
        assert actions == [
            evidence_pb2.CUSTODY_SEALED,
            evidence_pb2.CUSTODY_RECEIVED,
            evidence_pb2.CUSTODY_OPENED,
        ]
    size = 5 * CHUNK + 123 + 6 * att.ABYTES
    assert metric("broker_attachment_bytes_total", direction="in") - moved["in"] == size
    assert metric("broker_attachment_bytes_total", direction="out") - moved["out"] == size
    # the broker holds ciphertext only, outside the envelope row
    files = list(broker.app.config.attachments_dir.rglob("*.ct"))
    assert len(files) == 1
    stored = files[0].read_bytes()
    assert len(stored) == 5 * CHUNK + 123 + 6 * att.ABYTES
    assert source.read_bytes()[:4096] not in stored


async def received(node_listener: object, notice_id: str) -> object:
    de = node_listener
    await until(lambda: any(n.notice_id == notice_id for n in de.notices))  # type: ignore[attr-defined]
    return next(n for n in de.notices if n.notice_id == notice_id)  # type: ignore[attr-defined]


async def test_upload_and_download_resume_after_interruption(
    broker: Running, tmp_path: Path
) -> None:
    source = tmp_path / "video.mp4"
    digest = make_file(source, 7 * CHUNK + 5)
    async with agencies(broker, "FR-NCB", "DE-BKA") as nodes:
        fr = Evidence(nodes["FR-NCB"].node)
        nid = str(uuid.uuid4())
        sealed = seal_file(
            source,
            tmp_path / "v.ct",
            notice_id=nid,
            version=1,
            originator="FR-NCB",
            section="photos",
            chunk_size=CHUNK,
        )
        published = await nodes["FR-NCB"].node.publish(
            notice_id=nid,
            kind="interpol.red",
            purpose="locate_arrest",
            recipients=["DE-BKA"],
            sections={**SECTIONS, "photos": sealed.key.SerializeToString()},
            attachments=[sealed.descriptor],
        )
        partial = await fr.upload(sealed, stop_after=3)  # the connection drops after 3 chunks
        assert (partial.chunks_stored, partial.complete) == (3, False)
        ref = evidence_pb2.AttachmentRef(notice_id=nid, version=1, section="photos")
        assert (await fr.status(ref)).chunks_stored == 3
        sent: list[int] = []
        done = await fr.upload(sealed, progress=lambda d, t: sent.append(d))
        assert done.complete and done.chunks_stored == 8
        assert sent[0] > 3 * CHUNK  # it resumed: the first three chunks were not sent again
        await fr.record(
            nid,
            1,
            "photos",
            evidence_pb2.CUSTODY_SEALED,
            sealed.descriptor.chunks_root,
            published.header_digest,
        )
        notice = await received(nodes["DE-BKA"], nid)
        de = Evidence(nodes["DE-BKA"].node)
        part = await de.download(notice, "photos", stop_after=2)  # type: ignore[arg-type]
        assert part.suffix == ".part" and part.stat().st_size == 2 * (CHUNK + att.ABYTES)
        got: list[int] = []
        path = await de.download(notice, "photos", progress=lambda d, t: got.append(d))  # type: ignore[arg-type]
        assert got[0] > 2 * CHUNK
        assert path.stat().st_size == sealed.descriptor.ciphertext_size
        out = await de.open(notice, "photos", tmp_path / "v.mp4")  # type: ignore[arg-type]
        assert hashlib.sha256(out.path.read_bytes()).digest() == digest


def stored_file(broker: Running, notice_id: str) -> Path:
    from broker.server.attachment_files import AttachmentFiles

    return AttachmentFiles(broker.app.config.attachments_dir).paths(notice_id, 1, "photos")[1]


def flip(data: bytearray, at: int) -> bytearray:
    data[at] ^= 1
    return data


def swap_chunks(data: bytearray) -> bytearray:
    size = CHUNK + att.ABYTES
    first, second = data[:size], data[size : 2 * size]
    data[:size], data[size : 2 * size] = second, first
    return data


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(lambda d: flip(d, 10), id="flipped-bit-first-chunk"),
        pytest.param(lambda d: flip(d, len(d) - 1), id="flipped-bit-last-tag"),
        pytest.param(swap_chunks, id="reordered-chunks"),
        pytest.param(lambda d: d[: len(d) - 100], id="truncated"),
        pytest.param(lambda d: d[: 2 * (CHUNK + att.ABYTES)], id="cut-at-chunk-boundary"),
    ],
)
async def test_recipient_refuses_ciphertext_the_broker_altered(
    broker: Running, tmp_path: Path, attack: object
) -> None:
    source = tmp_path / "doc.pdf"
    make_file(source, 4 * CHUNK + 77)
    async with agencies(broker, "FR-NCB", "DE-BKA") as nodes:
        notice_id, _ = await publish_file(broker, nodes["FR-NCB"].node, source)
        path = stored_file(broker, notice_id)
        path.write_bytes(bytes(attack(bytearray(path.read_bytes()))))  # type: ignore[operator]
        notice = await received(nodes["DE-BKA"], notice_id)
        ev = Evidence(nodes["DE-BKA"].node)
        with pytest.raises(att.AttachmentError):
            await ev.fetch(notice, "photos", tmp_path / "out.pdf")  # type: ignore[arg-type]
        assert not (tmp_path / "out.pdf").exists()
        chain = await ev.chain(notice_id, 1, "photos")
        assert len(chain.entries) == 1  # only the originator's "sealed": nothing received


async def test_broker_swapping_attachment_files_is_caught(broker: Running, tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    make_file(a, 3 * CHUNK)
    b.write_bytes(bytes(reversed(a.read_bytes())))  # same size, other content
    async with agencies(broker, "FR-NCB", "DE-BKA") as nodes:
        first, _ = await publish_file(broker, nodes["FR-NCB"].node, a)
        second, _ = await publish_file(broker, nodes["FR-NCB"].node, b)
        pa, pb = stored_file(broker, first), stored_file(broker, second)
        da, db = pa.read_bytes(), pb.read_bytes()
        pa.write_bytes(db)
        pb.write_bytes(da)
        ev = Evidence(nodes["DE-BKA"].node)
        for notice_id in (first, second):
            notice = await received(nodes["DE-BKA"], notice_id)
            with pytest.raises(att.AttachmentError):
                await ev.fetch(notice, "photos", tmp_path / f"{notice_id}.out")  # type: ignore[arg-type]


async def test_only_the_recipients_of_the_section_may_download(
    broker: Running, tmp_path: Path
) -> None:
    source = tmp_path / "x.bin"
    make_file(source, CHUNK)
    async with agencies(broker, "FR-NCB", "DE-BKA", "IT-BORDER") as nodes:
        notice_id, _ = await publish_file(broker, nodes["FR-NCB"].node, source)
        ref = evidence_pb2.AttachmentRef(notice_id=notice_id, version=1, section="photos")
        it = Evidence(nodes["IT-BORDER"].node)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in it.stub.DownloadAttachment(evidence_pb2.DownloadRequest(ref=ref)):
                pass
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await it.chain(notice_id, 1, "photos")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # a recipient cannot upload over the originator's attachment
        de = Evidence(nodes["DE-BKA"].node)

        async def one() -> object:
            yield evidence_pb2.UploadChunk(ref=ref, index=0, ciphertext=b"x" * (CHUNK + 17))

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await de.stub.UploadAttachment(one())
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_upload_not_matching_the_signed_descriptor_is_refused(
    broker: Running, tmp_path: Path
) -> None:
    source = tmp_path / "x.bin"
    make_file(source, 2 * CHUNK)
    async with agencies(broker, "FR-NCB") as nodes:
        node = nodes["FR-NCB"].node
        ev = Evidence(node)
        nid = str(uuid.uuid4())
        sealed = seal_file(
            source,
            tmp_path / "x.ct",
            notice_id=nid,
            version=1,
            originator="FR-NCB",
            section="photos",
            chunk_size=CHUNK,
        )
        await node.publish(
            notice_id=nid,
            kind="interpol.red",
            purpose="locate_arrest",
            recipients=["DE-BKA"],
            sections={**SECTIONS, "photos": sealed.key.SerializeToString()},
            attachments=[sealed.descriptor],
        )
        ref = evidence_pb2.AttachmentRef(notice_id=nid, version=1, section="photos")

        async def chunks(items: list[tuple[int, bytes]]) -> object:
            for i, data in items:
                yield evidence_pb2.UploadChunk(ref=ref, index=i, ciphertext=data)

        cases = [
            ([(0, b"x" * 10)], "signed descriptor says"),
            ([(1, b"x" * (CHUNK + 17))], "not the next one"),
            ([(0, b"x" * (CHUNK + 17)), (1, b"y" * (CHUNK + 17))], "do not match the signed"),
        ]
        for items, text in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ev.stub.UploadAttachment(chunks(items))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert text in (info.value.details() or "")
        status = await ev.status(ref)
        assert (status.chunks_stored, status.complete) == (0, False)  # nothing kept
        assert (await ev.upload(sealed)).complete


async def test_over_the_limit_is_refused(start_broker: object, tmp_path: Path) -> None:
    from dataclasses import replace

    from broker.config import AttachmentsConfig

    running: Running = await start_broker()  # type: ignore[operator]
    app = running.app
    app.config = replace(app.config, attachments=AttachmentsConfig(max_bytes=CHUNK))
    source = tmp_path / "big.bin"
    make_file(source, CHUNK + 1)
    async with agencies(running, "FR-NCB") as nodes:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await publish_file(running, nodes["FR-NCB"].node, source)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_bytes" in (info.value.details() or "")
        assert running.count("notices") == 0


async def test_a_withdrawn_notice_s_attachment_is_erased(broker: Running, tmp_path: Path) -> None:
    source = tmp_path / "x.bin"
    make_file(source, 2 * CHUNK)
    async with agencies(broker, "FR-NCB", "DE-BKA") as nodes:
        notice_id, fr = await publish_file(broker, nodes["FR-NCB"].node, source)
        kept, _ = await publish_file(broker, nodes["FR-NCB"].node, source)
        notice = await received(nodes["DE-BKA"], notice_id)
        await nodes["FR-NCB"].node.withdraw(notice_id, "sent in error")
        ev = Evidence(nodes["DE-BKA"].node)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ev.download(notice, "photos")  # type: ignore[arg-type]
        assert info.value.code() == grpc.StatusCode.NOT_FOUND  # its envelope was erased
        assert stored_file(broker, notice_id).exists()
        assert await broker.app.evidence.sweep() == 1
        assert not stored_file(broker, notice_id).exists()
        assert not stored_file(broker, notice_id).with_suffix(".ref").exists()
        assert stored_file(broker, kept).exists()  # the other notice's file stays
        assert await broker.app.evidence.sweep() == 0
        # the chain of custody stays auditable by the originator (and auditors)
        assert len((await fr.chain(notice_id, 1, "photos")).entries) == 1
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ev.chain(notice_id, 1, "photos")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_upload_resumes_after_the_broker_restarts(
    start_broker: object, tmp_path: Path
) -> None:
    source = tmp_path / "long.bin"
    digest = make_file(source, 6 * CHUNK + 1)
    first: Running = await start_broker()  # type: ignore[operator]
    async with agencies(first, "FR-NCB") as nodes:
        node = nodes["FR-NCB"].node
        nid = str(uuid.uuid4())
        sealed = seal_file(
            source, tmp_path / "long.ct", notice_id=nid, version=1, originator="FR-NCB",
            section="photos", chunk_size=CHUNK,
        )  # fmt: skip
        published = await node.publish(
            notice_id=nid, kind="interpol.red", purpose="locate_arrest", recipients=["DE-BKA"],
            sections={**SECTIONS, "photos": sealed.key.SerializeToString()},
            attachments=[sealed.descriptor],
        )  # fmt: skip
        assert (await Evidence(node).upload(sealed, stop_after=4)).chunks_stored == 4
    await first.app.stop(grace=0.5)
    # a torn write at the end of the part file, as a crash mid-chunk leaves it
    part = stored_file(first, nid).with_suffix(".part")
    with part.open("ab") as f:
        f.write(b"torn")
    second: Running = await start_broker(provisioned=False)  # type: ignore[operator]
    async with agencies(second, "FR-NCB", "DE-BKA") as nodes:
        ev = Evidence(nodes["FR-NCB"].node)
        ref = evidence_pb2.AttachmentRef(notice_id=nid, version=1, section="photos")
        assert (await ev.status(ref)).chunks_stored == 4
        assert (await ev.upload(sealed)).complete
        await ev.record(
            nid, 1, "photos", evidence_pb2.CUSTODY_SEALED, sealed.descriptor.chunks_root,
            published.header_digest,
        )  # fmt: skip
        notice = await received(nodes["DE-BKA"], nid)
        got = await Evidence(nodes["DE-BKA"].node).download(notice, "photos")  # type: ignore[arg-type]
        assert got.stat().st_size == sealed.descriptor.ciphertext_size
        out = await Evidence(nodes["DE-BKA"].node).open(notice, "photos", tmp_path / "o")  # type: ignore[arg-type]
        assert hashlib.sha256(out.path.read_bytes()).digest() == digest
