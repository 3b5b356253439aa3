"""A recipient's Delivery, cut once at publish and assembled from bytes when streamed.

Splitting an envelope per recipient (:func:`broker.core.envelope_check.delivery_for`)
parses it and rebuilds two Merkle trees' inclusion proofs; doing that for every
delivery attempt is most of what streaming would cost. Instead the broker cuts
each recipient's share once, when the notice is published, into byte strings
that are already protobuf wire format:

- per notice version, ``head``: Delivery field 2 (the SignedHeader, exactly as
  signed) and field 6 (the originator's CA-signed key statement that verified it),
  and the section ciphertexts, each stored once whatever the audience size;
- per recipient, ``sections``: for each section it may read, in leaf order, the
  position of the section in the envelope and its SealedSection without the
  ciphertext (descriptor, leaf index and inclusion proof); ``wrap``: Delivery
  field 4 (its KeyWrap with proof); ``obligations``: Delivery field 7 entries.

:func:`assemble` concatenates them with the sequence and attempt into the bytes
of a Delivery, and :func:`subscribe_response` several of those into the bytes of
a SubscribeResponse, without parsing anything. Protobuf parsers accept fields in
any order and merge repeated fields in order, so the result parses to the same
Delivery that `delivery_for` would have built (tests/core/test_delivery.py).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from broker.core.envelope_check import CheckedEnvelope
from broker.core.envelope_suite import EnvelopeError
from broker.core.merkle import all_inclusion_proofs
from broker.v1 import notice_pb2

__all__ = [
    "CutDelivery",
    "NoticeCut",
    "assemble",
    "cut_notice",
    "encode_obligations",
    "field_bytes",
    "parse_positions",
    "subscribe_response",
]

# Wire-format tags (field number << 3 | wire type).
_VARINT, _LEN = 0, 2
_POSITION = struct.Struct(">HI")  # section position, length of the SealedSection meta


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:  # tags, most lengths and attempts: one byte, no loop
        return _ONE_BYTE[value]
    if value < 0:
        raise ValueError("varints here are never negative")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def field_bytes(field: int, data: bytes) -> bytes:
    """One length-delimited field: tag, length, bytes."""
    return _tag(field, _LEN) + _varint(len(data)) + data


# Delivery fields (protos/broker/v1/notice.proto).
_D_SEQUENCE = _tag(1, _VARINT)
_D_ATTEMPT = _tag(5, _VARINT)
_D_SECTIONS = _tag(3, _LEN)
_SECTION_CIPHERTEXT = _tag(2, _LEN)
# SubscribeResponse fields (protos/broker/v1/agency.proto).
_R_DELIVERIES = 1


@dataclass(frozen=True)
class CutDelivery:
    """One recipient's share of a notice version, as stored with its delivery row."""

    recipient: str
    sections: bytes  # framed (position, SealedSection meta) pairs, in leaf order
    wrap: bytes  # Delivery field 4
    obligations: bytes  # Delivery field 7 entries (may be empty)


@dataclass(frozen=True)
class NoticeCut:
    """What is stored once per notice version, and every recipient's share."""

    head: bytes  # Delivery fields 2 and 6
    ciphertexts: tuple[bytes, ...]  # by position in envelope.sections
    stripped_envelope: bytes  # the envelope without section ciphertexts
    deliveries: tuple[CutDelivery, ...]


def encode_obligations(obligations: Iterable[notice_pb2.Obligation]) -> bytes:
    """Delivery field 7 entries for `obligations`, in order."""
    return b"".join(field_bytes(7, o.SerializeToString(deterministic=True)) for o in obligations)


def cut_notice(
    envelope: notice_pb2.Envelope,
    checked: CheckedEnvelope,
    originator_statement: bytes,
    shares: Sequence[tuple[str, Collection[str], Sequence[notice_pb2.Obligation] | bytes]],
) -> NoticeCut:
    """Cut every recipient's share of a checked envelope.

    `shares` are (recipient, section names, obligations, or their encoding by
    `encode_obligations`) for each recipient to deliver to; each recipient must have a
    wrap and the sections must exist. Every inclusion proof of both trees is computed
    once (O(n log n)), from the leaf hashes the check already made. Raises EnvelopeError
    naming the recipient or section otherwise.
    """
    positions = checked.section_positions
    section_proofs = all_inclusion_proofs(checked.section_hashes)
    wrap_proofs = all_inclusion_proofs(checked.wrap_hashes)
    framed: dict[str, bytes] = {}  # section name -> (position, SealedSection meta), framed
    leaf_of: dict[str, int] = {}
    for name, pos in positions.items():
        s = envelope.sections[pos]
        meta = notice_pb2.SealedSection(
            descriptor=s.descriptor, leaf_index=s.leaf_index, proof=section_proofs[s.leaf_index]
        ).SerializeToString(deterministic=True)
        framed[name] = _POSITION.pack(pos, len(meta)) + meta
        leaf_of[name] = s.leaf_index
    cuts = []
    for recipient, names, obligations in shares:
        unknown = sorted(set(names) - positions.keys())
        if unknown:
            raise EnvelopeError(f"envelope has no sections named {unknown}")
        index = checked.wrap_index.get(recipient)
        if index is None:
            raise EnvelopeError(f"envelope has no key wrap for recipient {recipient!r}")
        w = envelope.wraps[index]
        wrap = notice_pb2.KeyWrap(
            leaf=w.leaf, leaf_index=w.leaf_index, proof=wrap_proofs[w.leaf_index]
        )
        cuts.append(
            CutDelivery(
                recipient=recipient,
                sections=b"".join(framed[n] for n in sorted(set(names), key=leaf_of.__getitem__)),
                wrap=field_bytes(4, wrap.SerializeToString(deterministic=True)),
                obligations=(
                    obligations
                    if isinstance(obligations, bytes)
                    else encode_obligations(obligations)
                ),
            )
        )
    stripped = notice_pb2.Envelope()
    stripped.CopyFrom(envelope)
    for section in stripped.sections:
        section.ciphertext = b""
    head = field_bytes(2, envelope.header.SerializeToString(deterministic=True))
    if originator_statement:
        head += field_bytes(6, originator_statement)
    return NoticeCut(
        head=head,
        ciphertexts=tuple(s.ciphertext for s in envelope.sections),
        stripped_envelope=stripped.SerializeToString(deterministic=True),
        deliveries=tuple(cuts),
    )


def parse_positions(sections: bytes) -> list[tuple[int, bytes]]:
    """The (position, SealedSection meta) pairs of a recipient's framed sections.

    Raises EnvelopeError if the framing is damaged.
    """
    out = []
    offset, end = 0, len(sections)
    while offset < end:
        if end - offset < _POSITION.size:
            raise EnvelopeError("stored delivery sections are damaged")
        pos, length = _POSITION.unpack_from(sections, offset)
        offset += _POSITION.size
        if end - offset < length:
            raise EnvelopeError("stored delivery sections are damaged")
        out.append((pos, sections[offset : offset + length]))
        offset += length
    return out


def assemble(
    *,
    sequence: int,
    attempt: int,
    head: bytes,
    sections: bytes,
    ciphertexts: Mapping[int, bytes],
    wrap: bytes,
    obligations: bytes,
) -> bytes:
    """The bytes of one Delivery from its stored parts; `ciphertexts` maps the positions
    named in `sections` to their ciphertext. Raises EnvelopeError if one is missing."""
    out = [_D_SEQUENCE, _varint(sequence), head]
    for pos, meta in parse_positions(sections):
        ct = ciphertexts.get(pos)
        if ct is None:
            raise EnvelopeError(f"stored ciphertext of section {pos} is missing")
        inner = _SECTION_CIPHERTEXT + _varint(len(ct))
        out += (
            _D_SECTIONS,
            _varint(len(meta) + len(inner) + len(ct)),
            meta,
            inner,
            ct,
        )
    out += (wrap, obligations, _D_ATTEMPT, _varint(attempt))
    return b"".join(out)


def subscribe_response(deliveries: Iterable[bytes]) -> bytes:
    """The bytes of a SubscribeResponse carrying `deliveries` (each a Delivery's bytes)."""
    return b"".join(field_bytes(_R_DELIVERIES, d) for d in deliveries)
