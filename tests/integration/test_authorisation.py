"""The authorisation matrix: every RPC of every service, walked from the service
descriptors, called by each kind of caller against a real broker over mutual TLS.

Callers: the agency the request concerns (FR-NCB, the originator of the fixture
notice; DE-BKA, its recipient, for receipts and Subscribe), another agency
(IT-BORDER, registered and unrelated to the notice), an administrator, an auditor, a
suspended agency, a revoked agency (registered, then listed in keys/ca/revoked.txt and the
broker restarted: revocation is read at start), an agency with a certificate of the
deployment CA but no registry entry, a certificate of another CA, and no certificate.

Each agency caller makes the request as itself where the request is signed or names its
sender (a publish, an action, a receipt ...); where a request asks about the fixture notice,
every caller asks about the same notice. An OK that returns nothing of the owner's data is
marked "OK (nothing)". Every cell is checked against the expected table below, and the run
writes the authorisation table of docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from broker import pki
from broker.bundles import read_bundle_dir
from broker.core import auditing, lifecycle, logleaf, receipts, relay
from broker.core import envelope_suite as es
from broker.core.activation import bundle_message
from broker.core.checkpoint import cosign
from broker.core.identity import Party
from broker.sandbox import (
    ADMIN_ID,
    AUDITOR_ID,
    DEMO_AGENCIES,
    REPO_POLICIES,
    AgencySpec,
    create_deployment,
    provision,
)
from broker.server.app import BrokerApp
from broker.v1 import admin_pb2, agency_pb2, audit_pb2, evidence_pb2, notice_pb2

from .. import matrices
from ..fuzz.strategies import SERVICES
from .helpers import RED_SECTIONS, red_header, seal
from .test_bad_input import sign_entry

pytestmark = pytest.mark.integration

OWNER, RECIPIENT, OTHER = "FR-NCB", "DE-BKA", "IT-BORDER"
SUSPENDED, REVOKED, UNREGISTERED, NEW = "ES-SUSP", "PT-REVOKED", "NL-UNREG", "NO-KRIPOS"
POLICE = {"identity", "case_facts", "judicial", "biometrics"}
_PURPOSES = DEMO_AGENCIES[0].purposes
EXTRA = (
    AgencySpec(SUSPENDED, "ES", ("police",), "a suspended agency", purposes=_PURPOSES),
    AgencySpec(REVOKED, "PT", ("police",), "a revoked agency", purposes=_PURPOSES),
)

COLUMNS = (
    ("the agency itself", "own"),
    ("another agency", "other"),
    ("an administrator", "admin"),
    ("an auditor", "auditor"),
    ("a suspended agency", "suspended"),
    ("a revoked agency", "revoked"),
    ("an unregistered agency", "unregistered"),
    ("another CA's certificate", "foreign"),
    ("no certificate", "none"),
)


@dataclass
class World:
    """The deployment, the broker and what the fixture notice left behind."""

    root: Path
    keys: Path
    foreign_keys: Path
    target: str = ""
    notice_id: str = ""
    header_digest: bytes = b""
    notice_leaf: int = 0
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    seeds: dict[str, bytes] = field(default_factory=dict)
    sequence: int = 0
    rotated: bool = False
    leased: bool = False
    # + evidence: a notice FR-NCB sent DE-BKA with an uploaded attachment in "photos"
    attachment: evidence_pb2.AttachmentRef = field(default_factory=evidence_pb2.AttachmentRef)
    attachment_digests: tuple[bytes, bytes] = (b"", b"")  # (chunks_root, header digest)

    def seed(self, agency: str) -> bytes:
        if agency not in self.seeds:
            self.seeds[agency] = pki.load_agency(self.keys, agency).signing_seed
        return self.seeds[agency]

    async def unary(self, column: str, method: str, data: bytes) -> bytes:
        call = self.channels[column].unary_unary("/" + method)
        reply: bytes = await call(data, timeout=30)
        return reply

    async def as_auditor(self, method: str, message: object) -> bytes:
        return await self.unary("auditor", method, message.SerializeToString())  # type: ignore[attr-defined]


def _channel(world: World, party: Party | None, keys: Path | None = None) -> grpc.aio.Channel:
    ca = (world.keys / "ca" / "ca.pem").read_bytes()
    if party is None:
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        files = pki.load_party(keys or world.keys, party)
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=files.key.read_bytes(),
            certificate_chain=files.cert.read_bytes(),
        )
    return grpc.aio.secure_channel(world.target, creds)


# -- requests: one builder per RPC, given the agency the request is made as -------------------

Build = Callable[[World, str], Awaitable[bytes]]


async def resolve_audience(w: World, as_id: str) -> bytes:
    draft = red_header(as_id)
    return agency_pb2.ResolveAudienceRequest(
        draft=draft, sections=["identity", "case_facts", "judicial"]
    ).SerializeToString()


async def publish(w: World, as_id: str) -> bytes:
    envelope = seal(w.keys, red_header(as_id), {RECIPIENT: POLICE})
    return agency_pb2.PublishRequest(envelopes=[envelope]).SerializeToString()


async def subscribe(w: World, as_id: str) -> bytes:
    return agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=1)).SerializeToString()


async def _lease_fixture(w: World) -> None:
    """The recipient takes the fixture notice on a stream and leaves it in flight: a receipt
    counts only for a delivery it was sent."""
    stop = asyncio.Event()

    async def requests() -> AsyncIterator[bytes]:
        yield agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=64)).SerializeToString()
        await stop.wait()

    call = w.channels[RECIPIENT].stream_stream("/broker.v1.AgencyService/Subscribe")(
        requests(), timeout=30
    )
    try:
        async for data in call:
            for d in agency_pb2.SubscribeResponse.FromString(data).deliveries:
                header = notice_pb2.NoticeHeader.FromString(d.header.header_bytes)
                if header.notice_id == w.notice_id:
                    return
    finally:
        stop.set()
        call.cancel()


async def submit_receipts(w: World, as_id: str) -> bytes:
    if as_id == RECIPIENT and not w.leased:
        await _lease_fixture(w)
        w.leased = True
    receipt = notice_pb2.Receipt(
        notice_id=w.notice_id,
        version=1,
        recipient=as_id,
        header_digest=w.header_digest,
        sections=sorted(POLICE),
        received_at_ms=time.time_ns() // 1_000_000,
    )
    batch = receipts.sign_receipts(as_id, [receipt], w.seed(as_id))
    return agency_pb2.SubmitReceiptsRequest(batches=[batch]).SerializeToString()


async def delivery_status(w: World, as_id: str) -> bytes:
    return agency_pb2.DeliveryStatusRequest(notice_id=w.notice_id).SerializeToString()


async def empty(w: World, as_id: str) -> bytes:
    return b""


async def lookup(w: World, as_id: str) -> bytes:
    from broker.v1 import lookup_pb2

    return lookup_pb2.LookupRequest(
        tokens=[bytes(32)], purpose="border_control"
    ).SerializeToString()


async def update_restrictions(w: World, as_id: str) -> bytes:
    w.sequence += 1
    update = agency_pb2.RestrictionUpdate(
        notice_id=w.notice_id,
        sequence=w.sequence,
        restrictions=notice_pb2.OriginatorRestrictions(deny_countries=["XK"]),
        at_ms=time.time_ns() // 1_000_000,
    ).SerializeToString()
    return agency_pb2.UpdateRestrictionsRequest(
        update=update, signature=relay.sign_restriction_update(update, w.seed(as_id))
    ).SerializeToString()


async def act(w: World, as_id: str) -> bytes:
    now = time.time_ns() // 1_000_000
    action = notice_pb2.LifecycleAction(
        action_id=str(uuid.uuid4()),
        notice_id=w.notice_id,
        actor=as_id,
        kind=notice_pb2.LIFECYCLE_SUSPEND,
        reason=lifecycle.reason_digest("checking a report"),  # the text is sealed (SDK)
        until_ms=now + 3_600_000,
        at_ms=now,
    ).SerializeToString()
    return notice_pb2.SignedLifecycleAction(
        action=action, signature=lifecycle.sign_action(action, w.seed(as_id))
    ).SerializeToString()


def _bundle() -> admin_pb2.PolicyBundle:
    return bundle_message(read_bundle_dir(REPO_POLICIES))


async def validate(w: World, as_id: str) -> bytes:
    return admin_pb2.ValidatePolicyRequest(bundle=_bundle()).SerializeToString()


async def explain(w: World, as_id: str) -> bytes:
    return admin_pb2.ExplainDecisionRequest(
        draft=red_header(OWNER),
        sections=["identity", "case_facts", "judicial"],
        recipient=RECIPIENT,
    ).SerializeToString()


async def diff(w: World, as_id: str) -> bytes:
    return admin_pb2.DiffPolicyRequest(bundle=_bundle(), corpus=10).SerializeToString()


async def _admin_history(w: World) -> admin_pb2.PolicyHistoryResponse:
    reply = await w.unary("admin", "broker.v1.AdminService/PolicyHistory", b"")
    return admin_pb2.PolicyHistoryResponse.FromString(reply)


async def activate(w: World, as_id: str) -> bytes:
    from broker.client.admin import AdminClient
    from broker.core.policy import compile_bundle

    history = await _admin_history(w)
    sequence = max(e.sequence for e in history.entries) + 1
    version = compile_bundle(read_bundle_dir(REPO_POLICIES)).version
    async with AdminClient(w.keys, ADMIN_ID, w.target) as admin:
        signed = admin.sign_activation(version, "re-activate", sequence)
    return admin_pb2.ActivatePolicyRequest(bundle=_bundle(), activation=signed).SerializeToString()


async def policy_bundle(w: World, as_id: str) -> bytes:
    active = [e for e in (await _admin_history(w)).entries if e.active]
    return admin_pb2.GetPolicyBundleRequest(version=active[0].version).SerializeToString()


def _new_entry(revision: int, **fields: object) -> admin_pb2.AgencyEntry:
    values: dict[str, object] = {
        "id": NEW,
        "country": "NO",
        "roles": ["police"],
        "purposes": ["locate_arrest"],
        "status": "active",
        "key_serial": 1,
        "revision": revision,
    }
    values.update(fields)
    return admin_pb2.AgencyEntry(**values)  # type: ignore[arg-type]


async def register(w: World, as_id: str) -> bytes:
    return admin_pb2.RegisterAgencyRequest(
        entry=sign_entry(w.keys, _new_entry(1)),
        key_statement=pki.load_agency(w.keys, NEW).statement,
    ).SerializeToString()


async def update_agency(w: World, as_id: str) -> bytes:
    entry = _new_entry(2, purposes=["identification", "locate_arrest"])
    return admin_pb2.UpdateAgencyRequest(entry=sign_entry(w.keys, entry)).SerializeToString()


async def set_status(w: World, as_id: str) -> bytes:
    entry = _new_entry(3, purposes=["identification", "locate_arrest"], status="suspended")
    return admin_pb2.SetAgencyStatusRequest(
        entry=sign_entry(w.keys, entry), reason="audit"
    ).SerializeToString()


async def rotate_keys(w: World, as_id: str) -> bytes:
    if not w.rotated:
        pki.issue_agency(w.keys, NEW)  # the next key serial
        w.rotated = True
    statement = pki.load_agency(w.keys, NEW).statement
    serial = notice_pb2.KeyStatement.FromString(statement.statement).serial
    entry = _new_entry(
        4, purposes=["identification", "locate_arrest"], status="suspended", key_serial=serial
    )
    return admin_pb2.RotateAgencyKeysRequest(
        entry=sign_entry(w.keys, entry), key_statement=statement
    ).SerializeToString()


async def list_actions(w: World, as_id: str) -> bytes:
    return admin_pb2.ListAdminActionsRequest(limit=5).SerializeToString()


async def checkpoint(w: World, as_id: str) -> bytes:
    return b""


async def entries(w: World, as_id: str) -> bytes:
    return audit_pb2.GetEntriesRequest(start=0).SerializeToString()


async def inclusion(w: World, as_id: str) -> bytes:
    return audit_pb2.GetInclusionProofRequest(index=w.notice_leaf).SerializeToString()


async def consistency(w: World, as_id: str) -> bytes:
    cp = audit_pb2.SignedCheckpoint.FromString(
        await w.as_auditor("broker.v1.AuditService/GetCheckpoint", audit_pb2.GetCheckpointRequest())
    )
    return audit_pb2.GetConsistencyProofRequest(old_size=1, new_size=cp.size).SerializeToString()


async def proof_of_delivery(w: World, as_id: str) -> bytes:
    return audit_pb2.GetProofOfDeliveryRequest(notice_id=w.notice_id).SerializeToString()


async def decision_records(w: World, as_id: str) -> bytes:
    return audit_pb2.GetDecisionRecordsRequest(
        notices=[audit_pb2.NoticeRef(notice_id=w.notice_id, version=1)]
    ).SerializeToString()


async def audit_bundle(w: World, as_id: str) -> bytes:
    active = [e for e in (await _admin_history(w)).entries if e.active]
    return audit_pb2.GetAuditBundleRequest(version=active[0].version).SerializeToString()


async def add_cosignature(w: World, as_id: str) -> bytes:
    cp = audit_pb2.SignedCheckpoint.FromString(
        await w.as_auditor("broker.v1.AuditService/GetCheckpoint", audit_pb2.GetCheckpointRequest())
    )
    text = cp.note.split("\n\n", 1)[0] + "\n"
    line = cosign(text, auditing.witness_name(as_id), w.seed(as_id), int(time.time()))
    return audit_pb2.AddCosignatureRequest(size=cp.size, signature_line=line).SerializeToString()


# + evidence: attachments and custody -----------------------------------------------------------


async def _attachment_fixture(w: World) -> None:
    """FR-NCB seals a small file in "photos" for DE-BKA, publishes, uploads it and signs the
    first custody link."""
    from broker.client.attachments import seal_file

    source = w.root / "evidence.bin"
    source.write_bytes(bytes(range(256)) * 16)
    header = red_header(OWNER)
    sealed = seal_file(
        source,
        w.root / "evidence.ct",
        notice_id=header.notice_id,
        version=1,
        originator=OWNER,
        section="photos",
        chunk_size=1024,
    )
    header.attachments.append(sealed.descriptor)
    sections = {**RED_SECTIONS, "photos": sealed.key.SerializeToString()}
    envelope = seal(w.keys, header, {RECIPIENT: POLICE | {"photos"}}, sections)
    digest = es.header_digest(envelope.header.header_bytes)
    await w.unary(
        "own",
        "broker.v1.AgencyService/Publish",
        agency_pb2.PublishRequest(envelopes=[envelope]).SerializeToString(),
    )
    w.attachment = evidence_pb2.AttachmentRef(
        notice_id=header.notice_id, version=1, section="photos"
    )
    w.attachment_digests = (sealed.descriptor.chunks_root, digest)
    data = sealed.ciphertext.read_bytes()
    size = 1024 + 17
    chunks = [
        evidence_pb2.UploadChunk(
            ref=w.attachment, index=i, ciphertext=data[i * size : (i + 1) * size]
        ).SerializeToString()
        for i in range(sealed.descriptor.chunk_count)
    ]
    upload = w.channels["own"].stream_unary("/broker.v1.EvidenceService/UploadAttachment")
    await upload(iter(chunks), timeout=30)
    await w.unary("own", "broker.v1.EvidenceService/AppendCustody", _custody(w, OWNER, 0))


def _custody(w: World, as_id: str, seq: int, previous: bytes = b"") -> bytes:
    from broker.core import custody

    ref = w.attachment
    record = evidence_pb2.CustodyRecord(
        notice_id=ref.notice_id,
        version=ref.version,
        section=ref.section,
        evidence_digest=w.attachment_digests[0],
        header_digest=w.attachment_digests[1],
        seq=seq,
        previous_digest=previous
        or custody.genesis(ref.notice_id, ref.version, ref.section, w.attachment_digests[0]),
        agency=as_id,
        action=evidence_pb2.CUSTODY_SEALED if seq == 0 else evidence_pb2.CUSTODY_FORWARDED,
        at_ms=time.time_ns() // 1_000_000,
        note="matrix",
    )
    return custody.sign_record(record, w.seed(as_id)).SerializeToString()


async def upload_attachment(w: World, as_id: str) -> bytes:
    return evidence_pb2.UploadChunk(
        ref=w.attachment, index=0, ciphertext=bytes(1024 + 17)
    ).SerializeToString()


async def attachment_ref(w: World, as_id: str) -> bytes:
    return w.attachment.SerializeToString()


async def download_attachment(w: World, as_id: str) -> bytes:
    return evidence_pb2.DownloadRequest(ref=w.attachment).SerializeToString()


async def append_custody(w: World, as_id: str) -> bytes:
    from broker.core import custody

    chain = evidence_pb2.CustodyChain.FromString(
        await w.unary(
            "own", "broker.v1.EvidenceService/GetCustody", w.attachment.SerializeToString()
        )
    )
    last = chain.entries[-1].signed.record
    return _custody(w, as_id, len(chain.entries), custody.record_digest(last))


# -- what an OK reveals of the owner's data ----------------------------------------------------


def _status_reveals(w: World, reply: bytes) -> bool:
    return bool(agency_pb2.DeliveryStatusResponse.FromString(reply).recipients)


def _entries_reveal(w: World, reply: bytes) -> bool:
    for e in audit_pb2.GetEntriesResponse.FromString(reply).entries:
        leaf = logleaf.parse(e.leaf)
        which = leaf.WhichOneof("entry")
        if which and getattr(getattr(leaf, which), "notice_id", "") == w.notice_id:
            return True
    return False


def _records_reveal(w: World, reply: bytes) -> bool:
    return bool(audit_pb2.GetDecisionRecordsResponse.FromString(reply).records)


@dataclass(frozen=True)
class Rpc:
    build: Build
    owner: str = OWNER
    other_sends_owners: bool = False  # "another agency" sends the owner's bytes, not its own
    reveals: Callable[[World, bytes], bool] | None = None
    stream: bool = False
    client_stream: bool = False  # + evidence: stream-unary (one message)
    server_stream: bool = False  # + evidence: unary-stream


RPCS: dict[str, Rpc] = {
    "AgencyService/ResolveAudience": Rpc(resolve_audience, other_sends_owners=True),
    "AgencyService/Publish": Rpc(publish, other_sends_owners=True),
    "AgencyService/Subscribe": Rpc(subscribe, owner=RECIPIENT, stream=True),
    "AgencyService/SubmitReceipts": Rpc(submit_receipts, owner=RECIPIENT, other_sends_owners=True),
    "AgencyService/GetDeliveryStatus": Rpc(delivery_status, reveals=_status_reveals),
    "AgencyService/GetActivePolicy": Rpc(empty),
    "AgencyService/UpdateRestrictions": Rpc(update_restrictions),
    "AgencyService/Act": Rpc(act),
    "AgencyService/ListReplies": Rpc(empty),
    "AdminService/ValidatePolicy": Rpc(validate),
    "AdminService/ExplainDecision": Rpc(explain),
    "AdminService/DiffPolicy": Rpc(diff),
    "AdminService/ActivatePolicy": Rpc(activate),
    "AdminService/PolicyHistory": Rpc(empty),
    "AdminService/GetPolicyBundle": Rpc(policy_bundle),
    "AdminService/RegisterAgency": Rpc(register),
    "AdminService/UpdateAgency": Rpc(update_agency),
    "AdminService/SetAgencyStatus": Rpc(set_status),
    "AdminService/RotateAgencyKeys": Rpc(rotate_keys),
    "AdminService/ListAgencies": Rpc(empty),
    "AdminService/ListAdminActions": Rpc(list_actions),
    "AuditService/GetCheckpoint": Rpc(checkpoint),
    "AuditService/GetEntries": Rpc(entries, reveals=_entries_reveal),
    "AuditService/GetInclusionProof": Rpc(inclusion),
    "AuditService/GetConsistencyProof": Rpc(consistency),
    "AuditService/GetProofOfDelivery": Rpc(proof_of_delivery),
    "AuditService/GetDecisionRecords": Rpc(decision_records, reveals=_records_reveal),
    "AuditService/GetPolicyBundle": Rpc(audit_bundle),
    "AuditService/AddCosignature": Rpc(add_cosignature),
    "AgencyService/GetDirectory": Rpc(empty),
    "AgencyService/Lookup": Rpc(lookup),
    "AdminService/ListKeyStatements": Rpc(empty),
    "AuditService/ListCheckpoints": Rpc(empty),
    "AuditService/GetQueues": Rpc(empty),
    "AgencyService/ListRequests": Rpc(empty),  # + judicial: only the caller's own requests
    # + evidence
    "EvidenceService/UploadAttachment": Rpc(upload_attachment, client_stream=True),
    "EvidenceService/GetAttachmentStatus": Rpc(attachment_ref),
    "EvidenceService/DownloadAttachment": Rpc(download_attachment, server_stream=True),
    "EvidenceService/AppendCustody": Rpc(append_custody),
    "EvidenceService/GetCustody": Rpc(attachment_ref),
}

# -- what each cell must be ------------------------------------------------------------------

D, U, N, F, A = (
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "NOT_FOUND",
    "FAILED_PRECONDITION",
    "UNAVAILABLE",
)
OK, NOTHING = "OK", "OK (nothing)"


def _row(own: str, other: str, admin: str, auditor: str, susp: str, unreg: str) -> tuple[str, ...]:
    # revoked: refused at the door; another CA and no certificate: refused in the handshake
    return (own, other, admin, auditor, susp, U, unreg, A, A)


ADMIN_ONLY = _row(D, D, OK, D, D, D)
EXPECTED: dict[str, tuple[str, ...]] = {
    "AgencyService/ResolveAudience": _row(OK, D, D, D, F, D),
    "AgencyService/Publish": _row(OK, D, D, D, F, D),
    "AgencyService/Subscribe": _row(OK, OK, D, D, OK, D),
    "AgencyService/SubmitReceipts": _row(OK, D, D, D, F, D),
    "AgencyService/GetDeliveryStatus": _row(OK, N, D, D, N, D),
    "AgencyService/GetActivePolicy": _row(OK, OK, D, D, OK, D),
    "AgencyService/UpdateRestrictions": _row(OK, N, D, D, F, D),
    "AgencyService/Act": _row(OK, N, D, D, F, D),
    "AgencyService/ListReplies": _row(OK, OK, D, D, OK, D),
    **{name: ADMIN_ONLY for name in RPCS if name.startswith("AdminService/")},
    "AuditService/GetCheckpoint": _row(OK, OK, D, OK, OK, OK),
    "AuditService/GetEntries": _row(OK, NOTHING, D, OK, NOTHING, NOTHING),
    "AuditService/GetInclusionProof": _row(OK, N, D, OK, N, N),
    "AuditService/GetConsistencyProof": _row(OK, OK, D, OK, OK, OK),
    "AuditService/GetProofOfDelivery": _row(OK, N, D, OK, N, N),
    "AuditService/GetDecisionRecords": _row(OK, N, D, OK, N, N),
    "AuditService/GetPolicyBundle": _row(D, D, D, OK, D, D),
    "AuditService/AddCosignature": _row(OK, OK, D, D, OK, D),
    "AgencyService/GetDirectory": _row(OK, OK, D, D, OK, D),
    "AgencyService/Lookup": _row(OK, OK, D, D, F, D),
    "AuditService/ListCheckpoints": _row(OK, OK, D, OK, OK, OK),
    "AuditService/GetQueues": _row(D, D, D, OK, D, D),
    "AgencyService/ListRequests": _row(OK, OK, D, D, OK, D),
    # + evidence: the originator; recipients of the section; auditors read custody
    "EvidenceService/UploadAttachment": _row(OK, D, D, D, D, D),
    "EvidenceService/GetAttachmentStatus": _row(OK, D, D, D, D, D),
    "EvidenceService/DownloadAttachment": _row(OK, D, D, D, D, D),
    "EvidenceService/AppendCustody": _row(OK, D, D, D, D, D),
    "EvidenceService/GetCustody": _row(OK, D, D, OK, D, D),
}


# -- running it --------------------------------------------------------------------------------


async def _half_closed(data: bytes) -> AsyncIterator[bytes]:
    yield data  # one credit, then the client half-closes: the broker ends the stream with OK


async def call(world: World, name: str, column: str) -> str:
    rpc = RPCS[name]
    as_id = {
        "own": rpc.owner,
        "other": rpc.owner if rpc.other_sends_owners else OTHER,
        "suspended": SUSPENDED,
        "revoked": REVOKED,
        "unregistered": UNREGISTERED,
    }.get(column, rpc.owner)
    data = await rpc.build(world, as_id)
    method = "broker.v1." + name
    try:
        if rpc.stream:
            stream = world.channels[column].stream_stream("/" + method)(
                _half_closed(data), timeout=30
            )
            async for _ in stream:
                pass
            return OK
        if rpc.client_stream:  # + evidence
            reply = await world.channels[column].stream_unary("/" + method)(
                iter([data]), timeout=30
            )
        elif rpc.server_stream:
            async for _ in world.channels[column].unary_stream("/" + method)(data, timeout=30):
                pass
            return OK
        else:
            reply = await world.unary(column, method, data)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    if rpc.reveals is not None and not rpc.reveals(world, reply):
        return NOTHING
    return OK


def _deployment(root: Path) -> World:
    deployment = create_deployment(root / "deployment", DEMO_AGENCIES + EXTRA)
    registry = deployment.registry.read_text()
    marker = f'[agencies."{SUSPENDED}"]'
    head, tail = registry.split(marker)
    deployment.registry.write_text(
        head + marker + tail.replace('status = "active"', 'status = "suspended"', 1)
    )
    pki.issue_agency(deployment.keys_dir, UNREGISTERED)  # a CA certificate, no registry entry
    pki.issue_agency(deployment.keys_dir, NEW)  # registered by the matrix's RegisterAgency
    foreign = root / "foreign"
    pki.generate_ca(foreign)
    pki.issue_agency(foreign, OWNER)  # the owner's name, under another CA
    return World(root, deployment.keys_dir, foreign)


async def _start(root: Path) -> BrokerApp:
    from broker.sandbox import Deployment

    d = Deployment(
        root / "deployment",
        root / "deployment" / "keys",
        root / "deployment" / "registry.toml",
        root / "deployment" / "broker.toml",
        DEMO_AGENCIES + EXTRA,
    )
    app = BrokerApp(d.server_config(expiry_interval_s=0.5))
    app.poll_interval = 0.1
    await app.start()
    return app


async def test_authorisation_matrix(tmp_path: Path) -> None:
    world = _deployment(tmp_path)
    app = await _start(tmp_path)
    try:
        world.target = f"127.0.0.1:{app.port}"
        from broker.sandbox import Deployment

        await provision(
            Deployment(tmp_path / "deployment", world.keys, Path(), Path(), ()), world.target
        )
        # The fixture notice: FR-NCB to DE-BKA.
        envelope = seal(world.keys, red_header(OWNER), {RECIPIENT: POLICE})
        world.notice_id = notice_pb2.NoticeHeader.FromString(envelope.header.header_bytes).notice_id
        world.header_digest = es.header_digest(envelope.header.header_bytes)
        channel = _channel(world, Party("agency", OWNER))
        await channel.unary_unary("/broker.v1.AgencyService/Publish")(
            agency_pb2.PublishRequest(envelopes=[envelope]).SerializeToString(), timeout=30
        )
        world.channels["own"] = channel
        await _attachment_fixture(world)  # + evidence
        del world.channels["own"]
        await channel.close()
    finally:
        await app.stop(grace=0.5)
    pki.revoke(world.keys, Party("agency", REVOKED))  # then the broker restarts: read at start
    app = await _start(tmp_path)
    try:
        world.target = f"127.0.0.1:{app.port}"
        parties: dict[str, tuple[Party | None, Path | None]] = {
            "own": (Party("agency", OWNER), None),
            "admin": (Party("admin", ADMIN_ID), None),
            "auditor": (Party("auditor", AUDITOR_ID), None),
            "foreign": (Party("agency", OWNER), world.foreign_keys),
            "none": (None, None),
        }
        for name, (party, keys) in parties.items():
            world.channels[name] = _channel(world, party, keys)
        agencies = {
            "other": OTHER,
            "suspended": SUSPENDED,
            "revoked": REVOKED,
            "unregistered": UNREGISTERED,
            RECIPIENT: RECIPIENT,
        }
        for column, agency in agencies.items():
            world.channels[column] = _channel(world, Party("agency", agency))
        found = await world.as_auditor(
            "broker.v1.AuditService/GetEntries", audit_pb2.GetEntriesRequest()
        )
        for e in audit_pb2.GetEntriesResponse.FromString(found).entries:
            leaf = logleaf.parse(e.leaf)
            if leaf.WhichOneof("entry") == "notice" and leaf.notice.notice_id == world.notice_id:
                world.notice_leaf = e.index

        methods = [f"{s.name}/{m.name}" for s in SERVICES for m in s.methods]
        assert sorted(methods) == sorted(RPCS), "a new RPC needs a row in RPCS and EXPECTED"
        rows, wrong = [], []
        for name in methods:
            cells = []
            for (title, column), expected in zip(COLUMNS, EXPECTED[name], strict=True):
                if column == "own" and RPCS[name].owner == RECIPIENT:
                    world.channels["own"], saved = world.channels[RECIPIENT], world.channels["own"]
                    try:
                        got = await call(world, name, column)
                    finally:
                        world.channels["own"] = saved
                else:
                    got = await call(world, name, column)
                if got != expected:
                    wrong.append(f"{name} by {title}: {got}, expected {expected}")
                cells.append(got)
            rows.append([matrices.code(name), *cells])
    finally:
        for channel in world.channels.values():
            await channel.close()
        await app.stop(grace=0.5)
    assert not wrong, "\n".join(wrong)
    headers = ["RPC", *(title for title, _ in COLUMNS)]
    matrices.sync("authorisation", matrices.table(headers, rows))
    shutil.rmtree(tmp_path / "deployment", ignore_errors=True)
