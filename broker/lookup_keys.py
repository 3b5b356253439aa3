"""A lookup-key service's OPRF key on disk, and its CA-signed statement.

Layout, beside the service's TLS files (``broker keys issue lookup <id>``)::

    <root>/lookups/<id>/oprf.key      OPRF secret scalar skS, 32 raw bytes (0600)
    <root>/lookups/<id>/oprf.pub      SignedLookupKey: pkS signed by the CA (0644)

The key is created once and kept across certificate re-issues: every token in
the broker's index was made with it, so replacing it means re-indexing every
notice (README, "Lookups"). Only the statement is re-signed (serial + 1) when
the certificate is re-issued.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from broker import pki
from broker.core import oprf
from broker.core.identity import Party, validate_id
from broker.core.lookup import lookup_key_signing_input
from broker.errors import FailedPrecondition
from broker.v1 import lookup_pb2

OPRF_KEY: Final = "oprf.key"
OPRF_PUB: Final = "oprf.pub"
STATEMENT_DAYS: Final = 825


def _paths(root: Path, service_id: str) -> tuple[Path, Path]:
    directory = pki.party_directory(Path(root), Party("lookup", validate_id(service_id)))
    return directory / OPRF_KEY, directory / OPRF_PUB


def _sign(root: Path, service_id: str, sk: bytes, serial: int, now: datetime) -> bytes:
    _ca_cert, ca_key = pki.load_ca(root)
    start = now - pki.CLOCK_SKEW
    key = lookup_pb2.LookupKey(
        service=Party("lookup", service_id).uri(),
        suite=oprf.SUITE,
        mode=oprf.MODE_VOPRF,
        public_key=oprf.public_key(sk),
        serial=serial,
        not_before_ms=int(start.timestamp() * 1000),
        not_after_ms=int((now + timedelta(days=STATEMENT_DAYS)).timestamp() * 1000),
    )
    data = key.SerializeToString(deterministic=True)
    signature = ca_key.sign(lookup_key_signing_input(data), ec.ECDSA(hashes.SHA256()))
    return lookup_pb2.SignedLookupKey(key=data, signature=signature).SerializeToString()


def ensure_lookup_key(root: Path, service_id: str, *, now: datetime | None = None) -> Path:
    """Create the service's OPRF key unless it exists, and (re-)sign its statement.

    Needs the CA key. Returns the statement's path.
    """
    root = Path(root)
    t = now or datetime.now(UTC)
    key_path, pub_path = _paths(root, service_id)
    serial = 1
    if key_path.exists():
        sk = load_secret(root, service_id)
        if pub_path.exists():
            serial = read_statement(pub_path).serial + 1
    else:
        pki._make_dir(key_path.parent)
        sk = oprf.random_scalar(os.urandom)
        pki._write_file(key_path, sk, pki.PRIVATE_MODE, exclusive=True)
    pki._write_file(pub_path, _sign(root, service_id, sk, serial, t), pki.PUBLIC_MODE)
    return pub_path


def load_secret(root: Path, service_id: str) -> bytes:
    """The service's OPRF secret scalar; raise NotFound or FailedPrecondition."""
    key_path, _ = _paths(root, service_id)
    hint = f"run `broker keys issue lookup {service_id} --dir {root}`"
    data = pki._read_private(key_path, "OPRF key", hint)
    try:
        oprf.public_key(data)
    except oprf.OprfError as exc:
        raise FailedPrecondition(f"{key_path} is not an OPRF secret key: {exc}") from None
    return data


def read_signed(path: Path) -> lookup_pb2.SignedLookupKey:
    """The SignedLookupKey in ``path`` (unverified)."""
    data = pki._read_file(path, "lookup key statement", "run `broker keys issue lookup <id>`")
    try:
        return lookup_pb2.SignedLookupKey.FromString(data)
    except DecodeError:
        raise FailedPrecondition(f"{path} is not a lookup key statement") from None


def read_statement(path: Path) -> lookup_pb2.LookupKey:
    """The LookupKey inside the statement at ``path`` (unverified)."""
    try:
        return lookup_pb2.LookupKey.FromString(read_signed(path).key)
    except DecodeError:
        raise FailedPrecondition(f"{path} is not a lookup key statement") from None


def load_signed(root: Path, service_id: str) -> lookup_pb2.SignedLookupKey:
    """The service's statement as served by GetKey."""
    return read_signed(_paths(Path(root), service_id)[1])
