"""broker.core.attachment: the streaming root, the chunk layout and opening (tamper tests)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as sodium

from broker.core import attachment as att
from broker.core.merkle import leaf_hash, root_from_hashes
from broker.v1 import evidence_pb2, notice_pb2

CHUNK = 1024
HEADER = notice_pb2.NoticeHeader(
    notice_id="0b0f7c4e-1d2a-4c43-9e58-8a3c1d2e3f40", version=1, originator="FR-NCB"
)


def seal(
    data: bytes, header: notice_pb2.NoticeHeader = HEADER, section: str = "photos"
) -> tuple[evidence_pb2.AttachmentDescriptor, evidence_pb2.AttachmentKey, list[bytes]]:
    count = att.chunk_count_for(len(data), CHUNK)
    key = os.urandom(32)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    chunks = []
    roots = att.StreamingRoot()
    for i in range(count):
        tag = att.TAG_FINAL if i == count - 1 else att.TAG_MESSAGE
        c = sodium.crypto_secretstream_xchacha20poly1305_push(
            state, data[i * CHUNK : (i + 1) * CHUNK], att.chunk_ad(header, section, i, count), tag
        )
        chunks.append(c)
        roots.add(c)
    d = evidence_pb2.AttachmentDescriptor(
        section=section,
        size=len(data),
        chunk_size=CHUNK,
        chunk_count=count,
        ciphertext_size=len(data) + att.ABYTES * count,
        chunks_root=roots.root(),
    )
    k = evidence_pb2.AttachmentKey(
        notice_id=header.notice_id,
        version=header.version,
        section=section,
        key=key,
        stream_header=stream_header,
    )
    return d, k, chunks


def open_all(
    d: evidence_pb2.AttachmentDescriptor,
    k: evidence_pb2.AttachmentKey,
    chunks: list[bytes],
    header: notice_pb2.NoticeHeader = HEADER,
) -> bytes:
    opener = att.ChunkOpener(header, d, k)
    out = b"".join(opener.open(i, c) for i, c in enumerate(chunks))
    opener.finish()
    return out


@given(st.integers(min_value=1, max_value=70))
def test_streaming_root_is_the_rfc9162_root(n: int) -> None:
    leaves = [bytes([i % 256]) * (i + 1) for i in range(n)]
    roots = att.StreamingRoot()
    for leaf in leaves:
        roots.add(leaf)
    assert roots.root() == root_from_hashes([leaf_hash(x) for x in leaves])


def test_streaming_root_of_nothing_is_an_error() -> None:
    with pytest.raises(att.AttachmentError):
        att.StreamingRoot().root()


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=0, max_size=5 * CHUNK + 3))
def test_open_of_seal_is_identity(data: bytes) -> None:
    d, k, chunks = seal(data)
    att.check_descriptor(d, len(data))
    assert open_all(d, k, chunks) == data


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_any_flipped_bit_fails(data: st.DataObject) -> None:
    d, k, chunks = seal(os.urandom(3 * CHUNK + 10))
    i = data.draw(st.integers(0, len(chunks) - 1))
    bit = data.draw(st.integers(0, len(chunks[i]) * 8 - 1))
    bad = bytearray(chunks[i])
    bad[bit // 8] ^= 1 << (bit % 8)
    chunks[i] = bytes(bad)
    with pytest.raises(att.AttachmentError, match=att.OPEN_FAILED):
        open_all(d, k, chunks)


def test_truncated_reordered_and_extended_streams_fail() -> None:
    d, k, chunks = seal(os.urandom(4 * CHUNK))
    opener = att.ChunkOpener(HEADER, d, k)
    for i, c in enumerate(chunks[:-1]):
        opener.open(i, c)
    with pytest.raises(att.AttachmentError):
        opener.finish()  # the last chunk (tag FINAL) never came
    with pytest.raises(att.AttachmentError):
        open_all(d, k, [chunks[1], chunks[0], *chunks[2:]])
    opener = att.ChunkOpener(HEADER, d, k)
    with pytest.raises(att.AttachmentError):
        opener.open(1, chunks[1])  # out of order
    opener = att.ChunkOpener(HEADER, d, k)
    for i, c in enumerate(chunks):
        opener.open(i, c)
    with pytest.raises(att.AttachmentError):
        opener.finish(trailing=b"x")


def test_a_descriptor_counting_fewer_chunks_cannot_cut_the_stream() -> None:
    # a header claiming 3 chunks over a 4-chunk stream: chunk 2 carries tag MESSAGE, not FINAL,
    # and its AD names a count of 4
    d, k, chunks = seal(os.urandom(4 * CHUNK))
    short = evidence_pb2.AttachmentDescriptor()
    short.CopyFrom(d)
    short.size, short.chunk_count = 3 * CHUNK, 3
    with pytest.raises(att.AttachmentError):
        open_all(short, k, chunks[:3])


def test_chunks_are_bound_to_notice_version_and_section() -> None:
    d, k, chunks = seal(os.urandom(2 * CHUNK))
    other = notice_pb2.NoticeHeader()
    other.CopyFrom(HEADER)
    other.version = 2
    k2 = evidence_pb2.AttachmentKey()
    k2.CopyFrom(k)
    k2.version = 2
    with pytest.raises(att.AttachmentError):
        open_all(d, k2, chunks, other)  # the same bytes presented as another version
    d_other = evidence_pb2.AttachmentDescriptor()
    d_other.CopyFrom(d)
    d_other.section = "identity"
    k3 = evidence_pb2.AttachmentKey()
    k3.CopyFrom(k)
    k3.section = "identity"
    with pytest.raises(att.AttachmentError):
        open_all(d_other, k3, chunks)


def test_key_for_another_attachment_is_refused() -> None:
    d, k, _chunks = seal(b"abc")
    k.section = "identity"
    with pytest.raises(att.AttachmentError):
        att.ChunkOpener(HEADER, d, k)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chunk_size": 10}, "chunk_size must be"),
        ({"size": 10**9}, "takes at most"),
        ({"chunk_count": 9}, "chunk_count does not match"),
        ({"ciphertext_size": 1}, "ciphertext_size does not match"),
        ({"chunks_root": b"short"}, "chunks_root must be 32 bytes"),
        ({"section": "Not A Name"}, "must match"),
    ],
)
def test_check_descriptor_names_what_is_wrong(change: dict[str, object], message: str) -> None:
    d, _k, _c = seal(os.urandom(2 * CHUNK))
    for name, value in change.items():
        setattr(d, name, value)
    with pytest.raises(att.AttachmentError, match=message):
        att.check_descriptor(d, 10 * CHUNK)


def test_header_attachments_must_name_sealed_sections() -> None:
    d, _k, _c = seal(b"x")
    header = notice_pb2.NoticeHeader(attachments=[d])
    att.check_header_attachments(header, {"photos"}, 100)
    with pytest.raises(att.AttachmentError, match="not sealed"):
        att.check_header_attachments(header, {"identity"}, 100)
    header.attachments.append(d)
    with pytest.raises(att.AttachmentError, match="two attachments"):
        att.check_header_attachments(header, {"photos"}, 100)
