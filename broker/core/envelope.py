"""Sealed notice envelopes: seal (originator), check and split (broker), open (recipient).

Suite "ed25519+xchacha20poly1305+x25519box/v1" (constants, errors and primitives in
:mod:`broker.core.envelope_suite`; the broker's checks in :mod:`broker.core.envelope_check`,
re-exported here):

- each section gets a fresh 32-byte key and 24-byte nonce; its ciphertext is
  nonce || XChaCha20-Poly1305(key, nonce, plaintext, aad), the AAD binding notice
  id, version, originator and section name; its SectionDescriptor (a Merkle leaf)
  carries SHA-256 of the ciphertext, a key commitment HMAC-SHA256(key, ...) and
  the content manifest (the catalogue fields the section holds: names only, see
  :mod:`broker.core.content`);
- each recipient gets a WrapLeaf: its agency id, the sorted names of the sections
  it may read (for the broker's policy check) and a libsodium sealed box of a
  WrapBody holding only those sections' keys;
- sections and wraps each form an RFC 9162 Merkle tree padded with random
  32-byte leaves to a power of two >= 4, leaf positions shuffled, so a tree's size
  hides the section count and audience size up to a power of two;
- the NoticeHeader commits to both roots and to the originator's restrictions as
  restrictions_digest = SHA-256(RESTRICTIONS_CONTEXT || salt || restrictions bytes),
  salt 32 random bytes kept in Envelope.restrictions_salt: restrictions are low
  entropy, so an unsalted hash would let anyone holding the header confirm guesses;
  the originator signs the header bytes: Ed25519(HEADER_CONTEXT || header_bytes).

A recipient's Delivery holds the header, its own sections and wrap with inclusion
proofs, and nothing about other recipients or withheld sections: neither the
restrictions nor their salt.

rng call order of :func:`seal` (known-answer tests depend on it):

1. for each section, in input order: key = rng(32), then nonce = rng(24);
2. sections tree: one rng(32) per padding leaf (size - count of them), then the
   shuffle: for i = size-1 down to 1, rng(4) as u32be until one is accepted by
   rejection sampling (see :func:`envelope_suite.uniform`), j = value mod (i + 1),
   swap positions[i] and positions[j], positions starting as [0..size-1];
   item k of [sections in input order..., padding leaves in drawn order] gets
   leaf_index positions[k];
3. one ephemeral sealed-box seed = rng(32), shared by every wrap (each still an ordinary
   sealed box: its nonce and key depend on the recipient's key; see
   :func:`envelope_suite.seal_boxes`);
4. wraps tree: as in 2, over [wraps in recipient input order..., padding];
5. restrictions salt = rng(32), last, so steps 1-4 are as before the salt existed.

Signing (Ed25519) is deterministic and draws nothing. Envelope.sections, wraps
and padding lists are ordered by leaf_index.

Hybrid suite (``suite=SUITE_HYBRID``, primitives in :mod:`broker.core.hybrid`): the same
layout, rng order and checks (step 3 still draws its 32 bytes, which the hybrid suite
does not use, so both suites share one rng order), except that each WrapLeaf.sealed is
HPKE (RFC 9180, MLKEM768-X25519, HKDF-SHA256, ChaCha20-Poly1305) of the WrapBody to the
recipient's 1216-byte KEM key, info = hybrid.wrap_info(notice, version, recipient), made
by the `encapsulate` parameter (default hybrid.hpke_seal, which draws inside the library);
the header signature is hybrid.hybrid_sign(key, HEADER_CONTEXT, header_bytes), and the
signing key is the 64-byte Ed25519 seed || ML-DSA-65 seed. The suite id is in
SignedHeader.suite and inside the signed message, so an envelope of one suite never opens
or checks as the other.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf.message import DecodeError

from broker.core import envelope_suite as es
from broker.core import hybrid as hy
from broker.core.envelope_check import CheckedEnvelope, check_envelope, delivery_for
from broker.core.envelope_suite import (
    FORMAT,
    HEADER_CONTEXT,
    OPEN_FAILED,
    SUITE,
    EnvelopeError,
    OpenError,
    SignatureError,
    header_digest,
)
from broker.core.hybrid import SUITE_HYBRID
from broker.core.merkle import leaf_hash, root_from_hashes, verify_inclusion
from broker.v1 import notice_pb2

__all__ = [
    "FORMAT",
    "HEADER_CONTEXT",
    "OPEN_FAILED",
    "SUITE",
    "SUITE_HYBRID",
    "CheckedEnvelope",
    "EnvelopeError",
    "OpenError",
    "OpenedNotice",
    "RecipientInput",
    "SectionInput",
    "SignatureError",
    "check_envelope",
    "delivery_for",
    "header_digest",
    "open_delivery",
    "peek_originator",
    "seal",
    "sign_header",
    "verify_header_signature",
]


@dataclass(frozen=True)
class SectionInput:
    name: str
    plaintext: bytes
    # The content manifest (broker/core/content.py): the catalogue fields the plaintext
    # holds; names only, signed in the descriptor.
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecipientInput:
    agency_id: str
    encryption_key: bytes  # X25519 public key, 32 bytes
    sections: frozenset[str]  # names this recipient may read
    pq_encryption_key: bytes = b""  # HPKE MLKEM768X25519 public key, 1216 bytes (hybrid suite)


@dataclass(frozen=True)
class OpenedNotice:
    header: notice_pb2.NoticeHeader
    header_digest: bytes  # SHA-256 of header_bytes
    sections: Mapping[str, bytes]  # name -> plaintext
    # name -> the catalogue fields the originator declared (signed; content.manifest_lies)
    manifest: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def sign_header(header_bytes: bytes, signing_key: bytes, suite: str = SUITE) -> bytes:
    """Return Ed25519(signing_key, HEADER_CONTEXT || header_bytes) (RFC 8032), or for the
    hybrid suite hybrid.hybrid_sign(signing_key, HEADER_CONTEXT, header_bytes).

    Raises EnvelopeError if signing_key is not a 32-byte Ed25519 seed (classical) or a
    64-byte hybrid signing key (hybrid), or the suite is unknown.
    """
    if suite == SUITE_HYBRID:
        if len(signing_key) != hy.SIGNING_KEY_SIZE:
            raise EnvelopeError("signing_key must be a 64-byte hybrid key (Ed25519 || ML-DSA-65)")
        return hy.hybrid_sign(signing_key, HEADER_CONTEXT, header_bytes)
    if suite != SUITE:
        raise EnvelopeError(f"suite {suite!r} is not one of {list(hy.SUITES)}")
    if len(signing_key) != es.KEY_SIZE:
        raise EnvelopeError("signing_key must be a 32-byte Ed25519 seed")
    return es.ed25519_sign(signing_key, HEADER_CONTEXT + header_bytes)


def verify_header_signature(signed: notice_pb2.SignedHeader, originator_key: bytes) -> bool:
    """Return True iff signed.signature verifies for signed.suite with the originator's key.

    `originator_key` is the Ed25519 public key (32 bytes), or Ed25519 || ML-DSA-65 (1984
    bytes) for an originator whose key statement carries a post-quantum key. The classical
    suite uses the Ed25519 part; the hybrid suite needs both parts and both halves.
    Never raises; an unknown suite is not valid.
    """
    if signed.suite == SUITE:
        return es.ed25519_valid(
            originator_key[: es.KEY_SIZE],
            signed.signature,
            HEADER_CONTEXT + signed.header_bytes,
        )
    if signed.suite == SUITE_HYBRID:
        return hy.hybrid_valid(
            originator_key, signed.signature, HEADER_CONTEXT, signed.header_bytes
        )
    return False


# --- seal ---------------------------------------------------------------------------


def _lay_out(
    leaves: Sequence[bytes], rng: es.Rng
) -> tuple[int, list[int], list[notice_pb2.PaddingLeaf], bytes]:
    """Pad and shuffle one tree (rng steps 2 and 4 of the module docstring).

    Returns (tree size, leaf index of each real leaf, padding leaves sorted by
    index, Merkle root over all leaves in index order).
    """
    size = es.tree_size_for(len(leaves))
    pads = [es.draw(rng, es.PADDING_LEAF_SIZE) for _ in range(size - len(leaves))]
    positions = es.shuffled_positions(size, rng)
    hashes = [b""] * size
    for leaf, pos in zip([*leaves, *pads], positions, strict=True):
        hashes[pos] = leaf_hash(leaf)
    padding = [
        notice_pb2.PaddingLeaf(leaf=pad, leaf_index=pos)
        for pad, pos in zip(pads, positions[len(leaves) :], strict=True)
    ]
    padding.sort(key=lambda p: p.leaf_index)
    return size, positions[: len(leaves)], padding, root_from_hashes(hashes)


def _check_seal_inputs(
    header: notice_pb2.NoticeHeader,
    sections: Sequence[SectionInput],
    recipients: Sequence[RecipientInput],
    signing_key: bytes,
    suite: str,
) -> None:
    if suite not in hy.SUITES:
        raise EnvelopeError(f"suite {suite!r} is not one of {list(hy.SUITES)}")
    if suite == SUITE_HYBRID and len(signing_key) != hy.SIGNING_KEY_SIZE:
        raise EnvelopeError("signing_key must be a 64-byte hybrid key (Ed25519 || ML-DSA-65 seeds)")
    if suite == SUITE and len(signing_key) != es.KEY_SIZE:
        raise EnvelopeError("signing_key must be a 32-byte Ed25519 seed")
    for attr in ("notice_id", "originator"):
        value: str = getattr(header, attr)
        if not value or len(value.encode()) > 0xFFFF:
            raise EnvelopeError(f"header.{attr} must be 1 to 65535 bytes")
    if header.version < 1:
        raise EnvelopeError("header.version must be >= 1")
    names: set[str] = set()
    for i, section in enumerate(sections):
        if not es.SECTION_NAME.fullmatch(section.name):
            raise EnvelopeError(f"sections[{i}].name {section.name!r} must match [a-z0-9_]{{1,32}}")
        if section.name in names:
            raise EnvelopeError(f"sections[{i}].name {section.name!r} is duplicated")
        names.add(section.name)
    if not recipients:
        raise EnvelopeError("recipients must not be empty")
    agencies: set[str] = set()
    for i, recipient in enumerate(recipients):
        if not recipient.agency_id:
            raise EnvelopeError(f"recipients[{i}].agency_id is empty")
        if recipient.agency_id in agencies:
            raise EnvelopeError(f"recipients[{i}].agency_id {recipient.agency_id!r} is duplicated")
        agencies.add(recipient.agency_id)
        if suite == SUITE_HYBRID:
            if not recipient.pq_encryption_key:
                raise EnvelopeError(
                    f"recipients[{i}] {recipient.agency_id!r} has no post-quantum encryption "
                    "key, so it cannot receive the hybrid suite"
                )
            if len(recipient.pq_encryption_key) != hy.KEM_PUBLIC_SIZE:
                raise EnvelopeError(
                    f"recipients[{i}].pq_encryption_key must be {hy.KEM_PUBLIC_SIZE} bytes"
                )
        elif len(recipient.encryption_key) != es.KEY_SIZE:
            raise EnvelopeError(f"recipients[{i}].encryption_key must be 32 bytes")
        unknown = sorted(recipient.sections - names)
        if unknown:
            raise EnvelopeError(f"recipients[{i}].sections names unknown sections {unknown}")


def seal(
    header: notice_pb2.NoticeHeader,
    restrictions: notice_pb2.OriginatorRestrictions,
    sections: Sequence[SectionInput],
    recipients: Sequence[RecipientInput],
    signing_key: bytes,
    rng: Callable[[int], bytes],
    *,
    suite: str = SUITE,
    encapsulate: hy.Encapsulate | None = None,
) -> notice_pb2.Envelope:
    """Encrypt, wrap, commit and sign one notice version.

    `header` supplies notice_id, version, originator and the descriptive fields;
    a copy gets format, restrictions_digest (salted) and the tree roots and sizes.
    The rng call order is in the module docstring. Returns the Envelope, which
    carries the restrictions and their salt for the broker only.
    `suite` is SUITE or SUITE_HYBRID (then signing_key is the 64-byte hybrid key, each
    recipient needs its pq_encryption_key, and `encapsulate` seals the wraps, default
    hybrid.hpke_seal).
    Raises EnvelopeError for invalid input (names the field); ValueError if rng
    returns the wrong number of bytes.
    """
    _check_seal_inputs(header, sections, recipients, signing_key, suite)
    hdr = notice_pb2.NoticeHeader()
    hdr.CopyFrom(header)
    hdr.format = FORMAT
    restriction_bytes = es.serialize(restrictions)

    keys: dict[str, bytes] = {}
    sealed_sections: list[notice_pb2.SealedSection] = []
    for section in sections:
        key = es.draw(rng, es.KEY_SIZE)
        nonce = es.draw(rng, es.NONCE_SIZE)
        aad = es.section_aad(hdr.notice_id, hdr.version, hdr.originator, section.name)
        ciphertext = es.encrypt_section(key, nonce, section.plaintext, aad)
        descriptor = notice_pb2.SectionDescriptor(
            notice_id=hdr.notice_id,
            version=hdr.version,
            name=section.name,
            ciphertext_digest=es.sha256(ciphertext),
            key_commitment=es.key_commitment(key, aad),
            ciphertext_size=len(ciphertext),
            content_fields=section.fields,
        )
        keys[section.name] = key
        sealed_sections.append(
            notice_pb2.SealedSection(descriptor=es.serialize(descriptor), ciphertext=ciphertext)
        )
    size, positions, section_padding, root = _lay_out([s.descriptor for s in sealed_sections], rng)
    hdr.sections_tree_size, hdr.sections_root = size, root
    for sealed, pos in zip(sealed_sections, positions, strict=True):
        sealed.leaf_index = pos

    bodies = [
        es.serialize(
            notice_pb2.WrapBody(
                notice_id=hdr.notice_id,
                version=hdr.version,
                recipient=recipient.agency_id,
                keys=[
                    notice_pb2.SectionKey(name=n, key=keys[n]) for n in sorted(recipient.sections)
                ],
            )
        )
        for recipient in recipients
    ]
    seed = es.draw(rng, es.KEY_SIZE)  # rng step 3, drawn in both suites (one rng order)
    if suite == SUITE_HYBRID:
        boxes = _hpke_wraps(hdr, bodies, recipients, encapsulate or hy.hpke_seal)
    else:
        boxes = _box_wraps(bodies, recipients, seed)
    wraps: list[notice_pb2.KeyWrap] = [
        notice_pb2.KeyWrap(
            leaf=es.serialize(
                notice_pb2.WrapLeaf(
                    recipient=recipient.agency_id, sealed=boxed, sections=sorted(recipient.sections)
                )
            )
        )
        for recipient, boxed in zip(recipients, boxes, strict=True)
    ]
    size, positions, wrap_padding, root = _lay_out([w.leaf for w in wraps], rng)
    hdr.wraps_tree_size, hdr.wraps_root = size, root
    for wrap, pos in zip(wraps, positions, strict=True):
        wrap.leaf_index = pos

    salt = es.draw(rng, es.SALT_SIZE)
    hdr.restrictions_digest = es.restrictions_digest(salt, restriction_bytes)

    header_bytes = es.serialize(hdr)
    return notice_pb2.Envelope(
        header=notice_pb2.SignedHeader(
            header_bytes=header_bytes,
            signature=sign_header(header_bytes, signing_key, suite),
            suite=suite,
        ),
        restrictions=restriction_bytes,
        restrictions_salt=salt,
        sections=sorted(sealed_sections, key=lambda s: s.leaf_index),
        wraps=sorted(wraps, key=lambda w: w.leaf_index),
        section_padding=section_padding,
        wrap_padding=wrap_padding,
    )


def _box_wraps(
    bodies: Sequence[bytes], recipients: Sequence[RecipientInput], seed: bytes
) -> list[bytes]:
    """Classical wraps: sealed boxes under one ephemeral key pair, from `seed` (rng step 3)."""
    if len({r.encryption_key for r in recipients}) != len(recipients):
        raise EnvelopeError("two recipients have the same encryption key; refusing to seal")
    try:
        return es.seal_boxes(
            [(body, r.encryption_key) for body, r in zip(bodies, recipients, strict=True)], seed
        )
    except ValueError:
        for i, recipient in enumerate(recipients):  # name the recipient whose key failed
            try:
                es.seal_boxes([(b"", recipient.encryption_key)], seed)
            except ValueError:
                raise EnvelopeError(
                    f"recipients[{i}].encryption_key is not a usable X25519 key"
                ) from None
        raise


def _hpke_wraps(
    hdr: notice_pb2.NoticeHeader,
    bodies: Sequence[bytes],
    recipients: Sequence[RecipientInput],
    encapsulate: hy.Encapsulate,
) -> list[bytes]:
    """Hybrid wraps: one HPKE seal per recipient, info binding notice, version, recipient."""
    out = []
    for i, (body, recipient) in enumerate(zip(bodies, recipients, strict=True)):
        info = hy.wrap_info(hdr.notice_id, hdr.version, recipient.agency_id)
        try:
            out.append(encapsulate(recipient.pq_encryption_key, body, info))
        except ValueError:
            raise EnvelopeError(
                f"recipients[{i}].pq_encryption_key is not a usable MLKEM768X25519 key"
            ) from None
    return out


# --- open (recipient) ---------------------------------------------------------------


def peek_originator(signed: notice_pb2.SignedHeader) -> str:
    """Return the header's originator, to look up whose key verifies it. Trust nothing else.

    Raises OpenError if the header does not parse or names no originator.
    """
    try:
        originator = es.parse(notice_pb2.NoticeHeader, signed.header_bytes).originator
    except DecodeError:
        raise OpenError from None
    if not originator:
        raise OpenError
    return originator


def _require(condition: bool) -> None:
    if not condition:
        raise OpenError


def _open(
    delivery: notice_pb2.Delivery,
    recipient: str,
    private_key: bytes,
    originator_key: bytes,
    public_key: bytes | None,
    pq_private_key: bytes,
) -> OpenedNotice:
    signed = delivery.header
    _require(signed.suite in hy.SUITES)
    _require(verify_header_signature(signed, originator_key))
    header = es.parse(notice_pb2.NoticeHeader, signed.header_bytes)
    _require(header.format == FORMAT)
    _require(es.is_tree_size(header.sections_tree_size) and es.is_tree_size(header.wraps_tree_size))

    wrap = delivery.wrap
    verify_inclusion(
        wrap.leaf_index, header.wraps_tree_size, leaf_hash(wrap.leaf), wrap.proof, header.wraps_root
    )
    leaf = es.parse(notice_pb2.WrapLeaf, wrap.leaf)
    _require(leaf.recipient == recipient)
    if signed.suite == SUITE_HYBRID:
        info = hy.wrap_info(header.notice_id, header.version, recipient)
        opened = hy.hpke_open(pq_private_key, leaf.sealed, info)
    else:
        opened = es.open_box(leaf.sealed, private_key, public_key)
    body = es.parse(notice_pb2.WrapBody, opened)
    _require(body.notice_id == header.notice_id and body.version == header.version)
    _require(body.recipient == recipient)
    # The wrap leaf lists, sorted, exactly the names of the keys sealed inside.
    _require([k.name for k in body.keys] == list(leaf.sections) == sorted(set(leaf.sections)))
    _require(all(len(k.key) == es.KEY_SIZE for k in body.keys))
    keys = {k.name: k.key for k in body.keys}

    # Exactly the sections whose keys are in the wrap: same count, each known, none twice.
    _require(len(delivery.sections) == len(keys))
    plaintexts: dict[str, bytes] = {}
    manifest: dict[str, tuple[str, ...]] = {}
    for section in delivery.sections:
        verify_inclusion(
            section.leaf_index,
            header.sections_tree_size,
            leaf_hash(section.descriptor),
            section.proof,
            header.sections_root,
        )
        d = es.parse(notice_pb2.SectionDescriptor, section.descriptor)
        _require(d.notice_id == header.notice_id and d.version == header.version)
        _require(d.name in keys and d.name not in plaintexts)
        _require(d.ciphertext_size == len(section.ciphertext))
        _require(hmac.compare_digest(es.sha256(section.ciphertext), d.ciphertext_digest))
        key = keys[d.name]
        aad = es.section_aad(header.notice_id, header.version, header.originator, d.name)
        _require(hmac.compare_digest(es.key_commitment(key, aad), d.key_commitment))
        plaintexts[d.name] = es.decrypt_section(key, section.ciphertext, aad)
        if d.content_fields:
            manifest[d.name] = tuple(d.content_fields)
    return OpenedNotice(
        header=header,
        header_digest=header_digest(signed.header_bytes),
        sections=MappingProxyType(plaintexts),
        manifest=MappingProxyType(manifest),
    )


def open_delivery(
    delivery: notice_pb2.Delivery,
    recipient: str,
    encryption_private_key: bytes,
    originator_signing_key: bytes,
    encryption_public_key: bytes | None = None,
    pq_encryption_private_key: bytes = b"",
) -> OpenedNotice:
    """Verify and decrypt a Delivery addressed to `recipient`.

    The suite named in the signed header decides: the classical suite opens the wrap
    with the X25519 private key; the hybrid suite with `pq_encryption_private_key` (the
    96-byte KEM private key) and needs `originator_signing_key` to be the originator's
    Ed25519 || ML-DSA-65 verify key (1984 bytes).

    Verifies suite and signature (with the originator's 32-byte Ed25519 public
    key) before trusting the header, then the wrap's inclusion in wraps_root and
    its recipient, opens it with the X25519 private key, and for every delivered
    section its inclusion in sections_root, notice and version, digest, size and
    key commitment before decrypting. The delivered sections must be exactly
    those whose keys the wrap holds. Returns the OpenedNotice.
    Raises OpenError, with the same text for every cause (no oracle).
    """
    try:
        return _open(
            delivery,
            recipient,
            encryption_private_key,
            originator_signing_key,
            encryption_public_key,
            pq_encryption_private_key,
        )
    except (DecodeError, ValueError):  # ValueError covers merkle.ProofError
        raise OpenError from None
