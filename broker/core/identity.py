"""Who is who: party names and CA-signed agency key statements.

Everything that decides an identity lives here, and nothing else does: the
``urn:broker:<kind>:<id>`` names carried in certificate URI SANs, and the
verification of the key statements that bind an agency's Ed25519 signing key
and X25519 encryption key to its id (see keys/README.md).

Pure: no files, no clock (``now_ms`` is a parameter), no randomness. The shell
that creates keys and certificates is :mod:`broker.pki`.

Errors: a malformed id given as input raises :class:`InvalidArgument`; anything
that fails to establish an identity (a certificate name, a statement)
raises :class:`IdentityError`, an :class:`Unauthenticated`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from google.protobuf.message import DecodeError

from broker.core import bounds
from broker.core import envelope_suite as es
from broker.core.hybrid import KEM_PUBLIC_SIZE, MLDSA_PUBLIC_SIZE
from broker.errors import InvalidArgument, Unauthenticated
from broker.v1 import notice_pb2

PartyKind = Literal["agency", "admin", "auditor", "broker", "lookup"]  # lookup: key service
PARTY_KINDS: Final[tuple[PartyKind, ...]] = get_args(PartyKind)

URI_PREFIX: Final = "urn:broker:"
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ID_RE: Final = re.compile(ID_PATTERN)

KEY_STATEMENT_CONTEXT: Final = b"broker.v1 key statement\x00"
KEY_SIZE: Final = 32
# A KeyStatement is ~120 bytes, ~3.3 KiB with the post-quantum keys; anything much larger
# is not one of ours.
MAX_STATEMENT_SIZE: Final = 4096
MAX_SIGNATURE_SIZE: Final = 128


class IdentityError(Unauthenticated):
    """A certificate name or key statement does not establish an identity."""


def validate_id(s: str) -> str:
    """Return ``s`` if it is a valid party id (``ID_PATTERN``), else raise InvalidArgument.

    Ids are 1 to 64 ASCII characters: a letter or digit, then letters, digits,
    ``.``, ``_`` or ``-``; for example ``FR-NCB``.
    """
    if not isinstance(s, str) or _ID_RE.fullmatch(s) is None:
        shown = bounds.quote(s) if isinstance(s, str) else type(s).__name__
        raise InvalidArgument(
            f"invalid id {shown}: use 1 to 64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit (e.g. FR-NCB)"
        )
    return s


def validate_kind(kind: str) -> PartyKind:
    """Return ``kind`` as a PartyKind, or raise InvalidArgument naming the known kinds."""
    for known in PARTY_KINDS:
        if kind == known:
            return known
    raise InvalidArgument(f"unknown party kind {kind!r}: expected one of {', '.join(PARTY_KINDS)}")


@dataclass(frozen=True, order=True)
class Party:
    """A named participant: an agency, an administrator, an auditor, a broker or a
    lookup-key service.

    Construction validates: an unknown kind or an invalid id raises InvalidArgument.
    """

    kind: PartyKind
    id: str

    def __post_init__(self) -> None:
        validate_kind(self.kind)
        validate_id(self.id)

    def uri(self) -> str:
        """Return the URI SAN naming this party, e.g. ``urn:broker:agency:FR-NCB``."""
        return f"{URI_PREFIX}{self.kind}:{self.id}"

    def __str__(self) -> str:
        return self.uri()


def parse_party_uri(uri: str) -> Party:
    """Parse ``urn:broker:<kind>:<id>`` strictly; return the Party or raise IdentityError.

    Strict means: the exact lower-case prefix, a known kind, an id matching
    ``ID_PATTERN``, nothing before or after. No case folding or normalisation,
    so a name has exactly one spelling.
    """
    if not isinstance(uri, str):
        raise IdentityError(f"not a broker party URI (want {URI_PREFIX}<kind>:<id>)")
    if not uri.startswith(URI_PREFIX):
        raise IdentityError(
            f"not a broker party URI (want {URI_PREFIX}<kind>:<id>): {bounds.quote(uri)}"
        )
    kind, sep, ident = uri[len(URI_PREFIX) :].partition(":")
    if not sep:
        raise IdentityError(
            f"broker party URI without an id (want {URI_PREFIX}<kind>:<id>): {bounds.quote(uri)}"
        )
    try:
        return Party(validate_kind(kind), validate_id(ident))
    except InvalidArgument as exc:
        raise IdentityError(f"invalid broker party URI {bounds.quote(uri)}: {exc}") from exc


def _is_broker_uri(uri: str) -> bool:
    # URN scheme and namespace are case-insensitive (RFC 8141 3.1): count every
    # spelling as a claim, then parse strictly, so "URN:BROKER:..." beside a
    # well-formed URI makes the certificate ambiguous rather than invisible.
    return uri[: len(URI_PREFIX)].lower() == URI_PREFIX


def party_from_uri_sans(uris: Sequence[str]) -> Party:
    """Return the one party named among a certificate's URI SANs.

    Exactly one ``urn:broker:`` URI is required; other URIs are ignored.
    Raises IdentityError for none, several, or a malformed one.
    """
    claims = [u for u in uris if _is_broker_uri(u)]
    if not claims:
        raise IdentityError(
            f"certificate names no broker party: no URI SAN of the form {URI_PREFIX}<kind>:<id>"
        )
    if len(claims) > 1:
        raise IdentityError(
            f"certificate names {len(claims)} broker parties ({', '.join(claims)}); exactly one "
            "is allowed"
        )
    return parse_party_uri(claims[0])


def party_from_certificate(cert: x509.Certificate) -> Party:
    """Return the party named by a certificate's URI SAN (see party_from_uri_sans).

    Does not check the certificate's signature or validity: the TLS layer does.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return party_from_uri_sans(())
    return party_from_uri_sans(san.get_values_for_type(x509.UniformResourceIdentifier))


@dataclass(frozen=True)
class AgencyKeys:
    """An agency's public keys as bound by a verified key statement."""

    agency_id: str
    signing_key: bytes  # Ed25519 public key, 32 bytes raw
    encryption_key: bytes  # X25519 public key, 32 bytes raw
    serial: int
    not_before_ms: int
    not_after_ms: int
    pq_signing_key: bytes = b""  # ML-DSA-65 public key, 1952 bytes (hybrid suite), or empty
    pq_encryption_key: bytes = b""  # HPKE MLKEM768X25519 public key, 1216 bytes, or empty

    @property
    def verify_key(self) -> bytes:
        """Ed25519 public key, or Ed25519 || ML-DSA-65 when the statement carries a PQ key:
        what broker.core.hybrid.valid_as and check_envelope take."""
        return self.signing_key + self.pq_signing_key

    @property
    def supports_hybrid(self) -> bool:
        """True iff the statement carries both post-quantum keys (the hybrid suite)."""
        return bool(self.pq_signing_key and self.pq_encryption_key)

    @property
    def party(self) -> Party:
        return Party("agency", self.agency_id)


def key_statement_signing_input(statement: bytes) -> bytes:
    """Return the bytes the CA signs: ``KEY_STATEMENT_CONTEXT || statement``."""
    return KEY_STATEMENT_CONTEXT + statement


def _check_ca_key(ca_public_key: object) -> EllipticCurvePublicKey:
    if not isinstance(ca_public_key, EllipticCurvePublicKey) or not isinstance(
        ca_public_key.curve, ec.SECP256R1
    ):
        raise IdentityError("CA public key must be an EC P-256 key")
    return ca_public_key


def verify_key_statement(
    signed: notice_pb2.SignedKeyStatement,
    ca_public_key: EllipticCurvePublicKey,
    now_ms: int,
    expected_agency: str | None = None,
) -> AgencyKeys:
    """Verify a CA-signed key statement and return the keys it binds.

    Order matters (sign bytes, not objects): the ECDSA P-256 SHA-256 signature
    over ``KEY_STATEMENT_CONTEXT || statement`` is checked on the exact bytes
    received, and only then are they parsed. Then: the agency id is valid (and
    equals ``expected_agency`` when given), both keys are 32 bytes, the signing key a
    point of Ed25519's prime-order group (no small-order key), the serial
    is at least 1, and ``not_before_ms <= now_ms < not_after_ms``.

    Raises IdentityError with a message saying which check failed.
    """
    ca = _check_ca_key(ca_public_key)
    if not signed.statement:
        raise IdentityError("key statement is empty")
    if len(signed.statement) > MAX_STATEMENT_SIZE:
        raise IdentityError(f"key statement too large ({len(signed.statement)} bytes)")
    if not signed.signature or len(signed.signature) > MAX_SIGNATURE_SIZE:
        raise IdentityError("key statement signature missing or malformed")
    try:
        ca.verify(
            signed.signature,
            key_statement_signing_input(signed.statement),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature as exc:
        raise IdentityError("key statement signature does not verify against the CA") from exc

    try:
        st = notice_pb2.KeyStatement.FromString(signed.statement)
    except DecodeError as exc:
        raise IdentityError("signed key statement bytes are not a KeyStatement") from exc
    try:
        bounds.check(st, "key statement")
    except bounds.BoundsError as exc:
        raise IdentityError(str(exc)) from None

    try:
        validate_id(st.agency_id)
    except InvalidArgument as exc:
        raise IdentityError(f"key statement names an invalid agency: {exc}") from exc
    where = f"key statement for agency {st.agency_id!r} (serial {st.serial})"
    if expected_agency is not None and st.agency_id != expected_agency:
        raise IdentityError(f"{where} is not for the expected agency {expected_agency!r}")
    if len(st.signing_key) != KEY_SIZE:
        raise IdentityError(f"{where}: signing key must be {KEY_SIZE} bytes")
    if not es.ed25519_usable_key(st.signing_key):
        # A small-order key (the identity point, say) would make one signature valid for
        # every message: whatever it "signed" would prove nothing.
        raise IdentityError(
            f"{where}: signing key is not a usable Ed25519 key (small order or not on the curve)"
        )
    if len(st.encryption_key) != KEY_SIZE:
        raise IdentityError(f"{where}: encryption key must be {KEY_SIZE} bytes")
    if bool(st.pq_signing_key) != bool(st.pq_encryption_key):
        raise IdentityError(f"{where}: post-quantum keys must be both present or both absent")
    if st.pq_signing_key and len(st.pq_signing_key) != MLDSA_PUBLIC_SIZE:
        raise IdentityError(f"{where}: ML-DSA-65 key must be {MLDSA_PUBLIC_SIZE} bytes")
    if st.pq_encryption_key and len(st.pq_encryption_key) != KEM_PUBLIC_SIZE:
        raise IdentityError(f"{where}: MLKEM768X25519 key must be {KEM_PUBLIC_SIZE} bytes")
    if st.serial < 1:
        raise IdentityError(f"{where}: serial must be at least 1")
    if st.not_after_ms <= st.not_before_ms:
        raise IdentityError(f"{where}: empty validity window")
    if now_ms < st.not_before_ms:
        raise IdentityError(f"{where} is not yet valid (not before {st.not_before_ms} ms)")
    if now_ms >= st.not_after_ms:
        raise IdentityError(f"{where} has expired (not after {st.not_after_ms} ms)")
    return AgencyKeys(
        agency_id=st.agency_id,
        signing_key=bytes(st.signing_key),
        encryption_key=bytes(st.encryption_key),
        serial=st.serial,
        not_before_ms=st.not_before_ms,
        not_after_ms=st.not_after_ms,
        pq_signing_key=bytes(st.pq_signing_key),
        pq_encryption_key=bytes(st.pq_encryption_key),
    )


def newest_key_statements(
    statements: Iterable[notice_pb2.SignedKeyStatement],
    ca_public_key: EllipticCurvePublicKey,
    now_ms: int,
    *,
    revoked: Iterable[str] = (),
) -> dict[str, AgencyKeys]:
    """Return, per agency id, the keys of its newest valid statement.

    Statements that do not verify (bad signature, expired, ...) are skipped, as
    are agencies whose URI is in ``revoked``. Rotation is "highest serial wins".
    Two valid statements for one agency with the same serial but different
    keys mean the CA signed a conflict: raises IdentityError rather than pick.
    """
    ca = _check_ca_key(ca_public_key)
    revoked_set = frozenset(revoked)
    newest: dict[str, AgencyKeys] = {}
    for signed in statements:
        try:
            keys = verify_key_statement(signed, ca, now_ms)
        except IdentityError:
            continue
        if keys.party.uri() in revoked_set:
            continue
        seen = newest.get(keys.agency_id)
        if seen is None or keys.serial > seen.serial:
            newest[keys.agency_id] = keys
        elif keys.serial == seen.serial and (
            keys.signing_key != seen.signing_key
            or keys.encryption_key != seen.encryption_key
            or keys.pq_signing_key != seen.pq_signing_key
            or keys.pq_encryption_key != seen.pq_encryption_key
        ):
            raise IdentityError(
                f"conflicting key statements for agency {keys.agency_id!r} with serial "
                f"{keys.serial}: the CA signed two different key sets"
            )
    return newest
