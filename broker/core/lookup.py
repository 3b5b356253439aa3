"""Lookups: tokens, the signed index commitment, what a hit releases, the log leaf.

The construction, end to end (README "Lookups"):

1. The node reduces a selector to canonical forms (:mod:`broker.core.selectors`)
   and blinds each OPRF input (:mod:`broker.core.oprf`, VOPRF mode).
2. The lookup-key service evaluates the blinded elements and proves it used
   the key the CA signed (:func:`verify_lookup_key`); the node verifies the
   proof, unblinds and finalizes. The token is the first 32 bytes of the
   64-byte output (:func:`token_of`).
3. Publishing: the envelope carries the sorted tokens and a 32-byte salt, and
   the signed header commits to them as ``lookup_digest`` (:func:`index_digest`).
   Why commit: the broker indexes only tokens the originator signed for, so a
   stored index entry is attributable to the originator and anyone holding the
   envelope can check the index against the signature. Why salted: a recipient
   sees the header, and could otherwise test a guess (a token it obtained from
   the OPRF for some passport) against the digest.
4. Lookup: the broker matches tokens, and on a hit releases what the catalogue
   says (:func:`release_of`). The leaf logs the querier, the SHA-256 of each
   token and the result, never a selector.

Pure: randomness (the salt) and time come in as parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from broker.core import oprf
from broker.core.identity import IdentityError, Party, parse_party_uri
from broker.core.policy.lookups import RELEASE_LEVELS, LookupSpec
from broker.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from broker.v1 import audit_pb2, lookup_pb2, notice_pb2

TOKEN_SIZE: Final = 32
SALT_SIZE: Final = 32
MAX_TOKENS_PER_NOTICE: Final = 256
MAX_LOOKUP_TOKENS: Final = 1024
MAX_EVALUATE: Final = 1024
INDEX_CONTEXT: Final = b"broker.v1 lookup index\x00"
LOOKUP_KEY_CONTEXT: Final = b"broker.v1 lookup key\x00"
HIT_KIND: Final = "reply.lookup_hit"
HOUR_MS: Final = 3_600_000

Rng = Callable[[int], bytes]


def token_of(output: bytes) -> bytes:
    """The index token of one 64-byte OPRF output: its first 32 bytes."""
    if len(output) != oprf.NH:
        raise InvalidArgument(f"an OPRF output is {oprf.NH} bytes")
    return output[:TOKEN_SIZE]


def token_digest(token: bytes) -> bytes:
    """What the transparency log keeps of a token: SHA-256 of it."""
    return hashlib.sha256(token).digest()


# -- the index commitment ------------------------------------------------------------------


def index_digest(salt: bytes, tokens: Sequence[bytes]) -> bytes:
    """``SHA-256(INDEX_CONTEXT || salt || sorted tokens)``."""
    h = hashlib.sha256(INDEX_CONTEXT + salt)
    for t in sorted(tokens):
        h.update(t)
    return h.digest()


def _check_tokens(tokens: Sequence[bytes], limit: int, what: str) -> None:
    if len(tokens) > limit:
        raise InvalidArgument(f"at most {limit} tokens per {what}, not {len(tokens)}")
    for i, t in enumerate(tokens):
        if len(t) != TOKEN_SIZE:
            raise InvalidArgument(f"token {i} is {len(t)} bytes; tokens are {TOKEN_SIZE} bytes")


def seal_index(tokens: Iterable[bytes], rng: Rng) -> tuple[bytes, list[bytes], bytes]:
    """For the originator: (salt, sorted unique tokens, digest for the header)."""
    unique = sorted(set(tokens))
    _check_tokens(unique, MAX_TOKENS_PER_NOTICE, "notice")
    if not unique:
        return b"", [], b""
    salt = rng(SALT_SIZE)
    return salt, unique, index_digest(salt, unique)


def check_index(header: notice_pb2.NoticeHeader, envelope: notice_pb2.Envelope) -> list[bytes]:
    """For the broker at publish: the envelope's tokens, checked against the signed header.

    Raises InvalidArgument for malformed tokens, tokens not sorted and unique, a
    missing salt, or tokens the header's ``lookup_digest`` does not commit to.
    """
    tokens = list(envelope.lookup_tokens)
    if not tokens:
        if header.lookup_digest or envelope.lookup_salt:
            raise InvalidArgument("the header commits to lookup tokens the envelope lacks")
        return []
    _check_tokens(tokens, MAX_TOKENS_PER_NOTICE, "notice")
    if any(a >= b for a, b in pairwise(tokens)):
        raise InvalidArgument("lookup tokens must be sorted and unique")
    if len(envelope.lookup_salt) != SALT_SIZE:
        raise InvalidArgument(f"lookup_salt must be {SALT_SIZE} bytes")
    if header.lookup_digest != index_digest(envelope.lookup_salt, tokens):
        raise InvalidArgument("the lookup tokens do not match the signed header's lookup_digest")
    return tokens


def check_lookup(request: lookup_pb2.LookupRequest, purposes: Collection[str]) -> list[bytes]:
    """The tokens of a Lookup request; raise InvalidArgument for what to fix."""
    tokens = list(request.tokens)
    if not tokens:
        raise InvalidArgument("a lookup carries at least one token")
    _check_tokens(tokens, MAX_LOOKUP_TOKENS, "lookup")
    if request.purpose not in purposes:
        raise InvalidArgument(
            f"lookup purpose {request.purpose!r} is not in the catalogue: use one of "
            f"{', '.join(sorted(purposes))}"
        )
    return tokens


# -- what a hit releases --------------------------------------------------------------------


@dataclass(frozen=True)
class IndexedNotice:
    """What the broker knows of a notice a token matched."""

    notice_id: str
    version: int
    originator: str
    kind: str
    held_version: int = 0  # the querier holds this version (0: none)
    purpose: str = ""  # the notice's purpose


def release_of(
    hit: IndexedNotice,
    spec: LookupSpec | None,
    querier_roles: Iterable[str],
    originator_statement: bytes,
) -> lookup_pb2.LookupHit:
    """The LookupHit a querier gets for one matched notice under the catalogue's spec.

    A kind without a lookup table (the catalogue changed since indexing) releases
    the least: contact. ``originator_statement`` is the originator's serialized
    SignedKeyStatement (CA-signed), so the querier can seal the hit notification to it.
    """
    level = spec.level_for(querier_roles) if spec is not None else RELEASE_LEVELS[0]
    out = lookup_pb2.LookupHit(
        release=level,
        originator=hit.originator,
        notice_id=hit.notice_id,
        held_version=hit.held_version,
        purpose=hit.purpose,
        respond_within_ms=(spec.respond_within_hours if spec else 12) * HOUR_MS,
        originator_statement=notice_pb2.SignedKeyStatement.FromString(originator_statement),
    )
    if RELEASE_LEVELS.index(level) >= RELEASE_LEVELS.index("kind") or hit.held_version:
        out.kind = hit.kind
    if level == "action" and spec is not None:
        out.action = spec.action
    return out


def check_hit_reply(
    header: notice_pb2.NoticeHeader,
    recipients: frozenset[str],
    originator: str | None,
    closed: str,
    hit: bool,
) -> None:
    """A ``reply.lookup_hit`` goes from an agency whose lookup hit the notice to its
    originator only. Raises NotFound (no such hit: the same whether the notice exists),
    FailedPrecondition (closed) or PermissionDenied (another recipient)."""
    if not header.in_reply_to:
        raise InvalidArgument(f"a {HIT_KIND} must name the notice it answers (in_reply_to)")
    if originator is None or not hit:
        raise NotFound(f"no lookup of yours hit notice {header.in_reply_to}")
    if closed:
        raise FailedPrecondition(f"notice {header.in_reply_to} is {closed}")
    if recipients != {originator}:
        raise PermissionDenied(f"a {HIT_KIND} goes to the notice's originator only")


# -- the log leaf ---------------------------------------------------------------------------


def lookup_leaf(
    *,
    querier: str,
    purpose: str,
    tokens: Sequence[bytes],
    hits: Mapping[int, Sequence[IndexedNotice]],
    logged_at_ms: int,
) -> audit_pb2.LogLeaf:
    """The transparency-log leaf of one lookup (LookupPerformed)."""
    entry = lookup_pb2.LookupPerformed(
        querier=querier,
        purpose=purpose,
        token_digests=[token_digest(t) for t in tokens],
    )
    for i in sorted(hits):
        for n in hits[i]:
            entry.hit_indexes.append(i)
            entry.hit_notices.append(n.notice_id)
            entry.hit_originators.append(n.originator)
    return audit_pb2.LogLeaf(format=1, logged_at_ms=logged_at_ms, lookup=entry)


# -- query patterns, for auditors ------------------------------------------------------------


@dataclass(frozen=True)
class QueryPattern:
    """One querier's lookups as the log shows them."""

    querier: str
    lookups: int
    tokens: int
    hits: int  # tokens that hit
    purposes: tuple[tuple[str, int], ...]
    repeated: tuple[tuple[str, int, int], ...]  # (token digest hex, times asked, times hit)

    @property
    def no_hit_share(self) -> float:
        return 1.0 - self.hits / self.tokens if self.tokens else 0.0


def query_patterns(
    entries: Iterable[lookup_pb2.LookupPerformed], repeat_at: int = 3
) -> list[QueryPattern]:
    """Per querier: lookups, tokens, hits, purposes, and the tokens asked ``repeat_at``
    times or more (the same passport or name asked again and again: a fishing expedition
    shows as many no-hits on one token). Sorted by querier."""
    by: dict[str, list[lookup_pb2.LookupPerformed]] = {}
    for e in entries:
        by.setdefault(e.querier, []).append(e)
    out = []
    for querier in sorted(by):
        asked: dict[bytes, int] = {}
        hit: dict[bytes, int] = {}
        purposes: dict[str, int] = {}
        tokens = hits = 0
        for e in by[querier]:
            purposes[e.purpose] = purposes.get(e.purpose, 0) + 1
            hit_positions = set(e.hit_indexes)
            for i, d in enumerate(e.token_digests):
                asked[d] = asked.get(d, 0) + 1
                tokens += 1
                if i in hit_positions:
                    hit[d] = hit.get(d, 0) + 1
                    hits += 1
        repeated = sorted(
            ((d.hex(), n, hit.get(d, 0)) for d, n in asked.items() if n >= repeat_at),
            key=lambda r: (-r[1], r[0]),
        )
        out.append(
            QueryPattern(
                querier, len(by[querier]), tokens, hits, tuple(sorted(purposes.items())),
                tuple(repeated),
            )
        )  # fmt: skip
    return out


# -- the lookup-key statement ---------------------------------------------------------------


def lookup_key_signing_input(key: bytes) -> bytes:
    """What the CA signs for a lookup-key service: ``LOOKUP_KEY_CONTEXT || key bytes``."""
    return LOOKUP_KEY_CONTEXT + key


def verify_lookup_key(
    signed: lookup_pb2.SignedLookupKey,
    ca_key: ec.EllipticCurvePublicKey,
    service: Party | None,
    now_ms: int,
) -> lookup_pb2.LookupKey:
    """Verify a lookup-key statement against the CA; return the LookupKey.

    ``service`` (when given) must be the party it names, e.g. the peer of the TLS
    connection. Raises IdentityError when the signature, name, suite, key or
    validity period does not hold.
    """
    try:
        ca_key.verify(
            signed.signature, lookup_key_signing_input(signed.key), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise IdentityError("the lookup key is not signed by the deployment CA") from None
    try:
        key = lookup_pb2.LookupKey.FromString(signed.key)
    except DecodeError:
        raise IdentityError("the lookup key statement is malformed") from None
    named = parse_party_uri(key.service)
    if named.kind != "lookup":
        raise IdentityError(f"{key.service} is not a lookup-key service")
    if service is not None and named != service:
        raise IdentityError(f"the lookup key names {key.service}, not {service.uri()}")
    if key.suite != oprf.SUITE or key.mode != oprf.MODE_VOPRF:
        raise IdentityError(f"the lookup key is for {key.suite} mode {key.mode}, not VOPRF")
    try:
        oprf.check_element(key.public_key, "lookup public key")
    except oprf.OprfError as exc:
        raise IdentityError(str(exc)) from None
    if key.share_index or key.threshold or key.holders or key.group_public_key:
        if not 1 <= key.threshold <= key.holders or not 1 <= key.share_index <= key.holders:
            raise IdentityError(f"the lookup key of {key.service} is a malformed threshold share")
        try:
            oprf.check_element(key.group_public_key, "group public key")
        except oprf.OprfError as exc:
            raise IdentityError(str(exc)) from None
    if not key.not_before_ms <= now_ms < key.not_after_ms:
        raise IdentityError(f"the lookup key of {key.service} is not valid now: re-issue it")
    return key
