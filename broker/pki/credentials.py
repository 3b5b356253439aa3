"""A party's credentials loaded from its directory, checked before use.

Part of :mod:`broker.pki` (its docstring has the layout and the error rules)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from broker.core import hybrid as hy
from broker.core.identity import (
    IdentityError,
    Party,
    party_from_certificate,
    validate_id,
    verify_key_statement,
)
from broker.errors import FailedPrecondition, InvalidArgument, NotFound
from broker.pki.ca import (
    _load_ca_certificate,
    ca_public_key,
    load_ca_certificate,
)
from broker.pki.files import (
    KIND_DIRS,
    TLS_CERT,
    AgencyFiles,
    PartyFiles,
    _agency_files,
    _issue_hint,
    _party_files,
    _read_file,
    _read_private,
    _read_raw_key,
    _to_ms,
    _utc_now,
    party_directory,
)
from broker.pki.serials import (
    read_statement,
)
from broker.pki.statements import (
    _read_pq_keys,
)
from broker.v1 import notice_pb2


@dataclass(frozen=True)
class AgencyCredentials:
    """An agency's loaded secrets and its CA-signed key statement."""

    agency_id: str
    signing_seed: bytes  # Ed25519 seed, 32 bytes
    encryption_private_key: bytes  # X25519 private key, 32 bytes (libsodium crypto_box)
    statement: notice_pb2.SignedKeyStatement
    files: AgencyFiles
    pq_signing_seed: bytes = b""  # ML-DSA-65 seed, 32 bytes, when the statement has PQ keys
    pq_encryption_private_key: bytes = b""  # KEM private key, 96 bytes (hybrid.kem_private_key)

    @property
    def hybrid(self) -> bool:
        """True iff this agency holds the post-quantum keys of the hybrid suite."""
        return bool(self.pq_signing_seed)

    @property
    def signing_key(self) -> bytes:
        """What signs receipts and actions: the Ed25519 seed, or Ed25519 || ML-DSA-65 seeds
        (64 bytes, so broker.core.hybrid.sign_as signs hybrid) when the agency has PQ keys."""
        return self.signing_seed + self.pq_signing_seed


def load_party(root: Path, party: Party) -> PartyFiles:
    """Check and return the paths of a party's TLS credentials.

    Checks that the files exist, that the private key is 0600 and matches the
    certificate, and that the certificate names ``party``. Raises NotFound or
    FailedPrecondition with what to do.
    """
    root = Path(root)
    files = _party_files(party_directory(root, party))
    hint = _issue_hint(root, party)
    if not files.directory.is_dir():
        raise NotFound(f"no credentials for {party.uri()} in {files.directory} ({hint})")
    key_pem = _read_private(files.key, "TLS private key", hint)
    cert_pem = _read_file(files.cert, "TLS certificate", hint)
    _load_ca_certificate(files.ca_cert, hint)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise FailedPrecondition(f"{files.cert} is not a PEM certificate ({hint})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise FailedPrecondition(f"{files.key} is not an unencrypted PEM private key") from None
    if key.public_key() != cert.public_key():
        raise FailedPrecondition(
            f"{files.key} does not match {files.cert}; re-issue with {hint.removeprefix('run ')}"
        )
    try:
        named = party_from_certificate(cert)
    except IdentityError as exc:
        raise FailedPrecondition(f"{files.cert}: {exc}") from None
    if named != party:
        raise FailedPrecondition(f"{files.cert} names {named.uri()}, not {party.uri()}")
    return files


def load_agency(root: Path, agency_id: str, *, now: datetime | None = None) -> AgencyCredentials:
    """Load an agency's secrets and statement, checking that they belong together.

    Besides the :func:`load_party` checks: both raw keys are 32 bytes and 0600,
    the statement verifies against the CA at ``now`` for this agency, and its
    public keys are those of the private keys on disk. Raises NotFound or
    FailedPrecondition (e.g. an expired statement: rotate it).
    """
    root = Path(root)
    party = Party("agency", validate_id(agency_id))
    load_party(root, party)
    files = _agency_files(party_directory(root, party))
    hint = _issue_hint(root, party)
    rotate = f"run `broker keys rotate agency {party.id} --dir {root}`"
    seed = _read_raw_key(files.signing_key, "signing key", hint)
    enc = _read_raw_key(files.encryption_key, "encryption key", hint)
    signed = read_statement(files.statement)
    ca_cert = load_ca_certificate(files.ca_cert)
    try:
        keys = verify_key_statement(
            signed, ca_public_key(ca_cert), _to_ms(_utc_now(now)), expected_agency=party.id
        )
    except IdentityError as exc:
        raise FailedPrecondition(f"{files.statement}: {exc}; {rotate}") from None
    signing_pub = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    enc_pub = x25519.X25519PrivateKey.from_private_bytes(enc).public_key()
    if (
        signing_pub.public_bytes_raw() != keys.signing_key
        or enc_pub.public_bytes_raw() != keys.encryption_key
    ):
        raise FailedPrecondition(
            f"the keys in {files.directory} do not match its statement.bin; {rotate}"
        )
    pq_seed, pq_kem = b"", b""
    if keys.supports_hybrid:
        pq = _read_pq_keys(files, hint)
        if pq is None or (hy.mldsa_public_key(pq[0]), hy.kem_public_key_bytes(pq[1])) != (
            keys.pq_signing_key,
            keys.pq_encryption_key,
        ):
            raise FailedPrecondition(
                f"the post-quantum keys in {files.directory} are missing or do not match its "
                f"statement.bin; {rotate}"
            )
        pq_seed, pq_kem = pq
    return AgencyCredentials(
        agency_id=party.id,
        signing_seed=seed,
        encryption_private_key=enc,
        statement=signed,
        files=files,
        pq_signing_seed=pq_seed,
        pq_encryption_private_key=pq_kem,
    )


def list_parties(root: Path) -> list[Party]:
    """Return every party with a certificate under ``root``, sorted by kind then id."""
    found: list[Party] = []
    for kind, dirname in KIND_DIRS.items():
        base = Path(root) / dirname
        if not base.is_dir():
            continue
        for entry in base.iterdir():
            if (entry / TLS_CERT).is_file():
                with contextlib.suppress(InvalidArgument):
                    found.append(Party(kind, entry.name))
    return sorted(found)
