"""Who is calling: the party named by the URI SAN of the mutual-TLS client certificate."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import grpc
from cryptography import x509

from broker.core.identity import IdentityError, Party, party_from_certificate
from broker.errors import PermissionDenied, Unauthenticated
from broker.server import oplog


@lru_cache(maxsize=1024)
def _party_of_pem(pem: bytes) -> Party:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise Unauthenticated("client certificate could not be read") from exc
    return party_from_certificate(cert)


def caller(context: grpc.aio.ServicerContext[Any, Any], revoked: frozenset[str]) -> Party:
    """Return the authenticated caller. Raises Unauthenticated.

    The TLS layer has already verified the chain against the deployment CA
    (require_client_auth); here the party is read from the certificate and
    checked against the revocation list.
    """
    try:
        return _caller(context, revoked)
    except Unauthenticated as exc:
        party = getattr(exc, "party", "")
        oplog.caller_refused(str(context.peer() or ""), party, str(exc))
        raise


def _caller(context: grpc.aio.ServicerContext[Any, Any], revoked: frozenset[str]) -> Party:
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        raise Unauthenticated("a client certificate issued by the deployment CA is required")
    try:
        party = _party_of_pem(bytes(pems[0]))
    except IdentityError as exc:
        raise Unauthenticated(str(exc)) from exc
    if party.uri() in revoked:
        refused = Unauthenticated(f"{party.uri()} has been revoked")
        refused.party = party.uri()  # type: ignore[attr-defined]
        raise refused
    return party


def require_agency(party: Party) -> str:
    """Return the agency id of `party`; raise for admins, auditors and brokers."""
    if party.kind != "agency":
        raise PermissionDenied(f"{party.uri()} is not an agency; AgencyService is for agencies")
    return party.id


def require_registered(agency: str, registry: Mapping[str, object]) -> str:
    """Return `agency` if the registry knows it; a certificate of the deployment CA alone
    does not make an agency (it may be awaiting registration, or its key statement may
    no longer be valid). Raises PermissionDenied."""
    if agency not in registry:
        raise PermissionDenied(
            f"{agency} is not in the agency registry: an administrator must register it"
        )
    return agency
