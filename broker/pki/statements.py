"""Agency key statements: issuance (with the agency's certificate), renewal, serials.

Part of :mod:`broker.pki` (its docstring has the layout and the error rules)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from broker.core import hybrid as hy
from broker.core.identity import (
    Party,
    key_statement_signing_input,
    validate_id,
)
from broker.errors import FailedPrecondition, InvalidArgument
from broker.pki.ca import (
    _build_certificate,
    _install,
    _refuse_revoked,
    _tls_files,
    load_ca,
    load_certificate,
    subject_alt_names,
)
from broker.pki.files import (
    ENCRYPTION_KEY,
    KIND_DIRS,
    PQ_ENCRYPTION_KEY,
    PQ_SIGNING_KEY,
    PRIVATE_MODE,
    PUBLIC_MODE,
    SIGNING_KEY,
    STATEMENT,
    AgencyFiles,
    _agency_files,
    _check_days,
    _issue_hint,
    _read_private,
    _read_raw_key,
    _to_ms,
    _utc_now,
    party_directory,
)
from broker.pki.serials import (
    _append_issued,
    _previous_serial,
    read_statement,
)
from broker.v1 import notice_pb2


def sign_key_statement(
    ca_key: ec.EllipticCurvePrivateKey, statement: notice_pb2.KeyStatement
) -> notice_pb2.SignedKeyStatement:
    """Serialize ``statement`` once and sign ``KEY_STATEMENT_CONTEXT || bytes`` (ECDSA P-256)."""
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or not isinstance(
        ca_key.curve, ec.SECP256R1
    ):
        raise InvalidArgument("the CA key must be an EC P-256 private key")
    data = statement.SerializeToString(deterministic=True)
    signature = ca_key.sign(key_statement_signing_input(data), ec.ECDSA(hashes.SHA256()))
    return notice_pb2.SignedKeyStatement(statement=data, signature=signature)


DEFAULT_STATEMENT_DAYS = 90  # key statements are short-lived: renew (broker keys renew)


def issue_agency(
    root: Path,
    agency_id: str,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = 825,
    statement_days: int = DEFAULT_STATEMENT_DAYS,
    now: datetime | None = None,
    pq: bool = False,
) -> AgencyFiles:
    """Issue (or rotate) an agency's credentials into ``root/agencies/<id>/``.

    With ``pq`` also new post-quantum keys for the hybrid suite (``pq-signing.key``,
    ``pq-encryption.key``, 0600) whose public halves the statement carries.

    Creates a TLS certificate as :func:`issue_certificate`, a new Ed25519
    signing key (``signing.key``, 32-byte seed, 0600), a new X25519 encryption
    key (``encryption.key``, 32 raw bytes usable as a libsodium crypto_box
    secret key, 0600) and ``statement.bin``: a CA-signed KeyStatement binding
    both public keys to the agency, with serial = previous serial + 1 (1 at
    first), valid from the certificate's start for `statement_days` (at most the
    certificate's validity): short-lived, so a rotated-out key cannot stay usable long.
    ``dns_names`` and ``ip_addresses`` add SANs for an agency that also serves TLS. The
    previous generation is copied to ``old/statement-<serial>/``.
    """
    root = Path(root)
    party = Party("agency", validate_id(agency_id))
    _check_days(days)
    t = _utc_now(now)
    names = subject_alt_names(party, dns_names, ip_addresses)
    _refuse_revoked(root, party)
    ca_cert, ca_key = load_ca(root)
    directory = party_directory(root, party)
    serial = _previous_serial(root, party, directory) + 1

    cert, tls_key = _build_certificate(ca_cert, ca_key, party, names=names, days=days, t=t)
    signing = ed25519.Ed25519PrivateKey.generate()
    encryption = x25519.X25519PrivateKey.generate()
    _check_days(statement_days)
    not_before = _to_ms(cert.not_valid_before_utc)
    statement = notice_pb2.KeyStatement(
        agency_id=party.id,
        signing_key=signing.public_key().public_bytes_raw(),
        encryption_key=encryption.public_key().public_bytes_raw(),
        serial=serial,
        not_before_ms=not_before,
        not_after_ms=min(
            _to_ms(cert.not_valid_after_utc), not_before + statement_days * 86_400_000
        ),
    )
    files = _tls_files(ca_cert, cert, tls_key)
    if pq:
        pq_seed = secrets.token_bytes(hy.MLDSA_SEED_SIZE)
        pq_kem = (
            secrets.token_bytes(hy.MLKEM_SEED_SIZE)
            + x25519.X25519PrivateKey.generate().private_bytes_raw()
        )
        _put_pq_keys(statement, pq_seed, pq_kem)
        files[PQ_SIGNING_KEY] = (pq_seed, PRIVATE_MODE)
        files[PQ_ENCRYPTION_KEY] = (pq_kem, PRIVATE_MODE)
    signed = sign_key_statement(ca_key, statement)
    files[SIGNING_KEY] = (signing.private_bytes_raw(), PRIVATE_MODE)
    files[ENCRYPTION_KEY] = (encryption.private_bytes_raw(), PRIVATE_MODE)
    files[STATEMENT] = (signed.SerializeToString(), PUBLIC_MODE)
    _append_issued(root, t, party, cert, serial)
    _install(directory, files)
    return _agency_files(directory)


def _put_pq_keys(statement: notice_pb2.KeyStatement, pq_seed: bytes, pq_kem: bytes) -> None:
    statement.pq_signing_key = hy.mldsa_public_key(pq_seed)
    statement.pq_encryption_key = hy.kem_public_key_bytes(pq_kem)


def _read_pq_keys(files: AgencyFiles, hint: str) -> tuple[bytes, bytes] | None:
    """Return (ML-DSA seed, KEM private key) when both files exist, None when neither does."""
    sign, enc = files.directory / PQ_SIGNING_KEY, files.directory / PQ_ENCRYPTION_KEY
    if not sign.exists() and not enc.exists():
        return None
    seed = _read_private(sign, "post-quantum signing key", hint)
    kem = _read_private(enc, "post-quantum encryption key", hint)
    if len(seed) != hy.MLDSA_SEED_SIZE or len(kem) != hy.KEM_PRIVATE_SIZE:
        raise FailedPrecondition(
            f"{sign} must be {hy.MLDSA_SEED_SIZE} and {enc} {hy.KEM_PRIVATE_SIZE} raw bytes"
        )
    return seed, kem


def renew_statement(
    root: Path,
    agency_id: str,
    *,
    statement_days: int = DEFAULT_STATEMENT_DAYS,
    now: datetime | None = None,
) -> AgencyFiles:
    """Re-sign an agency's current keys in a new key statement (serial + 1) valid from now
    for `statement_days` (at most until its certificate expires): the renewal schedule of
    short-lived statements (keys/README.md). The keys do not change; an administrator then
    registers the new statement (broker admin agency rotate-keys)."""
    root = Path(root)
    party = Party("agency", validate_id(agency_id))
    _check_days(statement_days)
    _refuse_revoked(root, party)
    t = _utc_now(now)
    _ca_cert, ca_key = load_ca(root)
    directory = party_directory(root, party)
    files = _agency_files(directory)
    hint = _issue_hint(root, party)
    cert = load_certificate(files.cert)
    serial = _previous_serial(root, party, directory) + 1
    signing = ed25519.Ed25519PrivateKey.from_private_bytes(
        _read_raw_key(files.signing_key, "signing key", hint)
    )
    encryption = x25519.X25519PrivateKey.from_private_bytes(
        _read_raw_key(files.encryption_key, "encryption key", hint)
    )
    start = _to_ms(t)
    statement = notice_pb2.KeyStatement(
        agency_id=party.id,
        signing_key=signing.public_key().public_bytes_raw(),
        encryption_key=encryption.public_key().public_bytes_raw(),
        serial=serial,
        not_before_ms=start,
        not_after_ms=min(_to_ms(cert.not_valid_after_utc), start + statement_days * 86_400_000),
    )
    current = read_statement(files.statement)
    if notice_pb2.KeyStatement.FromString(current.statement).pq_signing_key:
        pq = _read_pq_keys(files, hint)  # the PQ keys renew with the rest
        if pq is None:
            raise FailedPrecondition(
                f"{files.directory} lacks the post-quantum keys of its statement"
            )
        _put_pq_keys(statement, *pq)
    signed = sign_key_statement(ca_key, statement)
    _append_issued(root, t, party, cert, serial)
    _install(directory, {STATEMENT: (signed.SerializeToString(), PUBLIC_MODE)})
    return _agency_files(directory)


def read_statements(root: Path) -> list[notice_pb2.SignedKeyStatement]:
    """Return every current ``agencies/*/statement.bin``, in agency id order, unverified.

    Callers verify (see :func:`broker.core.identity.newest_key_statements`).
    Raises FailedPrecondition for a file that is not a SignedKeyStatement.
    """
    agencies = Path(root) / KIND_DIRS["agency"]
    if not agencies.is_dir():
        return []
    return [read_statement(p) for p in sorted(agencies.glob(f"*/{STATEMENT}"))]
