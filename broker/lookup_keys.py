"""A lookup-key service's OPRF key on disk, and its CA-signed statement.

Layout, beside the service's TLS files (``broker keys issue lookup <id>``)::

    <root>/lookups/<id>/oprf.key      OPRF secret scalar skS, 32 raw bytes (0600)
    <root>/lookups/<id>/oprf.pub      SignedLookupKey: pkS signed by the CA (0644)

A deployment may instead deal a key as t-of-n shares to several services
(:func:`deal_shares`, ``broker keys deal-lookup-shares``); each holder's files look
the same, its statement also naming its index, t, n and the group key.

The key is created once and kept across certificate re-issues: every token in
the broker's index was made with it, so replacing it means re-indexing every
notice (README, "Lookups"). Only the statement is re-signed (serial + 1) when
the certificate is re-issued.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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
from broker.core.threshold import split as threshold_split
from broker.errors import FailedPrecondition, InvalidArgument
from broker.v1 import lookup_pb2

OPRF_KEY: Final = "oprf.key"
OPRF_PUB: Final = "oprf.pub"
STATEMENT_DAYS: Final = 825


def _paths(root: Path, service_id: str) -> tuple[Path, Path]:
    directory = pki.party_directory(Path(root), Party("lookup", validate_id(service_id)))
    return directory / OPRF_KEY, directory / OPRF_PUB


def _sign(
    root: Path,
    service_id: str,
    sk: bytes,
    serial: int,
    now: datetime,
    share: lookup_pb2.LookupKey | None = None,
) -> bytes:
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
    if share is not None and share.share_index:  # a threshold holder stays one
        key.share_index, key.threshold = share.share_index, share.threshold
        key.holders, key.group_public_key = share.holders, share.group_public_key
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
    previous = None
    if key_path.exists():
        sk = load_secret(root, service_id)
        if pub_path.exists():
            previous = read_statement(pub_path)
            serial = previous.serial + 1
    else:
        pki._make_dir(key_path.parent)
        sk = oprf.random_scalar(os.urandom)
        pki._write_file(key_path, sk, pki.PRIVATE_MODE, exclusive=True)
    statement = _sign(root, service_id, sk, serial, t, previous)
    pki._write_file(pub_path, statement, pki.PUBLIC_MODE)
    return pub_path


def deal_shares(
    root: Path, service_ids: Sequence[str], threshold: int, *, now: datetime | None = None
) -> list[Path]:
    """Deal a fresh OPRF key as t-of-n Shamir shares to lookup-key services that have
    certificates but no OPRF key yet; the whole key exists only in this call.

    Holder i (1-based, in the order given) gets ``oprf.key`` = k_i and a statement
    naming its index, t, n and the group key. Raises FailedPrecondition when a service
    already has a key (shares are dealt once) or has no certificate.
    """
    root = Path(root)
    t = now or datetime.now(UTC)
    if len(set(service_ids)) != len(service_ids):
        raise InvalidArgument("name each lookup-key holder once")
    paths = [_paths(root, sid) for sid in service_ids]
    for sid, (key_path, _pub) in zip(service_ids, paths, strict=True):
        if key_path.exists():
            raise FailedPrecondition(f"{key_path} exists: shares are dealt once, to new holders")
        if not (key_path.parent / pki.TLS_CERT).exists():
            raise FailedPrecondition(
                f"no certificate for urn:broker:lookup:{sid}: run `broker keys issue lookup {sid}`"
            )
    secret = oprf.random_scalar(os.urandom)
    group_key = oprf.public_key(secret)
    shares = threshold_split(secret, threshold, len(service_ids), os.urandom)
    del secret
    written = []
    for i, (sid, (key_path, pub_path)) in enumerate(zip(service_ids, paths, strict=True), 1):
        share = lookup_pb2.LookupKey(
            share_index=i, threshold=threshold, holders=len(service_ids), group_public_key=group_key
        )
        pki._write_file(key_path, shares[i], pki.PRIVATE_MODE, exclusive=True)
        pki._write_file(pub_path, _sign(root, sid, shares[i], 1, t, share), pki.PUBLIC_MODE)
        written.append(pub_path)
    return written


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
