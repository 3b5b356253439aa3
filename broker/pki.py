"""Deployment keys on disk: the CA, TLS certificates and agency key statements.

The shell around :mod:`broker.core.identity`: it generates keys, writes and
reads files, and reads the clock. The layout (documented in keys/README.md)::

    <root>/ca/ca.pem                  CA certificate (0644)
    <root>/ca/ca.key                  CA private key (0600), keep offline
    <root>/ca/revoked.txt             revoked party URIs, one a line (0644)
    <root>/ca/issued.log              every issuance: time, URI, cert serial, statement serial
    <root>/<kind>s/<id>/tls.pem       party certificate, URI SAN urn:broker:<kind>:<id>
    <root>/<kind>s/<id>/tls.key       its private key (0600)
    <root>/<kind>s/<id>/ca.pem        copy of the CA certificate, so the directory is self-contained
    <root>/agencies/<id>/signing.key      Ed25519 seed, 32 raw bytes (0600)
    <root>/agencies/<id>/encryption.key   X25519 private key, 32 raw bytes (0600)
    <root>/agencies/<id>/statement.bin    SignedKeyStatement (0644)
    <root>/agencies/<id>/pq-signing.key      ML-DSA-65 seed, 32 raw bytes (0600), hybrid suite only
    <root>/agencies/<id>/pq-encryption.key   ML-KEM-768 seed || X25519 key, 96 raw bytes (0600)
    <root>/brokers/<id>/log.key       transparency-log Ed25519 seed, 32 raw bytes (0600)
    <root>/brokers/<id>/log.pub       its C2SP verifier key string (0644): what auditors trust
    <root>/<kind>s/<id>/old/<label>/  the previous generation, kept on re-issue

Directories are 0700. Every file is written atomically (temporary file,
fsync, rename) with its mode set explicitly, whatever the umask. Loading a
private key that group or others may read is refused.

Errors are BrokerError subclasses whose message says what to do: NotFound
(missing file), FailedPrecondition (CA exists, insecure or corrupt file,
revoked party), InvalidArgument (bad id, name, address or duration).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf.message import DecodeError

from broker.core import hybrid as hy
from broker.core.auditing import log_origin
from broker.core.checkpoint import (
    NoteError,
    Signer,
    Verifier,
    format_verifier_key,
    parse_verifier_key,
)
from broker.core.identity import (
    KEY_SIZE,
    IdentityError,
    Party,
    PartyKind,
    key_statement_signing_input,
    parse_party_uri,
    party_from_certificate,
    validate_id,
    verify_key_statement,
)
from broker.errors import BrokerError, FailedPrecondition, InvalidArgument, NotFound
from broker.v1 import notice_pb2

CA_DIR: Final = "ca"
CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca.key"
REVOKED: Final = "revoked.txt"
ISSUED_LOG: Final = "issued.log"
TLS_CERT: Final = "tls.pem"
TLS_KEY: Final = "tls.key"
PARTY_CA_CERT: Final = "ca.pem"
SIGNING_KEY: Final = "signing.key"
ENCRYPTION_KEY: Final = "encryption.key"
STATEMENT: Final = "statement.bin"
PQ_SIGNING_KEY: Final = "pq-signing.key"  # ML-DSA-65 seed (hybrid suite, docs/post-quantum.md)
PQ_ENCRYPTION_KEY: Final = "pq-encryption.key"  # ML-KEM-768 seed || X25519 private key
LOG_KEY: Final = "log.key"  # brokers/<id>/: transparency-log Ed25519 seed (0600)
LOG_PUB: Final = "log.pub"  # brokers/<id>/: its C2SP verifier key string (0644)
OLD_DIR: Final = "old"

KIND_DIRS: Final[dict[PartyKind, str]] = {
    "agency": "agencies",
    "admin": "admins",
    "auditor": "auditors",
    "broker": "brokers",
    "lookup": "lookups",  # lookup-key services; their OPRF key: broker/lookup_keys.py
}
BROKER_DEFAULT_DNS: Final = ("localhost",)
BROKER_DEFAULT_IPS: Final = ("127.0.0.1", "::1")

PRIVATE_MODE: Final = 0o600
PUBLIC_MODE: Final = 0o644
DIR_MODE: Final = 0o700
# Certificates and statements start this much in the past, so that a peer
# whose clock is a little behind accepts freshly issued credentials.
CLOCK_SKEW: Final = timedelta(minutes=5)

_DNS_RE: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class PartyFiles:
    """Where one party's TLS credentials are."""

    directory: Path
    cert: Path
    key: Path
    ca_cert: Path


@dataclass(frozen=True)
class AgencyFiles(PartyFiles):
    """An agency's TLS credentials plus its signing and encryption keys and statement."""

    signing_key: Path
    encryption_key: Path
    statement: Path


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


# --- paths -------------------------------------------------------------------


def party_directory(root: Path, party: Party) -> Path:
    """Return ``root/<kind>s/<id>``, the directory holding a party's credentials."""
    return Path(root) / KIND_DIRS[party.kind] / party.id


def _party_files(directory: Path) -> PartyFiles:
    return PartyFiles(
        directory=directory,
        cert=directory / TLS_CERT,
        key=directory / TLS_KEY,
        ca_cert=directory / PARTY_CA_CERT,
    )


def _agency_files(directory: Path) -> AgencyFiles:
    return AgencyFiles(
        directory=directory,
        cert=directory / TLS_CERT,
        key=directory / TLS_KEY,
        ca_cert=directory / PARTY_CA_CERT,
        signing_key=directory / SIGNING_KEY,
        encryption_key=directory / ENCRYPTION_KEY,
        statement=directory / STATEMENT,
    )


def _issue_hint(root: Path, party: Party) -> str:
    return f"run `broker keys issue {party.kind} {party.id} --dir {root}`"


# --- file primitives -----------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dir(directory: Path) -> None:
    """Create ``directory`` and any missing parents as 0700; make ``directory`` 0700."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=DIR_MODE)
    if not directory.is_dir():
        raise FailedPrecondition(f"{directory} exists and is not a directory")
    os.chmod(directory, DIR_MODE)


def _write_file(path: Path, data: bytes, mode: int, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically with exactly ``mode``.

    With ``exclusive``, fail with FailedPrecondition if ``path`` exists
    (checked atomically by linking rather than renaming).
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we want
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FailedPrecondition(
                    f"{path} already exists; refusing to overwrite it"
                ) from None
            tmp.unlink()
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _read_file(path: Path, what: str, hint: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{what} not found: {path} ({hint})") from None
    except IsADirectoryError:
        raise FailedPrecondition(f"{what} {path} is a directory, not a file") from None
    except PermissionError:
        raise FailedPrecondition(f"cannot read {what} {path}: permission denied") from None


def _read_private(path: Path, what: str, hint: str) -> bytes:
    """Read a private key file, refusing one that group or others may access."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{what} not found: {path} ({hint})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FailedPrecondition(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise FailedPrecondition(
            f"{what} {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it. "
            f"Run: chmod 600 {path}"
        )
    return _read_file(path, what, hint)


# --- time and validation -----------------------------------------------------------


def _utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidArgument("`now` must be a timezone-aware datetime")
    return now.astimezone(UTC)


def _to_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidArgument(f"validity must be a whole number of days >= 1, got {days!r}")


def subject_alt_names(
    party: Party, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = ()
) -> list[x509.GeneralName]:
    """Return the SANs a certificate for ``party`` gets: its URI, then DNS and IP names.

    A broker or lookup-key service (both are servers) given no DNS or IP names gets
    ``localhost``, ``127.0.0.1`` and ``::1``. Raises InvalidArgument for a malformed
    name or address.
    """
    if party.kind in ("broker", "lookup") and not dns_names and not ip_addresses:
        dns_names, ip_addresses = BROKER_DEFAULT_DNS, BROKER_DEFAULT_IPS
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(party.uri())]
    dns_seen: dict[str, None] = {}
    for dns in dns_names:
        if not isinstance(dns, str) or _DNS_RE.fullmatch(dns) is None:
            raise InvalidArgument(f"invalid DNS name {dns!r}: use a host name like broker.example")
        dns_seen[dns.lower()] = None
    ip_seen: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, None] = {}
    for ip in ip_addresses:
        try:
            ip_seen[ipaddress.ip_address(ip)] = None
        except ValueError:
            raise InvalidArgument(
                f"invalid IP address {ip!r}: use IPv4 or IPv6 like 127.0.0.1 or ::1"
            ) from None
    names += [x509.DNSName(d) for d in dns_seen]
    names += [x509.IPAddress(i) for i in ip_seen]
    return names


# --- the CA -----------------------------------------------------------------------


def ca_public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    """Return the CA's public key (EC P-256), for :func:`verify_key_statement`.

    Raises FailedPrecondition if the certificate holds another kind of key.
    """
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise FailedPrecondition("the CA certificate does not hold an EC P-256 key")
    return key


def generate_ca(
    root: Path,
    *,
    name: str = "Sealed Notice Broker CA",
    now: datetime | None = None,
    days: int = 3650,
) -> Path:
    """Create a deployment CA (EC P-256, self-signed) under ``root/ca``.

    Writes ``ca.key`` (0600) and ``ca.pem`` (0644) and returns the path of
    ``ca.pem``. Raises FailedPrecondition if a CA already exists there: every
    certificate and statement hangs off it, so it is never overwritten.
    """
    root = Path(root)
    _check_days(days)
    if not name or not name.strip() or len(name) > 64:
        raise InvalidArgument("CA name must be 1 to 64 characters")
    t = _utc_now(now)
    ca_dir = root / CA_DIR
    if (ca_dir / CA_KEY).exists() or (ca_dir / CA_CERT).exists():
        raise FailedPrecondition(
            f"a CA already exists in {ca_dir}; refusing to overwrite it (every certificate and "
            f"key statement depends on it). To start over, move {ca_dir} away first."
        )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(t - CLOCK_SKEW)
        .not_valid_after(t + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,  # signs key statements
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _make_dir(ca_dir)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(ca_dir / CA_KEY, key_pem, PRIVATE_MODE, exclusive=True)
    _write_file(
        ca_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE, exclusive=True
    )
    return ca_dir / CA_CERT


def _load_ca_certificate(path: Path, hint: str) -> x509.Certificate:
    data = _read_file(path, "CA certificate", hint)
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise FailedPrecondition(f"{path} is not a PEM certificate") from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise FailedPrecondition(f"{path} is not a CA certificate")
    ca_public_key(cert)
    return cert


def load_ca_certificate(path: Path) -> x509.Certificate:
    """Load a CA certificate (PEM) such as ``ca/ca.pem`` or a party's ``ca.pem``.

    Raises NotFound if missing, FailedPrecondition if it is not an EC P-256 CA
    certificate.
    """
    return _load_ca_certificate(
        Path(path), "run `broker keys init`, or copy the deployment's ca.pem there"
    )


def load_ca(root: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the CA certificate and private key from ``root/ca``.

    Raises NotFound if missing (run `broker keys init`), FailedPrecondition if
    the key file is group/world accessible (chmod 600) or does not match the
    certificate.
    """
    ca_dir = Path(root) / CA_DIR
    hint = f"run `broker keys init --dir {root}`, or point --dir at the keys directory"
    key_path = ca_dir / CA_KEY
    key_pem = _read_private(key_path, "CA private key", hint)
    cert = _load_ca_certificate(ca_dir / CA_CERT, hint)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise FailedPrecondition(f"{key_path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise FailedPrecondition(f"{key_path} is not an EC P-256 private key")
    if key.public_key() != ca_public_key(cert):
        raise FailedPrecondition(f"{key_path} does not match the CA certificate {ca_dir / CA_CERT}")
    return cert, key


# --- revocation -----------------------------------------------------------------------

_REVOKED_HEADER: Final = (
    "# Revoked broker parties, one URI a line (urn:broker:<kind>:<id>).\n"
    "# The broker refuses connections and key statements from these parties.\n"
)


def revoked_parties(root: Path) -> frozenset[str]:
    """Return the URIs listed in ``root/ca/revoked.txt`` (empty if there is none).

    Blank lines and ``#`` comments are ignored. A malformed line raises
    FailedPrecondition: a typo must not silently un-revoke someone.
    """
    path = Path(root) / CA_DIR / REVOKED
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return frozenset()
    except UnicodeDecodeError as exc:
        raise FailedPrecondition(f"{path}:1:1: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:  # a directory, no permission, an I/O error: never "nobody revoked"
        raise FailedPrecondition(
            f"cannot read the revocation list {path}: {exc.strerror or exc}"
        ) from None
    uris: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        column = len(raw) - len(raw.lstrip()) + 1
        try:
            uris.add(parse_party_uri(line).uri())
        except IdentityError as exc:
            raise FailedPrecondition(
                f"{path}:{lineno}:{column}: {exc}; write one party URI a line, "
                "such as urn:broker:agency:FR-NCB"
            ) from None
    return frozenset(uris)


def revoke(root: Path, party: Party) -> None:
    """Record ``party`` as revoked in ``root/ca/revoked.txt`` (idempotent).

    The broker refuses revoked parties at connection time and ignores their key
    statements; there is no CRL or OCSP (out of scope, see keys/README.md).
    """
    ca_dir = Path(root) / CA_DIR
    if not ca_dir.is_dir():
        raise NotFound(f"no CA directory at {ca_dir}: run `broker keys init --dir {root}` first")
    if party.uri() in revoked_parties(root):
        return
    path = ca_dir / REVOKED
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = _REVOKED_HEADER
    if text and not text.endswith("\n"):
        text += "\n"
    _write_file(path, (text + party.uri() + "\n").encode(), PUBLIC_MODE)


def _refuse_revoked(root: Path, party: Party) -> None:
    if party.uri() in revoked_parties(root):
        raise FailedPrecondition(
            f"{party.uri()} is revoked (listed in {Path(root) / CA_DIR / REVOKED}); "
            "to reinstate it deliberately, delete that line first"
        )


# --- issuing -------------------------------------------------------------------------


def _build_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    party: Party,
    *,
    names: list[x509.GeneralName],
    days: int,
    t: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(t + timedelta(days=days), ca_cert.not_valid_after_utc)
    if not_after <= t:
        raise FailedPrecondition("the CA certificate has expired; create a new deployment CA")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, party.kind),
            x509.NameAttribute(NameOID.COMMON_NAME, party.id),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(t - CLOCK_SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public_key(ca_cert)),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _archive_label(directory: Path) -> str:
    """Name the generation about to be replaced: its statement serial or cert serial."""
    with contextlib.suppress(BrokerError, ValueError):
        serial = _statement_serial(directory / STATEMENT)
        if serial:
            return f"statement-{serial}"
    with contextlib.suppress(OSError, ValueError):
        cert = x509.load_pem_x509_certificate((directory / TLS_CERT).read_bytes())
        return f"cert-{cert.serial_number:x}"
    return "unknown-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _install(directory: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Write ``files`` into ``directory``, first copying any it replaces into old/<label>/."""
    _make_dir(directory)
    existing = [name for name in files if (directory / name).is_file()]
    if existing:
        label = _archive_label(directory)
        old = directory / OLD_DIR / label
        n = 1
        while old.exists():
            n += 1
            old = directory / OLD_DIR / f"{label}.{n}"
        _make_dir(directory / OLD_DIR)
        _make_dir(old)
        for name in existing:
            src = directory / name
            _write_file(old / name, src.read_bytes(), stat.S_IMODE(os.stat(src).st_mode))
    for name, (data, mode) in files.items():
        _write_file(directory / name, data, mode)


def _tls_files(
    ca_cert: x509.Certificate, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> dict[str, tuple[bytes, int]]:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        TLS_KEY: (key_pem, PRIVATE_MODE),
        TLS_CERT: (cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE),
        PARTY_CA_CERT: (ca_cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE),
    }


def issue_certificate(
    root: Path,
    party: Party,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = 825,
    now: datetime | None = None,
) -> PartyFiles:
    """Issue a TLS certificate for ``party`` into ``root/<kind>s/<id>/``.

    The certificate (EC P-256, serverAuth + clientAuth) names the party by its
    URI SAN, plus the given DNS and IP SANs; a broker given neither gets
    ``localhost``, ``127.0.0.1`` and ``::1``. Re-issuing is rotation: the
    previous files are copied to ``old/<label>/`` and replaced.

    For an agency this writes only the TLS files; use :func:`issue_agency` to
    also create its signing and encryption keys and key statement.

    Raises NotFound (no CA), FailedPrecondition (revoked party, insecure CA
    key), InvalidArgument (bad name, address or duration).
    """
    root = Path(root)
    _check_days(days)
    t = _utc_now(now)
    names = subject_alt_names(party, dns_names, ip_addresses)
    _refuse_revoked(root, party)
    ca_cert, ca_key = load_ca(root)
    cert, key = _build_certificate(ca_cert, ca_key, party, names=names, days=days, t=t)
    directory = party_directory(root, party)
    _append_issued(root, t, party, cert, 0)
    _install(directory, _tls_files(ca_cert, cert, key))
    if party.kind == "broker":  # transparency log: a broker also gets its log key, once
        ensure_log_key(root, party.id)
    return _party_files(directory)


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


def read_statement(path: Path) -> notice_pb2.SignedKeyStatement:
    """Read one ``statement.bin``, unverified; raise NotFound or FailedPrecondition."""
    path = Path(path)
    data = _read_file(path, "key statement", "run `broker keys rotate agency <id>`")
    try:
        signed = notice_pb2.SignedKeyStatement.FromString(data)
    except DecodeError:
        raise FailedPrecondition(f"{path} is not a SignedKeyStatement") from None
    if not signed.statement or not signed.signature:
        raise FailedPrecondition(f"{path} is not a SignedKeyStatement")
    return signed


def unverified_statement_serial(signed: notice_pb2.SignedKeyStatement) -> int:
    """Return the serial a statement claims, WITHOUT verifying it.

    Only for numbering the next statement and for display; anything that
    trusts a statement must use :func:`verify_key_statement`.
    Raises FailedPrecondition if the bytes are not a KeyStatement.
    """
    try:
        return notice_pb2.KeyStatement.FromString(signed.statement).serial
    except DecodeError:
        raise FailedPrecondition("signed key statement bytes are not a KeyStatement") from None


def _statement_serial(path: Path) -> int:
    """Serial of the statement in ``path``, 0 if there is none (unverified)."""
    if not path.exists():
        return 0
    try:
        return unverified_statement_serial(read_statement(path))
    except FailedPrecondition as exc:
        raise FailedPrecondition(f"{path}: {exc}") from None


def _append_issued(
    root: Path, t: datetime, party: Party, cert: x509.Certificate, serial: int
) -> None:
    """Append one line to ``ca/issued.log``: time, URI, certificate serial, statement serial."""
    line = f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')} {party.uri()} cert={cert.serial_number:x}"
    if serial:
        line += f" statement={serial}"
    path = Path(root) / CA_DIR / ISSUED_LOG
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, PUBLIC_MODE)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _logged_serial(root: Path, party: Party) -> int:
    """Highest statement serial ``ca/issued.log`` records for ``party`` (0 if none)."""
    try:
        text = (Path(root) / CA_DIR / ISSUED_LOG).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return 0
    serial = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == party.uri() and fields[3].startswith("statement="):
            with contextlib.suppress(ValueError):
                serial = max(serial, int(fields[3].removeprefix("statement=")))
    return serial


def _previous_serial(root: Path, party: Party, directory: Path) -> int:
    """Highest statement serial ever issued for this agency.

    The maximum over the CA's issuance log and the agency directory (current
    and archived statements), so a lost file never makes a serial repeat.
    """
    serial = max(_logged_serial(root, party), _statement_serial(directory / STATEMENT))
    old = directory / OLD_DIR
    if old.is_dir():
        for path in old.glob(f"*/{STATEMENT}"):
            serial = max(serial, _statement_serial(path))
    return serial


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


# --- loading ---------------------------------------------------------------------------


def load_certificate(path: Path) -> x509.Certificate:
    """Load a PEM certificate; raise NotFound or FailedPrecondition."""
    path = Path(path)
    data = _read_file(path, "certificate", "issue it with `broker keys issue`")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise FailedPrecondition(f"{path} is not a PEM certificate") from None


def certificate_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """Return the DNS and IP SANs of a certificate (not its URI), as strings."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = list(san.get_values_for_type(x509.DNSName))
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns, ips


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


def _read_raw_key(path: Path, what: str, hint: str) -> bytes:
    data = _read_private(path, what, hint)
    if len(data) != KEY_SIZE:
        raise FailedPrecondition(f"{what} {path} must be {KEY_SIZE} raw bytes, not {len(data)}")
    return data


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


def read_statements(root: Path) -> list[notice_pb2.SignedKeyStatement]:
    """Return every current ``agencies/*/statement.bin``, in agency id order, unverified.

    Callers verify (see :func:`broker.core.identity.newest_key_statements`).
    Raises FailedPrecondition for a file that is not a SignedKeyStatement.
    """
    agencies = Path(root) / KIND_DIRS["agency"]
    if not agencies.is_dir():
        return []
    return [read_statement(p) for p in sorted(agencies.glob(f"*/{STATEMENT}"))]


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


# --- the broker's transparency-log key -----------------------------------------------


def ensure_log_key(root: Path, broker_id: str) -> Path:
    """Create the broker's transparency-log signing key unless it exists; return log.pub.

    ``brokers/<id>/log.key`` is a raw 32-byte Ed25519 seed (0600) and
    ``log.pub`` its C2SP verifier key string ``<origin>+<key id>+<base64>``
    (0644), the key name being the checkpoint origin
    ``sealed-notice-broker/<id>``. An existing key is never replaced:
    auditors trust checkpoints by it (a missing log.pub is rewritten from it).
    """
    party = Party("broker", validate_id(broker_id))
    directory = party_directory(Path(root), party)
    key_path, pub_path = directory / LOG_KEY, directory / LOG_PUB
    if key_path.exists():
        signer = load_log_signer(root, broker_id)
        if not pub_path.exists():
            _write_file(pub_path, _verifier_line(signer.verifier), PUBLIC_MODE)
        return pub_path
    _make_dir(directory)
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
    _write_file(key_path, seed, PRIVATE_MODE, exclusive=True)
    signer = Signer(log_origin(party.id), seed)
    _write_file(pub_path, _verifier_line(signer.verifier), PUBLIC_MODE)
    return pub_path


def _verifier_line(verifier: Verifier) -> bytes:
    return (format_verifier_key(verifier.name, verifier.public_key) + "\n").encode()


def load_log_signer(root: Path, broker_id: str) -> Signer:
    """Load the broker's transparency-log signer (name = checkpoint origin).

    Raises NotFound (no key: re-issue the broker certificate, which creates
    one) or FailedPrecondition (group/world readable, wrong size).
    """
    party = Party("broker", validate_id(broker_id))
    path = party_directory(Path(root), party) / LOG_KEY
    hint = f"run `broker keys issue broker {party.id} --dir {root}` to create it"
    seed = _read_raw_key(path, "transparency-log key", hint)
    return Signer(log_origin(party.id), seed)


def load_log_verifier(path: Path) -> Verifier:
    """Read a C2SP verifier key string (e.g. ``brokers/<id>/log.pub``).

    Raises NotFound or FailedPrecondition (not a verifier key).
    """
    path = Path(path)
    data = _read_file(path, "log verifier key", "copy the broker's log.pub there")
    try:
        return parse_verifier_key(data.decode("utf-8").strip())
    except (UnicodeDecodeError, NoteError) as exc:
        raise FailedPrecondition(f"{path} is not a verifier key: {exc}") from None
