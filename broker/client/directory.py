"""What a node knows of the other agencies, verified once and kept.

A node resolves audiences itself: under the administrator-signed policy bundle,
over the administrator-signed registry entries of every agency, with each
agency's keys from its CA-signed key statement. The broker serves all of it
(GetActivePolicy, GetDirectory) but can forge none of it.

Verifying a signed entry costs an X.509 parse and two ECDSA P-256 verifications,
a key statement one; doing that for every recipient of every notice was most of
a publisher's work. `Verified` keeps each signed object's verification by its
exact bytes, and checks only its validity window again on every use (a
certificate or statement that expired since is refused as before). `View` is
one verified directory: profiles, keys and entries by agency id, with the
digest the broker gave it, so a node refreshes only when the broker reports
another digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker.core import activation as act
from broker.core.identity import AgencyKeys, IdentityError, verify_key_statement
from broker.core.policy import AgencyProfile, Bundle
from broker.v1 import admin_pb2, notice_pb2

__all__ = ["Member", "Verified", "View"]

MAX_CACHED = 8192
_V = TypeVar("_V")


@dataclass(frozen=True)
class Member:
    """One agency as the signed registry and the CA describe it."""

    profile: AgencyProfile
    keys: AgencyKeys
    entry: admin_pb2.AgencyEntry
    statement: notice_pb2.SignedKeyStatement
    signed_entry: admin_pb2.SignedAgencyEntry


@dataclass(frozen=True)
class View:
    """A verified directory under one signed policy."""

    digest: str
    policy: Bundle
    members: Mapping[str, Member]
    profiles: tuple[AgencyProfile, ...]  # every member's profile, one stable tuple
    excluded: Mapping[str, str]  # agency id -> why this node will not seal for it


@dataclass(frozen=True)
class _Entry:
    verified: act.VerifiedEntry
    not_before_ms: int
    not_after_ms: int


class Verified:
    """Verifications of signed objects, kept by their bytes, windows checked on each use."""

    def __init__(self, ca_certificate: x509.Certificate, ca_key: EllipticCurvePublicKey) -> None:
        self.ca_certificate = ca_certificate
        self.ca_key = ca_key
        self._statements: dict[bytes, AgencyKeys] = {}
        self._entries: dict[bytes, _Entry] = {}

    def statement(
        self, signed: notice_pb2.SignedKeyStatement, now_ms: int, expected_agency: str
    ) -> AgencyKeys:
        """The keys a CA-signed statement binds; raises IdentityError as
        verify_key_statement does (also once it has expired since it was first seen)."""
        cache_key = signed.statement + b"\x00" + signed.signature
        keys = self._statements.get(cache_key)
        if keys is None:
            keys = verify_key_statement(signed, self.ca_key, now_ms, expected_agency)
            _bounded(self._statements)[cache_key] = keys
        if keys.agency_id != expected_agency:
            raise IdentityError(
                f"key statement for agency {keys.agency_id!r} is not for {expected_agency!r}"
            )
        if not keys.not_before_ms <= now_ms < keys.not_after_ms:
            raise IdentityError(
                f"key statement for agency {keys.agency_id!r} (serial {keys.serial}) "
                "is not valid now"
            )
        return keys

    def entry(self, signed: admin_pb2.SignedAgencyEntry, now_ms: int) -> act.VerifiedEntry:
        """An administrator-signed registry entry; raises ActivationError as
        verify_agency_entry does (also once the administrator's certificate expired)."""
        cache_key = signed.entry + b"\x00" + signed.signature + b"\x00" + signed.admin_certificate
        got = self._entries.get(cache_key)
        if got is None:
            verified = act.verify_agency_entry(signed, self.ca_certificate, now_ms)
            cert = x509.load_pem_x509_certificate(signed.admin_certificate)
            got = _Entry(
                verified,
                int(cert.not_valid_before_utc.timestamp() * 1000),
                int(cert.not_valid_after_utc.timestamp() * 1000),
            )
            _bounded(self._entries)[cache_key] = got
        if not got.not_before_ms <= now_ms <= got.not_after_ms:
            raise act.ActivationError("the administrator certificate is not valid now")
        return got.verified


def _bounded(cache: dict[bytes, _V]) -> dict[bytes, _V]:
    if len(cache) >= MAX_CACHED:
        cache.clear()  # rare: a directory far larger than any deployment; start over
    return cache


def profile_of(entry: admin_pb2.AgencyEntry) -> AgencyProfile:
    return AgencyProfile(
        id=entry.id,
        country=entry.country,
        roles=frozenset(entry.roles),
        groups=frozenset(entry.groups),
        purposes=frozenset(entry.purposes),
        status=entry.status,
    )
