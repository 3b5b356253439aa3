"""Sealed attachments (pure): descriptors, chunk layout, the chunk AD, the streaming root,
and opening a secretstream chunk by chunk.

Construction (libsodium crypto_secretstream_xchacha20poly1305; the sealing side, which
draws the key and libsodium's stream header, lives in broker/client/attachments.py):

- the file is cut into chunks of ``chunk_size`` plaintext bytes (the last may be
  shorter; an empty file is one empty chunk); chunk i is pushed with tag MESSAGE, the
  last with tag FINAL, so a stream cut short or extended never opens;
- each chunk's additional data is :func:`chunk_ad`: SHA-256 over a context, the notice
  id, version, originator, section, the chunk's index and the chunk count, so a chunk
  moved to another attachment, notice or position fails its tag;
- the header commits to the ciphertext: ``chunks_root`` is the RFC 9162 Merkle root over
  the ciphertext chunks (leaf i = chunk i), computed in one pass with O(log n) memory
  (:class:`StreamingRoot`); the originator signs the header, so every chunk and the whole
  are bound to the signed header;
- the key and stream header are the sealed content of the attachment's section (an
  AttachmentKey), wrapped for exactly the recipients the policy allowed that section.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from broker.core import envelope_suite as es
from broker.core.merkle import node_hash
from broker.v1 import evidence_pb2, notice_pb2

ABYTES: int = sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
KEY_BYTES: int = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32
HEADER_BYTES: int = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
TAG_MESSAGE: int = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL: int = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024  # a chunk and its framing stay far under the 8 MiB message
MAX_ATTACHMENTS = 8  # per notice version
CHUNK_AD_CONTEXT = b"broker.v1 attachment chunk\x00"
LEAF_PREFIX = b"\x00"  # RFC 9162 2.1.1, as merkle.leaf_hash


class AttachmentError(ValueError):
    """A descriptor, chunk or stream that does not verify (the same text for every cause
    once opening has begun: no oracle)."""


OPEN_FAILED = "attachment does not verify against its signed header"


@dataclass(frozen=True)
class Layout:
    """Where the chunks of a ciphertext lie."""

    size: int
    chunk_size: int
    chunk_count: int

    @property
    def ciphertext_size(self) -> int:
        return self.size + ABYTES * self.chunk_count

    def plaintext_len(self, index: int) -> int:
        """Plaintext bytes of chunk ``index``."""
        if not 0 <= index < self.chunk_count:
            raise AttachmentError(f"chunk {index} is outside 0..{self.chunk_count - 1}")
        if index < self.chunk_count - 1:
            return self.chunk_size
        return self.size - self.chunk_size * (self.chunk_count - 1)

    def ciphertext_len(self, index: int) -> int:
        return self.plaintext_len(index) + ABYTES

    def offset(self, index: int) -> int:
        """Byte offset of chunk ``index`` in the ciphertext file."""
        return index * (self.chunk_size + ABYTES)


def chunk_count_for(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def layout_of(d: evidence_pb2.AttachmentDescriptor) -> Layout:
    return Layout(d.size, d.chunk_size, d.chunk_count)


def check_descriptor(d: evidence_pb2.AttachmentDescriptor, max_bytes: int) -> Layout:
    """Return the layout of a descriptor whose numbers agree and fit ``max_bytes``.

    Raises AttachmentError naming what to fix.
    """
    if not es.SECTION_NAME.fullmatch(d.section):
        raise AttachmentError("attachment section must match [a-z0-9_]{1,32}")
    if not MIN_CHUNK_SIZE <= d.chunk_size <= MAX_CHUNK_SIZE:
        raise AttachmentError(
            f"attachment chunk_size must be from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes"
        )
    if d.size > max_bytes:
        raise AttachmentError(
            f"attachment {d.section} is {d.size} bytes; this broker takes at most {max_bytes}"
        )
    if d.chunk_count != chunk_count_for(d.size, d.chunk_size):
        raise AttachmentError(f"attachment {d.section}: chunk_count does not match size")
    layout = layout_of(d)
    if d.ciphertext_size != layout.ciphertext_size:
        raise AttachmentError(f"attachment {d.section}: ciphertext_size does not match size")
    if len(d.chunks_root) != 32:
        raise AttachmentError(f"attachment {d.section}: chunks_root must be 32 bytes")
    return layout


def check_header_attachments(
    header: notice_pb2.NoticeHeader, section_names: set[str], max_bytes: int
) -> None:
    """The broker's publish-time check: each attachment well formed, at most
    MAX_ATTACHMENTS, sections distinct and sealed in the envelope. Raises AttachmentError."""
    if len(header.attachments) > MAX_ATTACHMENTS:
        raise AttachmentError(f"at most {MAX_ATTACHMENTS} attachments per notice")
    seen: set[str] = set()
    for d in header.attachments:
        check_descriptor(d, max_bytes)
        if d.section in seen:
            raise AttachmentError(f"two attachments name section {d.section}")
        if d.section not in section_names:
            raise AttachmentError(f"attachment section {d.section} is not sealed in the notice")
        seen.add(d.section)


def descriptor_for(
    header: notice_pb2.NoticeHeader, section: str
) -> evidence_pb2.AttachmentDescriptor:
    """The header's descriptor of the attachment bound to ``section``; AttachmentError if none."""
    for d in header.attachments:
        if d.section == section:
            return d
    raise AttachmentError(f"the notice carries no attachment in section {section}")


def chunk_ad(header: notice_pb2.NoticeHeader, section: str, index: int, chunk_count: int) -> bytes:
    """The additional data of chunk ``index``: SHA-256(context || len-prefixed notice id,
    originator, section || u32 version || u64 index || u64 count)."""
    h = hashlib.sha256(CHUNK_AD_CONTEXT)
    for text in (header.notice_id, header.originator, section):
        raw = text.encode()
        h.update(struct.pack(">H", len(raw)) + raw)
    h.update(struct.pack(">IQQ", header.version, index, chunk_count))
    return h.digest()


class StreamingRoot:
    """RFC 9162 Merkle tree hash over leaves given one at a time, with one hash per set bit
    of the count held (O(log n) memory). Equal to merkle.root_from_hashes of the leaf
    hashes: the complete subtrees of sizes 2^k, left to right, folded from the right."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (subtree size, hash), sizes decreasing
        self.count = 0

    def add(self, leaf: bytes) -> None:
        """Add one leaf: its hash is merkle.leaf_hash(leaf), computed without copying it."""
        h = hashlib.sha256(LEAF_PREFIX)
        h.update(leaf)
        self.add_hash(h.digest())

    def add_hash(self, h: bytes) -> None:
        size = 1
        while self._stack and self._stack[-1][0] == size:
            _, left = self._stack.pop()
            h = node_hash(left, h)
            size *= 2
        self._stack.append((size, h))
        self.count += 1

    def root(self) -> bytes:
        """The root so far; AttachmentError when no leaf was added."""
        if not self._stack:
            raise AttachmentError("no chunk to take the root of")
        h = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


class ChunkOpener:
    """A recipient opening one attachment's chunks in order: each must be the expected
    length, carry its AD, open under the stream (tag MESSAGE, the last FINAL), and the
    ciphertext chunks must hash to the signed chunks_root. Raises AttachmentError with
    OPEN_FAILED for every cause."""

    def __init__(
        self,
        header: notice_pb2.NoticeHeader,
        descriptor: evidence_pb2.AttachmentDescriptor,
        key: evidence_pb2.AttachmentKey,
    ) -> None:
        if (
            key.notice_id != header.notice_id
            or key.version != header.version
            or key.section != descriptor.section
            or len(key.key) != KEY_BYTES
            or len(key.stream_header) != HEADER_BYTES
        ):
            raise AttachmentError(OPEN_FAILED)
        self.header = header
        self.descriptor = descriptor
        self.layout = layout_of(descriptor)
        self.state = sodium.crypto_secretstream_xchacha20poly1305_state()
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(
            self.state, key.stream_header, key.key
        )
        self.roots = StreamingRoot()
        self.next_index = 0
        self.plaintext = hashlib.sha256()
        self.expected_digest = key.plaintext_digest

    def open(self, index: int, ciphertext: bytes) -> bytes:
        """Return the plaintext of chunk ``index`` (which must be the next one)."""
        if index != self.next_index or index >= self.layout.chunk_count:
            raise AttachmentError(OPEN_FAILED)
        if len(ciphertext) != self.layout.ciphertext_len(index):
            raise AttachmentError(OPEN_FAILED)
        ad = chunk_ad(self.header, self.descriptor.section, index, self.layout.chunk_count)
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self.state, ciphertext, ad
            )
        except CryptoError:
            raise AttachmentError(OPEN_FAILED) from None
        last = index == self.layout.chunk_count - 1
        if tag != (TAG_FINAL if last else TAG_MESSAGE):
            raise AttachmentError(OPEN_FAILED)
        self.roots.add(ciphertext)
        self.plaintext.update(plain)
        self.next_index += 1
        return bytes(plain)

    def finish(self, trailing: bytes = b"") -> None:
        """Check that every chunk came, nothing after them (``trailing``: bytes found past
        the last chunk) and the whole matches the signed header."""
        if self.next_index != self.layout.chunk_count or trailing:
            raise AttachmentError(OPEN_FAILED)
        if self.roots.root() != self.descriptor.chunks_root:
            raise AttachmentError(OPEN_FAILED)
        if self.expected_digest and self.plaintext.digest() != self.expected_digest:
            raise AttachmentError(OPEN_FAILED)


def parse_key(data: bytes) -> evidence_pb2.AttachmentKey:
    """Parse a section's sealed content as an AttachmentKey; AttachmentError if it is not."""
    try:
        return es.parse(evidence_pb2.AttachmentKey, data)
    except Exception:  # DecodeError
        raise AttachmentError(OPEN_FAILED) from None
