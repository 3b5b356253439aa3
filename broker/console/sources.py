"""Where the console's pages get their data, each piece verified before it is shown.

:class:`Sources` holds the operator's own gRPC clients (an AuditClient as the
auditor, an AdminClient as the administrator, each with the operator's own
certificate and keys) and the trust anchors from the keys directory. It keeps
a :class:`LogMirror`: every log entry fetched so far, checked to hash to a
checkpoint signed by the broker's log key, so pages derive flows and journeys
from verified leaves only. Decision records are checked against the digests
their leaves carry, bundles against their versions (by the replay code).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from broker import pki
from broker.client import audit as ac
from broker.client.admin import AdminClient
from broker.core import auditing, logleaf
from broker.core import tlog as tree
from broker.core.activation import bundle_files
from broker.core.identity import IdentityError, Party, verify_key_statement
from broker.core.merkle import leaf_hash
from broker.core.policy.labels import Labels
from broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from broker.v1 import admin_pb2, audit_pb2, audit_pb2_grpc

from .config import ConsoleConfig

Key = tuple[str, int]
_GRPC_ERRORS: dict[grpc.StatusCode, type[BrokerError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
}


class NeedsIdentity(BrokerError):
    """The page needs an identity the console was not started with."""

    def __init__(self, role: str) -> None:
        flag = "--auditor ID" if role == "auditor" else "--admin ID"
        super().__init__(f"this page needs an {role} identity: start the console with {flag}")
        self.role = role


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _broker_error(exc: grpc.aio.AioRpcError, broker: str) -> BrokerError:
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"the broker at {broker} is unavailable; is it running?")
    return _GRPC_ERRORS.get(code, InvalidArgument)(f"the broker answered: {exc.details()}")


@dataclass
class LogMirror:
    """Entries [0, size) fetched so far, parsed, with the frontier that proves them."""

    size: int = 0
    leaves: list[audit_pb2.LogLeaf] = field(default_factory=list)
    frontier: dict[tree.Node, bytes] = field(default_factory=dict)
    checkpoint: auditing.VerifiedCheckpoint | None = None
    issued_at_ms: int = 0

    def indexed(self) -> list[tuple[int, audit_pb2.LogLeaf]]:
        return list(enumerate(self.leaves))


@dataclass(frozen=True)
class StatementCheck:
    """An agency's CA-signed key statement, as verified by the console."""

    agency_id: str
    serial: int
    not_before_ms: int
    not_after_ms: int
    ok: bool
    problem: str = ""


class Sources:
    """The operator's clients and trust anchors; see the module docstring."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        keys = config.keys_dir
        self.ca_cert: x509.Certificate = pki.load_ca_certificate(keys / pki.CA_DIR / pki.CA_CERT)
        self.trust = ac.load_trust(keys, config.broker_id, witnesses=self._witnesses())
        if config.auditor is not None:
            pki.load_party(keys, Party("auditor", config.auditor))
        if config.admin is not None:  # fail at start, not on the first page
            pki.load_party(keys, Party("admin", config.admin))
        self._audit: ac.AuditClient | None = None
        self._admin: AdminClient | None = None
        self._lock = asyncio.Lock()
        self.mirror = LogMirror()
        self.records: dict[Key, bytes] = {}
        self.bundles: dict[str, dict[str, bytes] | None] = {}
        self.labels: dict[str, Labels] = {}  # catalogue labels by policy version (lang.py)

    def _witnesses(self) -> list[str]:
        """Trusted witnesses: those named, else every agency whose statement verifies."""
        if self.config.witnesses:
            return list(self.config.witnesses)
        ca_key = pki.ca_public_key(self.ca_cert)
        out = []
        for signed in pki.read_statements(self.config.keys_dir):
            try:
                out.append(verify_key_statement(signed, ca_key, now_ms()).agency_id)
            except IdentityError:
                continue
        return out

    @property
    def state_path(self) -> Path:
        who = self.config.auditor or self.config.admin
        return self.config.state_dir / f"{who}.checkpoint.json"

    # -- clients ----------------------------------------------------------------------
    def audit(self) -> ac.AuditClient:
        if self.config.auditor is None:
            raise NeedsIdentity("auditor")
        if self._audit is None:
            party = Party("auditor", self.config.auditor)
            self._audit = ac.AuditClient(self.config.broker, self.config.keys_dir, party)
        return self._audit

    def admin(self) -> AdminClient:
        if self.config.admin is None:
            raise NeedsIdentity("admin")
        if self._admin is None:
            self._admin = AdminClient(self.config.keys_dir, self.config.admin, self.config.broker)
        return self._admin

    async def close(self) -> None:
        if self._audit is not None:
            await self._audit.close()
        if self._admin is not None:
            await self._admin.__aexit__()

    async def admin_call(self, method: str, request: Any) -> Any:
        try:
            return await self.admin().call(method, request)
        except grpc.aio.AioRpcError as exc:
            raise _broker_error(exc, self.config.broker) from None

    async def audit_call(self, method: str, request: Any) -> Any:
        client = self.audit()
        stub: Any = audit_pb2_grpc.AuditServiceStub(client.channel)
        try:
            return await getattr(stub, method)(request, timeout=client.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _broker_error(exc, self.config.broker) from None

    # -- the log, verified --------------------------------------------------------------
    async def log(self) -> LogMirror:
        """Bring the mirror up to the latest checkpoint: fetch only new entries, check that
        all of them hash to the checkpoint's root. Raises AuditFailure if they do not."""
        async with self._lock:
            client = self.audit()
            fetched = await client.checkpoint()
            verified = self.trust.open(fetched.note)
            cp = verified.checkpoint
            m = self.mirror
            if cp.size < m.size:  # an older checkpoint: keep what was proven
                return m
            entries = await client.entries(m.size, cp.size)
            if [e.index for e in entries] != list(range(m.size, cp.size)):
                raise ac.AuditFailure("the broker did not serve every entry to the auditor")
            frontier = tree.extend(m.size, m.frontier, [leaf_hash(e.leaf) for e in entries])
            if tree.root(cp.size, frontier) != cp.root:
                raise ac.AuditFailure(
                    f"the log's entries do not hash to checkpoint {cp.size}'s root: an entry "
                    "was altered, added or removed"
                )
            m.leaves.extend(logleaf.parse(e.leaf) for e in entries)
            m.size, m.frontier, m.checkpoint = cp.size, frontier, verified
            m.issued_at_ms = fetched.issued_at_ms
            return m

    async def decision_records(self, keys: Sequence[Key]) -> dict[Key, bytes]:
        """Records for these notice versions (cached); the digest check is the caller's."""
        missing = [k for k in keys if k not in self.records]
        if missing:
            self.records.update(await self.audit().decision_records(missing))
        return {k: self.records[k] for k in keys if k in self.records}

    async def bundle(self, version: str) -> dict[str, bytes] | None:
        """A bundle's files by version, from the admin service or the audit service."""
        if version not in self.bundles:
            files: dict[str, bytes] | None
            if self.config.admin is not None:
                try:
                    raw = await self.admin_call(
                        "GetPolicyBundle", admin_pb2.GetPolicyBundleRequest(version=version)
                    )
                except NotFound:
                    files = None
                else:
                    files = bundle_files(raw)
            else:
                files = await self.audit().bundle(version)
            self.bundles[version] = files
        return self.bundles[version]

    # -- statements ---------------------------------------------------------------------
    def check_statement(self, agency_id: str, signed: Any) -> StatementCheck:
        """Verify a CA-signed key statement now; report its serial and validity."""
        from broker.v1 import notice_pb2

        try:
            raw = notice_pb2.KeyStatement.FromString(signed.statement)
        except Exception:  # a broken statement is a finding, shown on the page
            return StatementCheck(agency_id, 0, 0, 0, False, "unreadable key statement")
        try:
            verify_key_statement(
                signed, pki.ca_public_key(self.ca_cert), now_ms(), expected_agency=agency_id
            )
        except IdentityError as exc:
            return StatementCheck(
                agency_id, raw.serial, raw.not_before_ms, raw.not_after_ms, False, str(exc)
            )
        return StatementCheck(agency_id, raw.serial, raw.not_before_ms, raw.not_after_ms, True)

    def local_certificate_expiry(self, party: Party) -> int | None:
        """When the TLS certificate in the keys directory expires (ms), if it is there."""
        path = pki.party_directory(self.config.keys_dir, party) / pki.TLS_CERT
        if not path.is_file():
            return None
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        return int(cert.not_valid_after_utc.timestamp() * 1000)


def record_ok(record: bytes, leaf: audit_pb2.PolicyDecision) -> bool:
    """Whether a decision record is the one the log's PolicyDecision leaf commits to."""
    return hashlib.sha256(record).digest() == leaf.decisions_digest
