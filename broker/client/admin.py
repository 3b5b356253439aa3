"""AdminClient: administrators manage policy bundles and the agency registry.

Activations are signed here, with the administrator's CA-certified TLS key; the
broker, agency nodes and auditors verify them against the deployment CA.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker import pki
from broker.client.errors import TypedErrors
from broker.core import activation as act
from broker.core.identity import Party
from broker.errors import InvalidArgument
from broker.v1 import admin_pb2, admin_pb2_grpc, notice_pb2

DEFAULT_ENTRY_VALIDITY_DAYS = 30


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _copy(entry: admin_pb2.AgencyEntry) -> admin_pb2.AgencyEntry:
    out = admin_pb2.AgencyEntry()
    out.CopyFrom(entry)
    return out


class AdminClient:
    """Use as `async with AdminClient(keys_dir, "alice", "127.0.0.1:7443") as admin`."""

    def __init__(
        self,
        keys_dir: Path,
        admin_id: str,
        broker: str,
        timeout_s: float = 30,
        *,
        entry_validity_days: int = DEFAULT_ENTRY_VALIDITY_DAYS,
    ) -> None:
        if not 1 <= entry_validity_days <= 366:
            raise InvalidArgument("entry validity must be 1 to 366 days")
        self.entry_validity_days = entry_validity_days
        self.admin_id = admin_id
        self.files = pki.load_party(keys_dir, Party("admin", admin_id))
        self.timeout = timeout_s
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.files.ca_cert.read_bytes(),
            private_key=self.files.key.read_bytes(),
            certificate_chain=self.files.cert.read_bytes(),
        )
        self.channel = grpc.aio.secure_channel(broker, creds, interceptors=[TypedErrors()])
        self.stub = admin_pb2_grpc.AdminServiceStub(self.channel)

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def call(self, method: str, request: Any) -> Any:
        return await getattr(self.stub, method)(request, timeout=self.timeout)

    def sign_activation(
        self, version: str, reason: str, sequence: int, now_ms: int | None = None
    ) -> admin_pb2.SignedPolicyActivation:
        """Sign "activate bundle `version` as activation number `sequence`"."""
        activation = admin_pb2.PolicyActivation(
            version=version,
            admin=self.admin_id,
            activated_at_ms=now_ms if now_ms is not None else time.time_ns() // 1_000_000,
            reason=reason,
            sequence=sequence,
        ).SerializeToString(deterministic=True)
        signature = self._sign(act.activation_message(activation))
        return admin_pb2.SignedPolicyActivation(
            activation=activation,
            signature=signature,
            admin_certificate=self.files.cert.read_bytes(),
        )

    def _sign(self, message: bytes) -> bytes:
        key = serialization.load_pem_private_key(self.files.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidArgument("the administrator key must be EC P-256")
        return key.sign(message, ec.ECDSA(hashes.SHA256()))

    def sign_entry(self, entry: admin_pb2.AgencyEntry) -> admin_pb2.SignedAgencyEntry:
        """Sign a complete registry entry with this administrator's CA-certified key, valid
        for `entry_validity_days` from now (registry entries are short-lived: renew them
        with sign_registry(renew=True) on a schedule)."""
        if not entry.not_after_ms:
            entry = _copy(entry)
            entry.not_after_ms = _now_ms() + self.entry_validity_days * 86_400_000
        raw = entry.SerializeToString(deterministic=True)
        return admin_pb2.SignedAgencyEntry(
            entry=raw,
            signature=self._sign(act.entry_message(raw)),
            admin_certificate=self.files.cert.read_bytes(),
        )

    async def registry(self) -> dict[str, admin_pb2.AgencyEntry]:
        """The registry as the broker holds it (entries as last signed, or bootstrap values)."""
        resp = await self.call("ListAgencies", admin_pb2.ListAgenciesRequest())
        return {e.id: e for e in resp.agencies}

    async def _entry(self, agency_id: str) -> admin_pb2.AgencyEntry:
        current = (await self.registry()).get(agency_id)
        if current is None:
            raise InvalidArgument(f"agency {agency_id!r} is not in the registry")
        entry = _copy(current)
        entry.revision += 1
        entry.not_after_ms = 0  # signed anew: valid entry_validity_days from now
        return entry

    async def register(
        self,
        agency_id: str,
        country: str,
        statement: notice_pb2.SignedKeyStatement,
        *,
        roles: Sequence[str] = (),
        groups: Sequence[str] = (),
        purposes: Sequence[str] = (),
    ) -> admin_pb2.AgencyResponse:
        serial = notice_pb2.KeyStatement.FromString(statement.statement).serial
        entry = admin_pb2.AgencyEntry(
            id=agency_id,
            country=country,
            roles=sorted(roles),
            groups=sorted(groups),
            purposes=sorted(purposes),
            status="active",
            key_serial=serial,
            revision=1,
        )
        request = admin_pb2.RegisterAgencyRequest(
            entry=self.sign_entry(entry), key_statement=statement
        )
        response: admin_pb2.AgencyResponse = await self.call("RegisterAgency", request)
        return response

    async def update(
        self,
        agency_id: str,
        *,
        country: str | None = None,
        roles: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        purposes: Sequence[str] | None = None,
    ) -> admin_pb2.AgencyResponse:
        """Change an agency's attributes (unchanged where None); also signs a bootstrap entry."""
        entry = await self._entry(agency_id)
        if country is not None:
            entry.country = country
        for name, values in (("roles", roles), ("groups", groups), ("purposes", purposes)):
            if values is not None:
                field = getattr(entry, name)
                del field[:]
                field.extend(sorted(values))
        request = admin_pb2.UpdateAgencyRequest(entry=self.sign_entry(entry))
        response: admin_pb2.AgencyResponse = await self.call("UpdateAgency", request)
        return response

    async def set_status(
        self, agency_id: str, status: str, reason: str
    ) -> admin_pb2.AgencyResponse:
        entry = await self._entry(agency_id)
        entry.status = status
        request = admin_pb2.SetAgencyStatusRequest(entry=self.sign_entry(entry), reason=reason)
        response: admin_pb2.AgencyResponse = await self.call("SetAgencyStatus", request)
        return response

    async def rotate_keys(
        self, agency_id: str, statement: notice_pb2.SignedKeyStatement
    ) -> admin_pb2.AgencyResponse:
        entry = await self._entry(agency_id)
        entry.key_serial = notice_pb2.KeyStatement.FromString(statement.statement).serial
        request = admin_pb2.RotateAgencyKeysRequest(
            entry=self.sign_entry(entry), key_statement=statement
        )
        response: admin_pb2.AgencyResponse = await self.call("RotateAgencyKeys", request)
        return response

    async def sign_registry(self, *, renew: bool = False) -> int:
        """Sign every entry still carrying only bootstrap values (from registry.toml); with
        `renew`, every entry, as a new revision valid `entry_validity_days` from now."""
        resp = await self.call("ListAgencies", admin_pb2.ListAgenciesRequest())
        signed = 0
        for entry, sig in zip(resp.agencies, resp.signed, strict=True):
            if renew or not sig.entry:
                await self.update(entry.id)
                signed += 1
        return signed

    async def next_sequence(self) -> int:
        history = await self.call("PolicyHistory", admin_pb2.PolicyHistoryRequest())
        return max((e.sequence for e in history.entries), default=0) + 1

    async def activate(
        self, files: Mapping[str, bytes], reason: str
    ) -> admin_pb2.ActivatePolicyResponse:
        """Activate a bundle: compile it locally for its version, sign, send."""
        from broker.core.policy import compile_bundle

        version = compile_bundle(files).version
        signed = self.sign_activation(version, reason, await self.next_sequence())
        request = admin_pb2.ActivatePolicyRequest(
            bundle=act.bundle_message(files), activation=signed
        )
        response: admin_pb2.ActivatePolicyResponse = await self.call("ActivatePolicy", request)
        return response

    async def rollback(self, version: str, reason: str) -> admin_pb2.ActivatePolicyResponse:
        """Activate an earlier bundle again (fetched from the broker, checked locally)."""
        bundle = await self.call(
            "GetPolicyBundle", admin_pb2.GetPolicyBundleRequest(version=version)
        )
        files = act.bundle_files(bundle)
        from broker.core.policy import compile_bundle

        if compile_bundle(files).version != version:
            raise InvalidArgument(f"the broker returned a bundle that is not version {version}")
        return await self.activate(files, reason)
