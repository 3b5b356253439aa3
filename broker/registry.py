"""The agency registry file (registry.toml) joined with CA-signed key statements."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker.core.identity import IdentityError, validate_id, verify_key_statement
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
) -> dict[str, RegisteredAgency]:
    """Bind each profile to its newest valid CA-signed key statement.

    Raises InvalidArgument for a registered agency without a valid statement.
    """
    best: dict[str, tuple[int, notice_pb2.SignedKeyStatement, bytes, bytes]] = {}
    for signed in statements:
        try:
            keys = verify_key_statement(signed, ca_key, now_ms)
        except IdentityError:
            continue  # not signed by this CA, or outside its validity: never used
        current = best.get(keys.agency_id)
        if current is None or keys.serial > current[0]:
            best[keys.agency_id] = (keys.serial, signed, keys.signing_key, keys.encryption_key)
    out = {}
    for agency_id, profile in profiles.items():
        if agency_id not in best:
            raise InvalidArgument(
                f"agency {agency_id} has no valid CA-signed key statement: "
                f"run `broker keys issue agency {agency_id}`"
            )
        _serial, signed, sk, ek = best[agency_id]
        out[agency_id] = RegisteredAgency(profile, sk, ek, signed.SerializeToString())
    return out
