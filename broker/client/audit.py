"""Auditor and witness client (asyncio), and the checks built on it.

:class:`AuditClient` talks to AuditService over mutual TLS as an auditor or an
agency. The checks trust nothing the broker says without verifying it against
:class:`Trust` (the deployment CA, the broker's log key, witness keys):

* :func:`monitor`: follow checkpoints; each new one must be consistent with the
  last one kept on disk (RFC 9162 consistency proof), else it is a fork; one
  older than the one kept is a rollback, one the broker cannot prove consistent
  is unprovable: the state is kept, both signed checkpoints are written beside
  it as evidence. With ``check_entries``
  (auditors) the entries themselves must hash to the checkpoint's root.
* :func:`cosign`: a witness's monitor step, then its cosignature (C2SP
  tlog-cosignature) with the agency's CA-bound signing key.
* :func:`replay`: fetch every entry (checked against a checkpoint), the
  decision records and the policy bundles they name, and re-evaluate.
* :meth:`AuditClient.pod`: a notice's proof-of-delivery bundle (verify it
  with :func:`broker.core.pod.verify_pod`, offline).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker import pki
from broker.core import auditing, logleaf
from broker.core import pod as pod_core
from broker.core import replay as rp
from broker.core import tlog as tree
from broker.core.activation import bundle_files
from broker.core.checkpoint import Verifier, parse_verifier_key
from broker.core.checkpoint import cosign as cosign_note
from broker.core.identity import IdentityError, Party, verify_key_statement
from broker.core.merkle import leaf_hash
from broker.core.pqnote import PQVerifier, pq_key_name
from broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from broker.pqlog import load_pq_log_verifier, pq_log_pub_path
from broker.trustconfig import TRUST_FILE, load_trust_config
from broker.v1 import admin_pb2, audit_pb2, audit_pb2_grpc

PAGE = 1000
ROLLBACK = "rollback"  # monitor findings (MonitorResult.verdict)
UNPROVABLE = "unprovable"
RECORDS_PAGE = 256
_ERRORS: dict[grpc.StatusCode, type[BrokerError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


class AuditFailure(InvalidArgument):
    """What the broker served does not hold up: the audit failed (not a usage error)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------------------ trust


@dataclass(frozen=True)
class Trust:
    """What an auditor trusts: the CA, the log key (its name is the origin), witnesses."""

    ca_key: EllipticCurvePublicKey
    log: Verifier
    witnesses: tuple[Verifier, ...] = ()
    min_cosignatures: int = 0
    ca_cert: x509.Certificate | None = None  # checks administrators' signed registry entries
    log_pq: PQVerifier | None = None  # hybrid log key: its ML-DSA-65 line is required too

    @property
    def origin(self) -> str:
        return self.log.name

    def open(
        self, note: str, *, min_cosignatures: int | None = None
    ) -> auditing.VerifiedCheckpoint:
        k = self.min_cosignatures if min_cosignatures is None else min_cosignatures
        return auditing.open_log_checkpoint(
            note,
            self.log,
            origin=self.origin,
            witnesses=self.witnesses,
            min_cosignatures=k,
            pq_verifier=self.log_pq,
        )

    def verify_pod(
        self, pod: audit_pb2.ProofOfDelivery, *, min_cosignatures: int = 0
    ) -> pod_core.PodReport:
        """broker/core/pod.py verify_pod under this trust (its witnesses and, for a hybrid
        log key, both checkpoint signatures); raises what it raises."""
        return pod_core.verify_pod(
            pod,
            self.ca_key,
            self.log,
            origin=self.origin,
            witnesses=self.witnesses,
            min_cosignatures=min_cosignatures,
            pq_verifier=self.log_pq,
        )


def load_trust(
    keys_dir: Path,
    broker_id: str = "broker",
    *,
    log_key: Path | None = None,
    ca_cert: Path | None = None,
    witnesses: Sequence[str] = (),
    witness_keys: Sequence[str] = (),
    min_cosignatures: int = 0,
    log_suite: str | None = None,
    log_pq_key: Path | None = None,
) -> Trust:
    """Load trust anchors from a deployment's keys directory (or explicit files).

    ``witnesses`` are agency ids whose CA-signed statements (in
    ``agencies/<id>/statement.bin``) give their cosigner keys;
    ``witness_keys`` are C2SP verifier key strings (type 0x04). ``log_suite``
    "hybrid" (None: trust.toml's ``[log] suite`` in ``keys_dir``; a ``log_pq_key``
    implies it) requires checkpoints to carry the ML-DSA-65 signature of the key in
    ``log_pq_key`` (default ``brokers/<id>/log-pq.pub``) besides the Ed25519 one.
    """
    ca = pki.load_ca_certificate(ca_cert or Path(keys_dir) / pki.CA_DIR / pki.CA_CERT)
    ca_key = pki.ca_public_key(ca)
    log = pki.load_log_verifier(
        log_key or pki.party_directory(Path(keys_dir), Party("broker", broker_id)) / pki.LOG_PUB
    )
    if log_suite is None:
        log_suite = load_trust_config(Path(keys_dir) / TRUST_FILE).log_suite
    log_pq = None
    if log_suite == "hybrid" or log_pq_key is not None:
        log_pq = load_pq_log_verifier(log_pq_key or pq_log_pub_path(Path(keys_dir), broker_id))
        if log_pq.name != pq_key_name(log.name):
            raise FailedPrecondition(
                f"the post-quantum log key is named {log_pq.name!r}, not "
                f"{pq_key_name(log.name)!r}: it is not the key of log {log.name}"
            )
    trusted: list[Verifier] = []
    for agency in witnesses:
        path = pki.party_directory(Path(keys_dir), Party("agency", agency)) / pki.STATEMENT
        try:
            keys = verify_key_statement(
                pki.read_statement(path), ca_key, now_ms(), expected_agency=agency
            )
        except IdentityError as exc:
            raise FailedPrecondition(f"witness {agency}: {exc}") from None
        trusted.append(auditing.witness_verifier(agency, keys.signing_key))
    for text in witness_keys:
        trusted.append(parse_verifier_key(text))
    if min_cosignatures > len(trusted):
        raise InvalidArgument(
            f"{min_cosignatures} cosignatures required but only {len(trusted)} witness key(s) "
            "given: add --witness or --witness-key"
        )
    return Trust(ca_key, log, tuple(trusted), min_cosignatures, ca, log_pq)


# ----------------------------------------------------------------------------- client


class AuditClient:
    """AuditService over mutual TLS, as `party` (an auditor or an agency)."""

    def __init__(
        self, broker: str, keys_dir: Path, party: Party, *, timeout_s: float = 30.0
    ) -> None:
        files = pki.load_party(keys_dir, party)
        creds = grpc.ssl_channel_credentials(
            root_certificates=files.ca_cert.read_bytes(),
            private_key=files.key.read_bytes(),
            certificate_chain=files.cert.read_bytes(),
        )
        self.party = party
        self.broker = broker
        self.timeout_s = timeout_s
        self.channel = grpc.aio.secure_channel(
            broker, creds, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        self.stub = audit_pb2_grpc.AuditServiceStub(self.channel)

    async def __aenter__(self) -> AuditClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable(
                    f"broker at {self.broker} unavailable: {exc.details()}; is it running?"
                ) from None
            raise _ERRORS.get(code, InvalidArgument)(str(exc.details())) from None

    async def checkpoint(
        self, size: int = 0, min_cosignatures: int = 0
    ) -> audit_pb2.SignedCheckpoint:
        req = audit_pb2.GetCheckpointRequest(size=size, min_cosignatures=min_cosignatures)
        response: audit_pb2.SignedCheckpoint = await self._call(self.stub.GetCheckpoint, req)
        return response

    async def entries(self, start: int, end: int) -> list[audit_pb2.LogEntry]:
        """Every entry in [start, end) the caller may see."""
        out: list[audit_pb2.LogEntry] = []
        while start < end:
            req = audit_pb2.GetEntriesRequest(start=start, end=end, limit=PAGE)
            resp: audit_pb2.GetEntriesResponse = await self._call(self.stub.GetEntries, req)
            out.extend(resp.entries)
            if resp.next <= start:
                raise AuditFailure(f"the broker's entries page did not advance past {start}")
            start = resp.next
        return out

    async def inclusion(self, index: int, tree_size: int = 0) -> audit_pb2.InclusionProof:
        req = audit_pb2.GetInclusionProofRequest(index=index, tree_size=tree_size)
        response: audit_pb2.InclusionProof = await self._call(self.stub.GetInclusionProof, req)
        return response

    async def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        req = audit_pb2.GetConsistencyProofRequest(old_size=old_size, new_size=new_size)
        resp: audit_pb2.ConsistencyProof = await self._call(self.stub.GetConsistencyProof, req)
        return list(resp.hashes)

    async def pod(self, notice_id: str, version: int = 0) -> audit_pb2.ProofOfDelivery:
        req = audit_pb2.GetProofOfDeliveryRequest(notice_id=notice_id, version=version)
        response: audit_pb2.ProofOfDelivery = await self._call(self.stub.GetProofOfDelivery, req)
        return response

    async def decision_records(
        self, refs: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], bytes]:
        """Decision records by (notice id, version); those the broker does not serve are absent."""
        out: dict[tuple[str, int], bytes] = {}
        for i in range(0, len(refs), RECORDS_PAGE):
            page = refs[i : i + RECORDS_PAGE]
            try:
                records = await self._records(page)
            except NotFound:  # one missing: ask one by one, so the others are still checked
                records = []
                for ref in page:
                    try:
                        records += await self._records([ref])
                    except NotFound:
                        continue
            for r in records:
                out[(r.notice_id, r.version)] = bytes(r.record)
        return out

    async def _records(self, refs: Sequence[tuple[str, int]]) -> list[audit_pb2.DecisionRecord]:
        req = audit_pb2.GetDecisionRecordsRequest(
            notices=[audit_pb2.NoticeRef(notice_id=n, version=v) for n, v in refs]
        )
        resp: audit_pb2.GetDecisionRecordsResponse = await self._call(
            self.stub.GetDecisionRecords, req
        )
        return list(resp.records)

    async def bundle(self, version: str) -> dict[str, bytes] | None:
        """A policy bundle's files (unverified: replay checks the version); None if unknown."""
        try:
            resp: audit_pb2.AuditBundle = await self._call(
                self.stub.GetPolicyBundle, audit_pb2.GetAuditBundleRequest(version=version)
            )
        except NotFound:
            return None
        return bundle_files(admin_pb2.PolicyBundle.FromString(resp.bundle))

    async def add_cosignature(self, size: int, line: str) -> int:
        req = audit_pb2.AddCosignatureRequest(size=size, signature_line=line)
        resp: audit_pb2.AddCosignatureResponse = await self._call(self.stub.AddCosignature, req)
        return int(resp.cosignatures)


# ---------------------------------------------------------------------------- monitor


@dataclass
class MonitorState:
    """The last checkpoint a monitor verified (and, if it checks entries, its frontier)."""

    note: str
    entries_size: int = -1  # entries verified up to here; -1: entries not checked
    frontier: dict[tree.Node, bytes] = field(default_factory=dict)

    @staticmethod
    def load(path: Path) -> MonitorState | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(f"monitor state {path} is unreadable: {exc}") from None
        try:
            return MonitorState(
                note=str(raw["note"]),
                entries_size=int(raw.get("entries_size", -1)),
                frontier={
                    (int(level), int(index)): base64.b64decode(h)
                    for level, index, h in raw.get("frontier", [])
                },
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FailedPrecondition(f"monitor state {path} is malformed: {exc}") from None

    def save(self, path: Path) -> None:
        data = {
            "note": self.note,
            "entries_size": self.entries_size,
            "frontier": [
                [level, index, base64.b64encode(h).decode()]
                for (level, index), h in sorted(self.frontier.items(), reverse=True)
            ],
        }
        _write_atomic(path, json.dumps(data, indent=2).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class MonitorResult:
    ok: bool
    # first | same | extends (ok) | rollback | unprovable | fork | bad-checkpoint |
    # entries-mismatch | too-few-cosignatures (findings)
    verdict: str
    message: str
    kept_size: int | None
    size: int
    root: bytes
    cosigners: tuple[str, ...] = ()
    entries_checked: int = 0
    evidence: Path | None = None
    cosignatures: int = 0  # after a witness's cosignature
    text: str = ""  # the checkpoint text verified (empty when it did not verify)

    @property
    def findings(self) -> list[dict[str, Any]]:
        """What went wrong, with its evidence: empty when ok."""
        if self.ok:
            return []
        evidence = None if self.evidence is None else str(self.evidence)
        return [{"kind": self.verdict, "detail": self.message, "evidence": evidence}]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "findings": self.findings,
            "verdict": self.verdict,
            "message": self.message,
            "kept_size": self.kept_size,
            "size": self.size,
            "root": self.root.hex(),
            "cosigners": list(self.cosigners),
            "entries_checked": self.entries_checked,
            "evidence": None if self.evidence is None else str(self.evidence),
            "cosignatures": self.cosignatures,
        }


def _evidence(
    state_path: Path, kept: str | None, new: str, message: str, proof: list[bytes]
) -> Path:
    path = state_path.with_name(f"{state_path.name}.fork-{now_ms()}.json")
    data = {
        "message": message,
        "kept_checkpoint": kept,
        "new_checkpoint": new,
        "consistency_proof": [h.hex() for h in proof],
        "detected_at_ms": now_ms(),
    }
    _write_atomic(path, json.dumps(data, indent=2).encode())
    return path


async def _verify_entries(
    client: AuditClient, start: int, frontier: dict[tree.Node, bytes], end: int
) -> tuple[dict[tree.Node, bytes], int]:
    entries = await client.entries(start, end)
    if [e.index for e in entries] != list(range(start, end)):
        raise AuditFailure(
            f"the broker served {len(entries)} entries for [{start}, {end}), not every one"
        )
    return tree.extend(start, frontier, [leaf_hash(e.leaf) for e in entries]), len(entries)


def _replaced_hint(state_path: Path) -> str:
    return (
        f" (a new data directory?); if a new deployment was started on purpose, move "
        f"{state_path} away"
    )


async def monitor(
    client: AuditClient,
    trust: Trust,
    state_path: Path,
    *,
    check_entries: bool = False,
    full: bool = False,
) -> MonitorResult:
    """One monitoring step (see the module docstring). Never raises for what it finds:
    a bad checkpoint, a fork or entries that do not match come back with ok=False."""
    state = MonitorState.load(state_path)
    try:
        fetched = await client.checkpoint(min_cosignatures=trust.min_cosignatures)
    except NotFound as exc:
        if not trust.min_cosignatures:
            raise
        message = f"no checkpoint can be trusted yet: {exc}"
        return MonitorResult(False, "too-few-cosignatures", message, None, 0, b"")
    try:
        new = trust.open(fetched.note)
    except auditing.CheckpointError as exc:
        return MonitorResult(False, "bad-checkpoint", str(exc), None, fetched.size, fetched.root)
    cp = new.checkpoint
    kept = None if state is None else trust.open(state.note, min_cosignatures=0).checkpoint
    verdict, proof = "first", []
    if kept is not None:
        sizes = auditing.consistency_sizes(kept.size, cp.size)
        try:
            proof = [] if sizes is None else await client.consistency(*sizes)
        except Unavailable:
            raise
        except BrokerError as exc:
            message = (
                f"the broker cannot prove checkpoint {cp.size} consistent with checkpoint "
                f"{kept.size} this monitor verified ({exc}): the log was truncated or rewritten"
            )
            if kept.size > cp.size:
                message = (
                    f"the log now has {cp.size} entries but this monitor verified {kept.size} "
                    f"before ({state_path}): the broker's log was rolled back or replaced"
                    f"{_replaced_hint(state_path)} ({exc})"
                )
            evidence = _evidence(state_path, state.note if state else None, new.note, message, [])
            return MonitorResult(
                False, UNPROVABLE, message, kept.size, cp.size, cp.root, new.cosigners, 0, evidence
            )
        try:
            verdict = auditing.check_consistency(kept, cp, proof)
        except auditing.ForkError as exc:
            evidence = _evidence(
                state_path, state.note if state else None, new.note, str(exc), proof
            )
            return MonitorResult(
                False, "fork", str(exc), kept.size, cp.size, cp.root, new.cosigners, 0, evidence
            )
    kept_size = None if kept is None else kept.size
    if verdict == auditing.OLDER and kept is not None and state is not None:
        # A log only grows: a head older than one verified is a rollback, whatever proof
        # of consistency the broker adds (a truncated log can prove its own prefix).
        message = (
            f"the broker served checkpoint {cp.size}, older than checkpoint {kept.size} this "
            f"monitor verified: a rollback or truncation of the log{_replaced_hint(state_path)}"
        )
        evidence = _evidence(state_path, state.note, new.note, message, proof)
        return MonitorResult(
            False, ROLLBACK, message, kept_size, cp.size, cp.root, new.cosigners, 0, evidence
        )

    checked = 0
    next_state = MonitorState(new.note)
    if check_entries:
        start, frontier = 0, {}
        if state is not None and not full and 0 <= state.entries_size <= cp.size:
            start, frontier = state.entries_size, state.frontier
        try:
            frontier, checked = await _verify_entries(client, start, frontier, cp.size)
            root = tree.root(cp.size, frontier)
        except Unavailable:
            raise
        except (AuditFailure, BrokerError) as exc:
            message = f"the broker cannot serve the entries checkpoint {cp.size} commits to: {exc}"
            evidence = _evidence(state_path, state.note if state else None, new.note, message, [])
            return MonitorResult(
                False, "entries-mismatch", message, kept_size, cp.size, cp.root, (), 0, evidence
            )
        if root != cp.root:
            message = (
                f"the log's entries do not hash to checkpoint {cp.size}'s root: an entry was "
                "altered, added or removed"
            )
            evidence = _evidence(state_path, state.note if state else None, new.note, message, [])
            return MonitorResult(
                False,
                "entries-mismatch",
                message,
                kept_size,
                cp.size,
                cp.root,
                (),
                checked,
                evidence,
            )
        next_state = MonitorState(new.note, cp.size, frontier)
    elif state is not None and state.entries_size >= 0 and verdict == auditing.SAME:
        next_state = state
    next_state.save(state_path)
    text = new.text
    if verdict == "first":
        message = f"checkpoint {cp.size} verified and kept (first seen: trusted on first use)"
    elif verdict == auditing.SAME:
        message = f"checkpoint {cp.size} unchanged"
    else:
        message = f"checkpoint {cp.size} is consistent with the one kept ({kept_size})"
    return MonitorResult(
        True, verdict, message, kept_size, cp.size, cp.root, new.cosigners, checked, text=text
    )


async def cosign(
    client: AuditClient, trust: Trust, state_path: Path, agency: pki.AgencyCredentials
) -> MonitorResult:
    """Witness: verify the latest checkpoint against the one kept, then cosign it."""
    result = await monitor(client, trust, state_path)
    if not result.ok:
        return result
    name = auditing.witness_name(agency.agency_id)
    line = cosign_note(result.text, name, agency.signing_seed, int(time.time()))
    count = await client.add_cosignature(result.size, line)
    return dataclasses.replace(
        result, message=f"{result.message}; cosigned as {name}", cosignatures=count
    )


# ------------------------------------------------------------------------------ replay


@dataclass(frozen=True)
class ReplayResult:
    checkpoint: auditing.VerifiedCheckpoint
    report: rp.ReplayReport


async def verified_leaves(client: AuditClient, trust: Trust) -> list[tuple[int, audit_pb2.LogLeaf]]:
    """Every leaf up to the latest checkpoint, checked to hash to its root (auditors)."""
    fetched = await client.checkpoint(min_cosignatures=trust.min_cosignatures)
    verified = trust.open(fetched.note)
    size = verified.checkpoint.size
    entries = await client.entries(0, size)
    if [e.index for e in entries] != list(range(size)):
        raise AuditFailure("this needs every entry: use an auditor certificate")
    frontier = tree.extend(0, {}, [leaf_hash(e.leaf) for e in entries])
    if tree.root(size, frontier) != verified.checkpoint.root:
        raise AuditFailure(f"the entries served do not hash to checkpoint {size}'s root")
    return [(e.index, logleaf.parse(e.leaf)) for e in entries]


async def replay(client: AuditClient, trust: Trust) -> ReplayResult:
    """Fetch and verify every entry up to the latest checkpoint, then re-evaluate every
    logged decision (see broker.core.replay). Raises AuditFailure if the entries do not
    hash to the checkpoint's root, CheckpointError if the checkpoint does not verify."""
    fetched = await client.checkpoint(min_cosignatures=trust.min_cosignatures)
    verified = trust.open(fetched.note)
    size = verified.checkpoint.size
    entries = await client.entries(0, size)
    if [e.index for e in entries] != list(range(size)):
        raise AuditFailure("replay needs every entry: use an auditor certificate")
    frontier = tree.extend(0, {}, [leaf_hash(e.leaf) for e in entries])
    if tree.root(size, frontier) != verified.checkpoint.root:
        raise AuditFailure(
            f"the entries served do not hash to checkpoint {size}'s root: the log was altered"
        )
    leaves = [(e.index, logleaf.parse(e.leaf)) for e in entries]
    decisions = [leaf.decision for _, leaf in leaves if leaf.HasField("decision")]
    records = await client.decision_records([(d.notice_id, d.version) for d in decisions])
    bundles = {}
    named = {d.policy_version for d in decisions} | {
        leaf.forwarded.policy_version for _, leaf in leaves if leaf.HasField("forwarded")
    }
    for version in sorted(named):
        bundles[version] = await client.bundle(version)
    return ReplayResult(verified, rp.replay(leaves, records, bundles, trust.ca_cert))
