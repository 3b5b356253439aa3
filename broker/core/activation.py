"""Policy bundles on the wire, and administrator-signed activations.

An activation names a bundle version (SHA-256 of its canonical bytes) and is
signed with the administrator's CA-certified P-256 key: the certificate travels
with the signature, so anyone holding the deployment CA certificate (the
broker, every agency node, an auditor) can check offline who activated which
bundle, and a broker cannot present a bundle no administrator activated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from broker.core import bounds
from broker.core.identity import IdentityError, Party, party_from_certificate
from broker.errors import InvalidArgument, PermissionDenied
from broker.v1 import admin_pb2

ACTIVATION_CONTEXT = b"broker.v1 policy activation\x00"
MAX_BUNDLE_FILES = 256
MAX_BUNDLE_BYTES = 4 * 1024 * 1024
_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\.toml$")


class ActivationError(PermissionDenied):
    """An activation that does not verify: not signed by a CA-certified administrator."""


def bundle_files(bundle: admin_pb2.PolicyBundle) -> dict[str, bytes]:
    """Return {path: content} of a bundle; raise InvalidArgument for unsafe or duplicate paths."""
    if len(bundle.files) > MAX_BUNDLE_FILES:
        raise InvalidArgument(f"a bundle holds at most {MAX_BUNDLE_FILES} files")
    files: dict[str, bytes] = {}
    total = 0
    for f in bundle.files:
        if not _PATH.match(f.path) or ".." in f.path.split("/"):
            raise InvalidArgument(f"bundle path {f.path!r} must be a relative path to a .toml file")
        if f.path in files:
            raise InvalidArgument(f"bundle path {f.path!r} appears twice")
        total += len(f.content)
        files[f.path] = f.content
    if total > MAX_BUNDLE_BYTES:
        raise InvalidArgument(f"a bundle holds at most {MAX_BUNDLE_BYTES} bytes")
    return files


def bundle_message(files: Mapping[str, bytes]) -> admin_pb2.PolicyBundle:
    """Return the wire form of a bundle, files sorted by path."""
    return admin_pb2.PolicyBundle(
        files=[admin_pb2.BundleFile(path=p, content=files[p]) for p in sorted(files)]
    )


def activation_message(activation: bytes) -> bytes:
    """The bytes an administrator signs."""
    return ACTIVATION_CONTEXT + activation


ENTRY_CONTEXT = b"broker.v1 agency entry\x00"


def entry_message(entry: bytes) -> bytes:
    """The bytes an administrator signs for a registry entry."""
    return ENTRY_CONTEXT + entry


def verify_admin_signature(
    certificate_pem: bytes,
    signature: bytes,
    message: bytes,
    ca_certificate: x509.Certificate,
    now_ms: int,
) -> Party:
    """Return the administrator who signed `message`.

    Checks that the certificate was issued by the CA, is valid at `now_ms` and
    names an administrator, and that its P-256 key made the signature. Raises
    ActivationError saying which check failed.
    """
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError as exc:
        raise ActivationError("no readable administrator certificate") from exc
    try:
        cert.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ActivationError(
            "the administrator certificate was not issued by the deployment CA"
        ) from exc
    not_before = int(cert.not_valid_before_utc.timestamp() * 1000)
    not_after = int(cert.not_valid_after_utc.timestamp() * 1000)
    if not not_before <= now_ms <= not_after:
        raise ActivationError("the administrator certificate is not valid now")
    try:
        party = party_from_certificate(cert)
    except IdentityError as exc:
        raise ActivationError(f"administrator certificate: {exc}") from exc
    if party.kind != "admin":
        raise ActivationError(f"{party.uri()} is not an administrator")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ActivationError("the administrator key must be EC P-256")
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise ActivationError("the administrator's signature does not verify") from exc
    return party


@dataclass(frozen=True)
class VerifiedActivation:
    activation: admin_pb2.PolicyActivation
    admin: Party


def verify_activation(
    signed: admin_pb2.SignedPolicyActivation,
    ca_certificate: x509.Certificate,
    now_ms: int,
    *,
    expected_version: str | None = None,
) -> VerifiedActivation:
    """Check that a CA-certified administrator signed this activation (and names
    `expected_version`). Raises ActivationError saying which check failed."""
    party = verify_admin_signature(
        signed.admin_certificate,
        signed.signature,
        activation_message(signed.activation),
        ca_certificate,
        now_ms,
    )
    activation = admin_pb2.PolicyActivation()
    try:
        activation.ParseFromString(signed.activation)
    except DecodeError as exc:
        raise ActivationError("the signed activation is not a PolicyActivation") from exc
    bounds.check(activation, "activation")
    if activation.admin != party.id:
        raise ActivationError(
            f"the activation names {activation.admin!r} but was signed by {party.id!r}"
        )
    if expected_version is not None and activation.version != expected_version:
        raise ActivationError(
            f"the activation is for bundle {activation.version[:12]}, not {expected_version[:12]}"
        )
    return VerifiedActivation(activation, party)


@dataclass(frozen=True)
class VerifiedEntry:
    entry: admin_pb2.AgencyEntry
    admin: Party


def verify_agency_entry(
    signed: admin_pb2.SignedAgencyEntry, ca_certificate: x509.Certificate, now_ms: int
) -> VerifiedEntry:
    """Check that a CA-certified administrator signed this registry entry; return it.

    Raises ActivationError saying which check failed.
    """
    party = verify_admin_signature(
        signed.admin_certificate,
        signed.signature,
        entry_message(signed.entry),
        ca_certificate,
        now_ms,
    )
    entry = admin_pb2.AgencyEntry()
    try:
        entry.ParseFromString(signed.entry)
    except DecodeError as exc:
        raise ActivationError("the signed entry is not an AgencyEntry") from exc
    bounds.check(entry, "entry")
    return VerifiedEntry(entry, party)
