"""The agency registry file (registry.toml) joined with CA-signed key statements."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker import tomlfile
from broker.core import bounds
from broker.core.identity import newest_key_statements, validate_id
from broker.core.policy import AgencyProfile, Bundle
from broker.core.policy.model import AGENCY_STATUSES
from broker.core.relay import RegisteredAgency
from broker.errors import InvalidArgument
from broker.tomlfile import TomlText
from broker.v1 import notice_pb2


class RegistryError(InvalidArgument):
    """registry.toml holds something the broker cannot use; str() starts with file:line:column."""


_COUNTRY = re.compile(r"[A-Z]{2}")
_KEYS = ("title", "country", "roles", "groups", "purposes", "status")


def catalogue_problem(
    policy: Bundle, roles: Iterable[str], groups: Iterable[str], purposes: Iterable[str]
) -> tuple[str, str] | None:
    """What in a registry entry the policy does not know, as (key, message), or None.

    Roles must be the catalogue's [authorities], purposes its [purposes], groups
    those of groups.toml.
    """
    catalogue = policy.catalogue
    for key, what, names, known, where in (
        ("roles", "role", roles, catalogue.authorities, "[authorities] in catalogue.toml"),
        ("purposes", "purpose", purposes, catalogue.purposes, "[purposes] in catalogue.toml"),
        ("groups", "group", groups, policy.groups, "groups.toml"),
    ):
        unknown = sorted(set(names) - set(known))
        if unknown:
            return key, (
                f"unknown {what} {bounds.quote(unknown[0])}: the policy knows "
                f"{', '.join(sorted(known)) or 'none'} (see {where})"
            )
    return None


def _strings(src: TomlText, at: tuple[str, ...], key: str, value: Any) -> frozenset[str]:
    where = f"{src.where(at, key)}: {'.'.join(at)}.{key}"
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RegistryError(f"{where} must be a list of non-empty strings")
    limit = bounds.max_items(f"broker.v1.AgencyEntry.{key}")
    if len(value) > limit:
        raise RegistryError(f"{where} lists {len(value)} names; at most {limit} are allowed")
    twice = sorted(v for v, n in Counter(value).items() if n > 1)
    if twice:
        raise RegistryError(f"{where} lists {bounds.quote(twice[0])} twice")
    return frozenset(value)


def parse_registry(path: Path, policy: Bundle | None = None) -> dict[str, AgencyProfile]:
    """Read registry.toml: one [agencies.<ID>] table per agency, checked against `policy`
    (its catalogue's roles and purposes, its groups) when given.

    Raises RegistryError (file:line:column and what to fix) on any problem.
    """
    doc, src = tomlfile.read(path, RegistryError, "registry file")
    for key in doc:
        if key != "agencies":
            raise RegistryError(
                f"{src.where((), key)}: unknown key {bounds.quote(key)}: "
                "registry.toml holds [agencies.<ID>] tables"
            )
    agencies = doc.get("agencies", {})
    if not isinstance(agencies, dict):
        raise RegistryError(
            f"{src.where((), 'agencies')}: agencies must be tables: write one "
            '[agencies."<ID>"] table per agency'
        )
    profiles = {}
    for agency_id, entry in agencies.items():
        at = ("agencies", agency_id)
        try:
            validate_id(agency_id)
        except InvalidArgument as exc:
            raise RegistryError(f"{src.where(at)}: {exc}") from None
        name = f"agencies.{agency_id}"
        if not isinstance(entry, dict):
            raise RegistryError(
                f"{src.where(('agencies',), agency_id)}: {name} must be a table "
                f'([agencies."{agency_id}"] with country, roles, purposes ...)'
            )
        extra = sorted(set(entry) - set(_KEYS))
        if extra:
            raise RegistryError(
                f"{src.where(at, extra[0])}: {name} has unknown key {bounds.quote(extra[0])} "
                f"(use {', '.join(_KEYS)})"
            )
        country = entry.get("country")
        if not isinstance(country, str) or not _COUNTRY.fullmatch(country):
            raise RegistryError(
                f"{src.where(at, 'country')}: {name}.country must be an ISO 3166-1 alpha-2 code "
                'such as "FR" (or "EU")'
            )
        title = entry.get("title", "")
        if not isinstance(title, str) or len(title) > bounds.TEXT_BYTES:
            raise RegistryError(
                f"{src.where(at, 'title')}: {name}.title must be a string of at most "
                f"{bounds.TEXT_BYTES} characters"
            )
        status = entry.get("status", "active")
        if status not in AGENCY_STATUSES:
            raise RegistryError(
                f"{src.where(at, 'status')}: {name}.status must be one of "
                f"{', '.join(AGENCY_STATUSES)}"
            )
        lists = {k: _strings(src, at, k, entry.get(k, [])) for k in ("roles", "groups", "purposes")}
        if policy is not None:
            problem = catalogue_problem(policy, lists["roles"], lists["groups"], lists["purposes"])
            if problem is not None:
                key, message = problem
                raise RegistryError(f"{src.where(at, key)}: {name}.{key}: {message}")
        profiles[agency_id] = AgencyProfile(
            id=agency_id,
            country=country,
            roles=lists["roles"],
            groups=lists["groups"],
            purposes=lists["purposes"],
            status=status,
        )
    if not profiles:
        raise RegistryError(
            f"{src.where((), 'agencies')}: no agencies: add one "
            '[agencies."<ID>"] table per agency (country, roles, purposes)'
        )
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
            profile,
            keys.signing_key,
            keys.encryption_key,
            signed_by[(agency_id, keys.serial)],
            pq_signing_key=keys.pq_signing_key,
            pq_encryption_key=keys.pq_encryption_key,
        )
    return out


def _statement_of(signed: notice_pb2.SignedKeyStatement) -> notice_pb2.KeyStatement:
    return notice_pb2.KeyStatement.FromString(signed.statement)
