"""The agency registry file (registry.toml) joined with CA-signed key statements."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker.core.identity import newest_key_statements, validate_id
from broker.core.policy import AgencyProfile
from broker.core.policy.model import AGENCY_STATUSES
from broker.core.relay import RegisteredAgency
from broker.errors import InvalidArgument
from broker.v1 import notice_pb2


def _strings(path: Path, where: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidArgument(f"{path}: {where} must be a list of strings")
    return frozenset(value)


def parse_registry(path: Path) -> dict[str, AgencyProfile]:
    """Read registry.toml: one [agencies.<ID>] table per agency."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidArgument(f"registry file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{path}: {exc}") from exc
    profiles = {}
    for agency_id, entry in doc.get("agencies", {}).items():
        validate_id(agency_id)
        where = f"agencies.{agency_id}"
        if not isinstance(entry, dict) or not isinstance(entry.get("country"), str):
            raise InvalidArgument(f"{path}: {where} needs a country (ISO 3166-1 alpha-2)")
        status = entry.get("status", "active")
        if status not in AGENCY_STATUSES:
            raise InvalidArgument(f"{path}: {where}.status must be one of {AGENCY_STATUSES}")
        profiles[agency_id] = AgencyProfile(
            id=agency_id,
            country=entry["country"],
            roles=_strings(path, f"{where}.roles", entry.get("roles", [])),
            groups=_strings(path, f"{where}.groups", entry.get("groups", [])),
            purposes=_strings(path, f"{where}.purposes", entry.get("purposes", [])),
            status=status,
        )
    if not profiles:
        raise InvalidArgument(f"{path}: no [agencies.<ID>] entries")
    return profiles


def join_statements(
    profiles: dict[str, AgencyProfile],
    statements: Iterable[notice_pb2.SignedKeyStatement],
    ca_key: EllipticCurvePublicKey,
    now_ms: int,
    revoked: Iterable[str] = (),
) -> dict[str, RegisteredAgency]:
    """Bind each profile to its newest valid CA-signed key statement.

    Statements of revoked agencies are never used. Raises InvalidArgument for a
    registered agency without a valid statement, IdentityError when the CA
    signed two conflicting statements with one serial.
    """
    statements = list(statements)
    newest = newest_key_statements(statements, ca_key, now_ms, revoked=revoked)
    signed_by = {
        (_statement_of(s).agency_id, _statement_of(s).serial): s.SerializeToString()
        for s in statements
    }
    out = {}
    for agency_id, profile in profiles.items():
        keys = newest.get(agency_id)
        if keys is None:
            raise InvalidArgument(
                f"agency {agency_id} has no valid CA-signed key statement (missing, expired "
                f"or revoked): run `broker keys issue agency {agency_id}`"
            )
        out[agency_id] = RegisteredAgency(
            profile, keys.signing_key, keys.encryption_key, signed_by[(agency_id, keys.serial)]
        )
    return out


def _statement_of(signed: notice_pb2.SignedKeyStatement) -> notice_pb2.KeyStatement:
    return notice_pb2.KeyStatement.FromString(signed.statement)
