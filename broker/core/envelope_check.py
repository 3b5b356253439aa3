"""The broker's side of an envelope: check it on Publish, split it per recipient.

The broker holds no keys, so it checks everything else: the originator's
signature (first, before anything signed is parsed), the header, the salted
restrictions digest, each descriptor against its ciphertext, the wrap leaves,
the padding and that both trees rebuild to the signed roots. Public names are
re-exported by :mod:`broker.core.envelope`.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from broker.core import envelope_suite as es
from broker.core import hybrid as hy
from broker.core.bounds import quote
from broker.core.envelope_suite import EnvelopeError, SignatureError
from broker.core.merkle import inclusion_proof, leaf_hash, root_from_hashes
from broker.v1 import notice_pb2

_NAME_RULE = "[a-z0-9_]{1,32}"


@dataclass(frozen=True)
class CheckedEnvelope:
    header: notice_pb2.NoticeHeader
    header_digest: bytes  # SHA-256 of header_bytes
    restrictions: notice_pb2.OriginatorRestrictions
    sections: Mapping[str, notice_pb2.SectionDescriptor]  # by name
    wrap_index: Mapping[str, int]  # recipient -> position in envelope.wraps
    # What the checks computed anyway, so the relay need not parse or hash again:
    wrap_sections: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # by recipient
    section_positions: Mapping[str, int] = field(default_factory=dict)  # in envelope.sections
    section_hashes: tuple[bytes, ...] = ()  # leaf hashes in leaf_index order, padding included
    wrap_hashes: tuple[bytes, ...] = ()

    @property
    def manifest(self) -> dict[str, tuple[str, ...]]:
        """Per section, the catalogue fields its signed descriptor declares (content.py)."""
        return {name: tuple(d.content_fields) for name, d in self.sections.items()}


def _leaf_hashes(tree: str, size: int, items: Sequence[tuple[str, int, bytes]]) -> list[bytes]:
    """Return the leaf hashes in leaf_index order.

    `items` are (label, leaf_index, leaf bytes) of real and padding leaves.
    Raises EnvelopeError unless the indices are exactly a permutation of range(size).
    """
    if len(items) != size:
        raise EnvelopeError(f"{tree} tree has {len(items)} leaves (with padding), expected {size}")
    hashes: list[bytes | None] = [None] * size
    for label, index, leaf in items:
        if index >= size:
            raise EnvelopeError(f"{label}.leaf_index {index} is outside the tree of size {size}")
        if hashes[index] is not None:
            raise EnvelopeError(f"{label}.leaf_index {index} is used by another leaf")
        hashes[index] = leaf_hash(leaf)
    return [h for h in hashes if h is not None]


def _section_items(envelope: notice_pb2.Envelope) -> list[tuple[str, int, bytes]]:
    sections = envelope.sections
    padding = envelope.section_padding
    return [
        *((f"sections[{i}]", s.leaf_index, s.descriptor) for i, s in enumerate(sections)),
        *((f"section_padding[{i}]", p.leaf_index, p.leaf) for i, p in enumerate(padding)),
    ]


def _wrap_items(envelope: notice_pb2.Envelope) -> list[tuple[str, int, bytes]]:
    wraps = envelope.wraps
    padding = envelope.wrap_padding
    return [
        *((f"wraps[{i}]", w.leaf_index, w.leaf) for i, w in enumerate(wraps)),
        *((f"wrap_padding[{i}]", p.leaf_index, p.leaf) for i, p in enumerate(padding)),
    ]


def _check_header(header: notice_pb2.NoticeHeader) -> None:
    if header.format != es.FORMAT:
        raise EnvelopeError(f"header.format is {header.format}, expected {es.FORMAT}")
    if not header.notice_id:
        raise EnvelopeError("header.notice_id is empty")
    if not header.originator:
        raise EnvelopeError("header.originator is empty")
    if header.version < 1:
        raise EnvelopeError("header.version must be >= 1")
    for tree in ("sections", "wraps"):
        size: int = getattr(header, f"{tree}_tree_size")
        if not es.is_tree_size(size):
            raise EnvelopeError(f"header.{tree}_tree_size {size} is not a power of two >= 4")
        if len(getattr(header, f"{tree}_root")) != es.DIGEST_SIZE:
            raise EnvelopeError(f"header.{tree}_root must be 32 bytes")


def _check_sections(
    envelope: notice_pb2.Envelope, header: notice_pb2.NoticeHeader, positions: dict[str, int]
) -> dict[str, notice_pb2.SectionDescriptor]:
    descriptors: dict[str, notice_pb2.SectionDescriptor] = {}
    for i, section in enumerate(envelope.sections):
        what = f"sections[{i}]"
        d = es.parse_field(notice_pb2.SectionDescriptor, section.descriptor, f"{what}.descriptor")
        if d.notice_id != header.notice_id or d.version != header.version:
            raise EnvelopeError(f"{what}.descriptor is for another notice id or version")
        if not es.SECTION_NAME.fullmatch(d.name):
            raise EnvelopeError(f"{what}.descriptor.name {quote(d.name)} must match {_NAME_RULE}")
        if d.name in descriptors:
            raise EnvelopeError(f"{what}.descriptor.name {quote(d.name)} is duplicated")
        if len(section.ciphertext) < es.MIN_SECTION_CIPHERTEXT:
            raise EnvelopeError(f"{what}.ciphertext is shorter than nonce and tag")
        if d.ciphertext_size != len(section.ciphertext):
            raise EnvelopeError(f"{what}.descriptor.ciphertext_size does not match the ciphertext")
        if d.ciphertext_digest != es.sha256(section.ciphertext):
            raise EnvelopeError(
                f"{what}.descriptor.ciphertext_digest does not match the ciphertext"
            )
        if len(d.key_commitment) != es.DIGEST_SIZE:
            raise EnvelopeError(f"{what}.descriptor.key_commitment must be 32 bytes")
        if section.proof:
            raise EnvelopeError(f"{what}.proof must be empty in an envelope")
        descriptors[d.name] = d
        positions[d.name] = i
    return descriptors


def _check_wraps(
    envelope: notice_pb2.Envelope,
    section_names: Collection[str],
    wrap_sections: dict[str, tuple[str, ...]],
    suite: str,
) -> dict[str, int]:
    hybrid = suite == hy.SUITE_HYBRID
    min_sealed = hy.MIN_WRAP_SIZE if hybrid else es.SEAL_OVERHEAD
    wrap_kind = "HPKE wrap" if hybrid else "sealed box"
    wrap_index: dict[str, int] = {}
    for i, wrap in enumerate(envelope.wraps):
        what = f"wraps[{i}]"
        leaf = es.parse_field(notice_pb2.WrapLeaf, wrap.leaf, f"{what}.leaf")
        if not leaf.recipient:
            raise EnvelopeError(f"{what}.leaf.recipient is empty")
        if leaf.recipient in wrap_index:
            raise EnvelopeError(f"{what}.leaf.recipient {quote(leaf.recipient)} is duplicated")
        names = list(leaf.sections)
        if names != sorted(set(names)):
            raise EnvelopeError(f"{what}.leaf.sections must be sorted and unique")
        unknown = sorted(set(names) - set(section_names))
        if unknown:
            raise EnvelopeError(f"{what}.leaf.sections names sections the notice lacks: {unknown}")
        if len(leaf.sealed) < min_sealed:
            raise EnvelopeError(f"{what}.leaf.sealed is shorter than a {wrap_kind}")
        if wrap.proof:
            raise EnvelopeError(f"{what}.proof must be empty in an envelope")
        wrap_index[leaf.recipient] = i
        wrap_sections[leaf.recipient] = tuple(names)
    if not wrap_index:
        raise EnvelopeError("wraps must not be empty")
    return wrap_index


def _check_padding(where: str, padding: Sequence[notice_pb2.PaddingLeaf]) -> None:
    for i, pad in enumerate(padding):
        if len(pad.leaf) != es.PADDING_LEAF_SIZE:
            raise EnvelopeError(f"{where}[{i}].leaf must be {es.PADDING_LEAF_SIZE} bytes")


def _check_signature(signed: notice_pb2.SignedHeader, signing_key: bytes) -> None:
    """Check the suite and the header signature, before anything signed is parsed."""
    if signed.suite not in hy.SUITES:
        raise EnvelopeError(
            f"header.suite {quote(signed.suite)} is not supported, expected one of "
            f"{list(hy.SUITES)}"
        )
    if len(signing_key) not in (es.KEY_SIZE, hy.VERIFY_KEY_SIZE):
        raise EnvelopeError(
            f"signing_key must be a {es.KEY_SIZE}-byte Ed25519 public key or a "
            f"{hy.VERIFY_KEY_SIZE}-byte Ed25519 || ML-DSA-65 key"
        )
    if signed.suite == hy.SUITE_HYBRID:
        if len(signing_key) != hy.VERIFY_KEY_SIZE:
            raise SignatureError(
                "header.suite is hybrid but the originator's key statement carries no ML-DSA-65 key"
            )
        if not hy.hybrid_valid(
            signing_key, signed.signature, es.HEADER_CONTEXT, signed.header_bytes
        ):
            raise SignatureError(
                "header.signature does not verify as a hybrid Ed25519 + ML-DSA-65 signature "
                "with the originator's keys (both halves must verify)"
            )
        return
    if not es.ed25519_valid(
        signing_key[: es.KEY_SIZE], signed.signature, es.HEADER_CONTEXT + signed.header_bytes
    ):
        raise SignatureError("header.signature does not verify with the originator's signing key")


def check_envelope(envelope: notice_pb2.Envelope, signing_key: bytes) -> CheckedEnvelope:
    """Verify everything about an envelope that can be verified without the keys.

    Checks suite and signature first (before parsing anything signed), then the
    header, restrictions salt (32 bytes) and salted digest, descriptors against
    ciphertexts, wrap leaves, padding, leaf index permutations and both Merkle
    roots. Not checked: times, kinds, purposes (relay and policy), key
    commitments (they need the keys).
    Returns the parsed CheckedEnvelope.
    Raises SignatureError if the signature does not verify with `signing_key`
    (the originator's 32-byte Ed25519 public key, or its 1984-byte Ed25519 || ML-DSA-65
    key; the hybrid suite needs the latter and both halves); EnvelopeError for anything
    else, naming the item.
    """
    signed = envelope.header
    _check_signature(signed, signing_key)
    header = es.parse_field(notice_pb2.NoticeHeader, signed.header_bytes, "header.header_bytes")
    _check_header(header)
    if len(envelope.restrictions_salt) != es.SALT_SIZE:
        raise EnvelopeError(f"restrictions_salt must be {es.SALT_SIZE} bytes")
    digest = es.restrictions_digest(envelope.restrictions_salt, envelope.restrictions)
    if not hmac.compare_digest(digest, header.restrictions_digest):
        raise EnvelopeError(
            "restrictions and restrictions_salt do not match header.restrictions_digest"
        )
    restrictions = es.parse_field(
        notice_pb2.OriginatorRestrictions, envelope.restrictions, "restrictions"
    )
    positions: dict[str, int] = {}
    descriptors = _check_sections(envelope, header, positions)
    wrap_sections: dict[str, tuple[str, ...]] = {}
    wrap_index = _check_wraps(envelope, descriptors.keys(), wrap_sections, signed.suite)
    _check_padding("section_padding", envelope.section_padding)
    _check_padding("wrap_padding", envelope.wrap_padding)

    section_hashes = _leaf_hashes("sections", header.sections_tree_size, _section_items(envelope))
    if root_from_hashes(section_hashes) != header.sections_root:
        raise EnvelopeError("section leaves do not hash to header.sections_root")
    wrap_hashes = _leaf_hashes("wraps", header.wraps_tree_size, _wrap_items(envelope))
    if root_from_hashes(wrap_hashes) != header.wraps_root:
        raise EnvelopeError("wrap leaves do not hash to header.wraps_root")
    return CheckedEnvelope(
        header=header,
        header_digest=es.header_digest(signed.header_bytes),
        restrictions=restrictions,
        sections=MappingProxyType(descriptors),
        wrap_index=MappingProxyType(wrap_index),
        wrap_sections=MappingProxyType(wrap_sections),
        section_positions=MappingProxyType(positions),
        section_hashes=tuple(section_hashes),
        wrap_hashes=tuple(wrap_hashes),
    )


def delivery_for(
    envelope: notice_pb2.Envelope, recipient: str, sections: Collection[str]
) -> notice_pb2.Delivery:
    """Return what `recipient` receives: header, the named sections, its own wrap, with proofs.

    Sections come in leaf_index order; inclusion proofs are computed over all
    leaves, padding included. sequence and attempt are left 0 for the caller.
    The restrictions and their salt are never copied: with them a recipient would
    learn the audience, or confirm guesses of it against restrictions_digest.
    Expects an envelope that passed :func:`check_envelope`.
    Raises EnvelopeError if the recipient has no wrap, a section name is unknown
    or leaf indices are not a permutation; TypeError if `sections` is a str.
    """
    if isinstance(sections, str):
        raise TypeError("sections must be a collection of names, not a str")
    section_items, wrap_items = _section_items(envelope), _wrap_items(envelope)
    section_hashes = _leaf_hashes("sections", len(section_items), section_items)
    wrap_hashes = _leaf_hashes("wraps", len(wrap_items), wrap_items)
    by_name: dict[str, notice_pb2.SealedSection] = {}
    for i, section in enumerate(envelope.sections):
        what = f"sections[{i}].descriptor"
        by_name[es.parse_field(notice_pb2.SectionDescriptor, section.descriptor, what).name] = (
            section
        )
    wanted = set(sections)
    unknown = sorted(wanted - by_name.keys())
    if unknown:
        raise EnvelopeError(f"envelope has no sections named {unknown}")
    wrap = None
    for i, candidate in enumerate(envelope.wraps):
        if (
            es.parse_field(notice_pb2.WrapLeaf, candidate.leaf, f"wraps[{i}].leaf").recipient
            == recipient
        ):
            wrap = candidate
            break
    if wrap is None:
        raise EnvelopeError(f"envelope has no key wrap for recipient {quote(recipient)}")

    delivery = notice_pb2.Delivery()
    delivery.header.CopyFrom(envelope.header)
    for section in sorted((by_name[n] for n in wanted), key=lambda s: s.leaf_index):
        delivery.sections.append(
            notice_pb2.SealedSection(
                descriptor=section.descriptor,
                ciphertext=section.ciphertext,
                leaf_index=section.leaf_index,
                proof=inclusion_proof(section.leaf_index, section_hashes),
            )
        )
    delivery.wrap.leaf = wrap.leaf
    delivery.wrap.leaf_index = wrap.leaf_index
    delivery.wrap.proof.extend(inclusion_proof(wrap.leaf_index, wrap_hashes))
    return delivery
