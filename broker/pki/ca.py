"""The deployment CA and TLS certificates: generation, loading, issuance, revocation.

Part of :mod:`broker.pki` (its docstring has the layout and the error rules)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import stat
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.core.identity import (
    IdentityError,
    Party,
    parse_party_uri,
)
from broker.errors import BrokerError, FailedPrecondition, InvalidArgument, NotFound
from broker.pki.files import (
    BROKER_DEFAULT_DNS,
    BROKER_DEFAULT_IPS,
    CA_CERT,
    CA_DIR,
    CA_KEY,
    CLOCK_SKEW,
    OLD_DIR,
    PARTY_CA_CERT,
    PRIVATE_MODE,
    PUBLIC_MODE,
    REVOKED,
    STATEMENT,
    TLS_CERT,
    TLS_KEY,
    PartyFiles,
    _check_days,
    _make_dir,
    _party_files,
    _read_file,
    _read_private,
    _utc_now,
    _write_file,
    party_directory,
)
from broker.pki.logkeys import (
    ensure_log_key,
)
from broker.pki.serials import (
    _append_issued,
    _statement_serial,
)

_DNS_RE: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


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
