"""The bad-input matrix: what a hostile or buggy client sends, against a real broker over
mutual TLS, and what it gets back. Every case gets a clear status (never INTERNAL), a
message short enough for the client's metadata limit that quotes at most a prefix of the
input, and changes nothing in the store. The run writes the bad-input table of
docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker import pki
from broker.bundles import read_bundle_dir
from broker.core import activation, lifecycle, receipts, relay
from broker.core import envelope_suite as es
from broker.core.identity import Party
from broker.sandbox import ADMIN_ID, REPO_POLICIES
from broker.v1 import admin_pb2, agency_pb2, audit_pb2, evidence_pb2, notice_pb2, requests_pb2

from .. import matrices
from ..content import manifest_for
from .conftest import Running
from .helpers import RED_SECTIONS, red_header, seal

pytestmark = pytest.mark.integration

FR = Party("agency", "FR-NCB")
DE = Party("agency", "DE-BKA")
ADMIN = Party("admin", ADMIN_ID)
AUDITOR = Party("auditor", "dpo")
POLICE = {"identity", "case_facts", "judicial", "biometrics"}
BIG = 1 << 63  # one beyond int64
NOTICE = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"  # a fixed id: the table must not vary


@dataclass(frozen=True)
class Case:
    name: str
    method: str  # Service/Method
    caller: Party
    build: Callable[[Running], bytes]
    status: str  # expected status name
    want: str  # expected in the message


def _header(**fields: object) -> notice_pb2.NoticeHeader:
    header = red_header(**fields)
    if "notice_id" not in fields:
        header.notice_id = NOTICE
    return header


def _publish(header: notice_pb2.NoticeHeader) -> Callable[[Running], bytes]:
    def build(b: Running) -> bytes:
        envelope = seal(b.deployment.keys_dir, header, {"DE-BKA": POLICE})
        return agency_pb2.PublishRequest(envelopes=[envelope]).SerializeToString()

    return build


def _resigned(edit: Callable[[notice_pb2.NoticeHeader], None]) -> Callable[[Running], bytes]:
    """A well-sealed notice whose header the originator then edited and signed again."""

    def build(b: Running) -> bytes:
        envelope = seal(b.deployment.keys_dir, _header(), {"DE-BKA": POLICE})
        header = notice_pb2.NoticeHeader.FromString(envelope.header.header_bytes)
        edit(header)
        envelope.header.header_bytes = header.SerializeToString()
        seed = pki.load_agency(b.deployment.keys_dir, "FR-NCB").signing_seed
        envelope.header.signature = es.ed25519_sign(
            seed, es.HEADER_CONTEXT + envelope.header.header_bytes
        )
        return agency_pb2.PublishRequest(envelopes=[envelope]).SerializeToString()

    return build


def _hybrid_without_pq_keys(b: Running) -> bytes:
    """A hybrid-suite envelope from FR-NCB, whose statement (here) carries no ML-DSA key:
    whatever ML-DSA key signed it, the broker has none to check it against."""
    import os

    from broker.core import envelope as env
    from broker.core import hybrid as hy

    seed = pki.load_agency(b.deployment.keys_dir, "FR-NCB").signing_seed + bytes(32)
    kem = hy.kem_public_key_bytes(bytes(64) + bytes([9]) * 32)
    envelope = env.seal(
        _header(),
        notice_pb2.OriginatorRestrictions(),
        [env.SectionInput("identity", b"x")],
        [env.RecipientInput("DE-BKA", bytes(32), frozenset({"identity"}), kem)],
        seed,
        os.urandom,
        suite=env.SUITE_HYBRID,
    )
    return agency_pb2.PublishRequest(envelopes=[envelope]).SerializeToString()


def _manifest(**edits: tuple[str, ...]) -> Callable[[Running], bytes]:
    """A Red notice whose signed content manifest (SectionDescriptor.content_fields) is
    the honest one with `edits`; none at all when no edit is given (an older SDK)."""

    def build(b: Running) -> bytes:
        honest = manifest_for("interpol.red", dict(RED_SECTIONS))
        manifest = {**honest, **edits} if edits else {}
        envelope = seal(b.deployment.keys_dir, _header(), {"DE-BKA": POLICE}, manifest=manifest)
        return agency_pb2.PublishRequest(envelopes=[envelope]).SerializeToString()

    return build


def _codes(codes: list[str]) -> Callable[[notice_pb2.NoticeHeader], None]:
    return lambda h: h.handling_codes.extend(codes)


def _set(**fields: object) -> Callable[[notice_pb2.NoticeHeader], None]:
    def edit(h: notice_pb2.NoticeHeader) -> None:
        for k, v in fields.items():
            setattr(h, k, v)

    return edit


def _msg(message: object) -> Callable[[Running], bytes]:
    return lambda b: message.SerializeToString()  # type: ignore[attr-defined]


def _receipt(notice_id: str) -> Callable[[Running], bytes]:
    def build(b: Running) -> bytes:
        seed = pki.load_agency(b.deployment.keys_dir, "DE-BKA").signing_seed
        receipt = notice_pb2.Receipt(
            notice_id=notice_id, version=1, recipient="DE-BKA", header_digest=bytes(32)
        )
        batch = receipts.sign_receipts("DE-BKA", [receipt], seed)
        return agency_pb2.SubmitReceiptsRequest(batches=[batch]).SerializeToString()

    return build


def _restrict(update: agency_pb2.RestrictionUpdate) -> Callable[[Running], bytes]:
    def build(b: Running) -> bytes:
        seed = pki.load_agency(b.deployment.keys_dir, "FR-NCB").signing_seed
        data = update.SerializeToString()
        return agency_pb2.UpdateRestrictionsRequest(
            update=data, signature=relay.sign_restriction_update(data, seed)
        ).SerializeToString()

    return build


def _act(**fields: object) -> Callable[[Running], bytes]:
    def build(b: Running) -> bytes:
        seed = pki.load_agency(b.deployment.keys_dir, "FR-NCB").signing_seed
        values: dict[str, object] = {
            "action_id": str(uuid.UUID(int=1)),
            "notice_id": NOTICE,
            "actor": "FR-NCB",
            "kind": notice_pb2.LIFECYCLE_SUSPEND,
            "reason": lifecycle.reason_digest("checking"),  # the text is sealed (SDK)
            "until_ms": 1,
        }
        values.update(fields)
        data = notice_pb2.LifecycleAction(**values).SerializeToString()  # type: ignore[arg-type]
        return notice_pb2.SignedLifecycleAction(
            action=data, signature=lifecycle.sign_action(data, seed)
        ).SerializeToString()

    return build


def _bundle(**replace: bytes) -> admin_pb2.PolicyBundle:
    files = read_bundle_dir(REPO_POLICIES)
    files.update(replace)
    return admin_pb2.PolicyBundle(
        files=[admin_pb2.BundleFile(path=p, content=c) for p, c in sorted(files.items())]
    )


NESTED = b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n"


def sign_entry(keys: Path, entry: admin_pb2.AgencyEntry) -> admin_pb2.SignedAgencyEntry:
    """What AdminClient.sign_entry does, without a channel (valid for 30 days)."""
    files = pki.load_party(keys, ADMIN)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    if not entry.not_after_ms:
        copy = admin_pb2.AgencyEntry()
        copy.CopyFrom(entry)
        copy.not_after_ms = time.time_ns() // 1_000_000 + 30 * 86_400_000
        entry = copy
    raw = entry.SerializeToString(deterministic=True)
    return admin_pb2.SignedAgencyEntry(
        entry=raw,
        signature=key.sign(activation.entry_message(raw), ec.ECDSA(hashes.SHA256())),
        admin_certificate=files.cert.read_bytes(),
    )


def _register(roles: list[str]) -> Callable[[Running], bytes]:
    def build(b: Running) -> bytes:
        keys = b.deployment.keys_dir
        pki.issue_agency(keys, "NO-KRIPOS")
        statement = pki.load_agency(keys, "NO-KRIPOS").statement
        entry = admin_pb2.AgencyEntry(
            id="NO-KRIPOS",
            country="NO",
            roles=roles,
            purposes=["locate_arrest"],
            status="active",
            key_serial=1,
            revision=1,
        )
        return admin_pb2.RegisterAgencyRequest(
            entry=sign_entry(keys, entry), key_statement=statement
        ).SerializeToString()

    return build


def _subscribe(*items: agency_pb2.SubscribeRequest) -> Callable[[Running], bytes]:
    return lambda b: b"".join(_frame(i.SerializeToString()) for i in items)


def _frame(data: bytes) -> bytes:  # several stream messages in one byte string
    return len(data).to_bytes(4, "big") + data


A = "broker.v1.AgencyService/"
AD = "broker.v1.AdminService/"
AU = "broker.v1.AuditService/"
EV = "broker.v1.EvidenceService/"  # + evidence
INVALID, EXHAUSTED, OK = "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OK"

CASES = [
    Case("not protobuf", A + "Publish", FR, lambda b: b"\xff\xff\xff", INVALID, "not a valid"),
    Case("no envelopes", A + "Publish", FR, _msg(agency_pb2.PublishRequest()), INVALID, "no"),
    Case(
        "hybrid suite, originator without PQ keys",
        A + "Publish",
        FR,
        _hybrid_without_pq_keys,
        INVALID,
        "carries no ML-DSA-65 key",
    ),
    Case(
        "notice id ../../etc/passwd",
        A + "Publish",
        FR,
        _publish(_header(notice_id="../../etc/passwd")),
        INVALID,
        "is not a lower-case UUID",
    ),
    Case(
        "notice id in upper case",
        A + "Publish",
        FR,
        _publish(_header(notice_id=NOTICE.upper())),
        INVALID,
        "is not a lower-case UUID",
    ),
    Case(
        "notice id of 60 KB",
        A + "Publish",
        FR,
        _resigned(_set(notice_id="a" * 60_000)),
        INVALID,
        "at most 256 are allowed",
    ),
    Case(
        "NUL byte in the kind",
        A + "Publish",
        FR,
        _resigned(_set(kind="interpol.red\x00")),
        INVALID,
        "control character",
    ),
    Case(
        "100,000 handling codes",
        A + "Publish",
        FR,
        _resigned(_codes(["H0"] * 100_000)),
        INVALID,
        "header_bytes is",
    ),
    Case(
        "9 handling codes",
        A + "Publish",
        FR,
        _resigned(_codes(["H0", "H1", "H2", "H3:a", "H3:b", "H3:c", "H3:d", "H3:e", "H3:f"])),
        INVALID,
        "holds 9 items; at most 8",
    ),
    Case(
        "a handling code twice",
        A + "Publish",
        FR,
        _resigned(_codes(["H0", "H0"])),
        INVALID,
        "lists 'H0' twice",
    ),
    Case(
        "TLP 99 (no such level)",
        A + "Publish",
        FR,
        _resigned(_set(tlp=99)),
        INVALID,
        "not a Tlp",
    ),
    Case(
        "an envelope beyond max_envelope_bytes",
        A + "Publish",
        FR,
        lambda b: agency_pb2.PublishRequest(
            envelopes=[
                seal(
                    b.deployment.keys_dir,
                    _header(),
                    {"DE-BKA": {"identity", "case_facts", "judicial"}},
                    {"identity": bytes(5 * 1024 * 1024), "case_facts": b"f", "judicial": b"j"},
                )
            ]
        ).SerializeToString(),
        EXHAUSTED,
        "the limit is",
    ),
    Case(
        "content manifest lacking a field the kind requires",
        A + "Publish",
        FR,
        _manifest(identity=("family_name", "forename", "date_of_birth")),
        INVALID,
        "interpol.red content: section 'identity' lacks nationality",
    ),
    Case(
        "no content manifest (an SDK from before manifests)",
        A + "Publish",
        FR,
        _manifest(),
        INVALID,
        "section 'case_facts' lacks offence, summary (its signed content manifest declares "
        "no field)",
    ),
    Case(
        "content in a manifest's field name",
        A + "Publish",
        FR,
        _manifest(identity=("family_name", "DOE John, born 1970-01-01 in Lyon, wanted for fraud")),
        INVALID,
        "a manifest holds catalogue field names only",
    ),
    Case(
        "a kind of 1 MB",
        A + "ResolveAudience",
        FR,
        _msg(agency_pb2.ResolveAudienceRequest(draft=notice_pb2.NoticeHeader(kind="k" * 2**20))),
        INVALID,
        "draft.kind is 1048576 bytes",
    ),
    Case(
        "a section twice",
        A + "ResolveAudience",
        FR,
        _msg(agency_pb2.ResolveAudienceRequest(sections=["identity", "identity"])),
        INVALID,
        "lists 'identity' twice",
    ),
    Case(
        "ack position 2^63",
        A + "Subscribe",
        FR,
        _subscribe(
            agency_pb2.SubscribeRequest(ack_events=agency_pb2.AckEvents(up_to_sequence=BIG))
        ),
        INVALID,
        "the largest value allowed",
    ),
    Case(
        "an empty stream message",
        A + "Subscribe",
        FR,
        _subscribe(agency_pb2.SubscribeRequest()),
        INVALID,
        "must carry credit",
    ),
    Case(
        "a receipt for notice id 'n'",
        A + "SubmitReceipts",
        DE,
        _receipt("n"),
        INVALID,
        "is not a lower-case UUID",
    ),
    Case(
        "17 receipt batches",
        A + "SubmitReceipts",
        DE,
        _msg(agency_pb2.SubmitReceiptsRequest(batches=[notice_pb2.ReceiptBatch()] * 17)),
        INVALID,
        "holds 17 items; at most 16",
    ),
    Case(
        "status of notice ../../etc/passwd",
        A + "GetDeliveryStatus",
        FR,
        _msg(agency_pb2.DeliveryStatusRequest(notice_id="../../etc/passwd")),
        INVALID,
        "is not a lower-case UUID",
    ),
    Case(
        "restriction sequence 2^63",
        A + "UpdateRestrictions",
        FR,
        _restrict(agency_pb2.RestrictionUpdate(notice_id=NOTICE, sequence=BIG)),
        INVALID,
        "update.sequence is 9223372036854775808",
    ),
    Case(
        "a denied country twice",
        A + "UpdateRestrictions",
        FR,
        _restrict(
            agency_pb2.RestrictionUpdate(
                notice_id=NOTICE,
                sequence=1,
                restrictions=notice_pb2.OriginatorRestrictions(deny_countries=["IT", "IT"]),
            )
        ),
        INVALID,
        "lists 'IT' twice",
    ),
    Case("action id 'a1'", A + "Act", FR, _act(action_id="a1"), INVALID, "not a lower-case UUID"),
    Case("a reason of 2 KB", A + "Act", FR, _act(reason="r" * 2048), INVALID, "at most 1024"),
    Case(
        "a reason in plain text",
        A + "Act",
        FR,
        _act(reason="arrested in Lyon"),
        INVALID,
        "the broker keeps no free text",
    ),
    Case("lifecycle kind 42", A + "Act", FR, _act(kind=42), INVALID, "not a LifecycleKind"),
    # + judicial: request steps and ListRequests
    Case(
        "a refusal with 17 grounds",
        A + "Act",
        FR,
        _act(kind=notice_pb2.LIFECYCLE_REQUEST_REFUSE, grounds=[f"g{i}" for i in range(17)]),
        INVALID,
        "holds 17 items; at most 16",
    ),
    Case(
        "a refusal ground twice",
        A + "Act",
        FR,
        _act(kind=notice_pb2.LIFECYCLE_REQUEST_REFUSE, grounds=["eio.11.1.d", "eio.11.1.d"]),
        INVALID,
        "lists 'eio.11.1.d' twice",
    ),
    Case(
        "result notice id 'r'",
        A + "Act",
        FR,
        _act(kind=notice_pb2.LIFECYCLE_REQUEST_PARTIAL, result_notice_id="r"),
        INVALID,
        "is not a lower-case UUID",
    ),
    Case(
        "a step on no request",
        A + "Act",
        FR,
        _act(kind=notice_pb2.LIFECYCLE_REQUEST_RECEIVE),
        "NOT_FOUND",
        "no request",
    ),
    Case(
        "requests of role 'judge'",
        A + "ListRequests",
        FR,
        _msg(requests_pb2.ListRequestsRequest(role="judge")),
        INVALID,
        "role must be issuer, executor",
    ),
    Case(
        "requests as of -1",
        A + "ListRequests",
        FR,
        _msg(requests_pb2.ListRequestsRequest(as_of_ms=-1)),
        INVALID,
        "must not be negative",
    ),
    Case(
        "checkpoint size 2^63",
        AU + "GetCheckpoint",
        AUDITOR,
        _msg(audit_pb2.GetCheckpointRequest(size=BIG)),
        INVALID,
        "size is 9223372036854775808",
    ),
    Case(
        "inclusion index 2^63",
        AU + "GetInclusionProof",
        AUDITOR,
        _msg(audit_pb2.GetInclusionProofRequest(index=BIG)),
        INVALID,
        "the largest value allowed",
    ),
    Case(
        "inclusion index 2^63 - 1",
        AU + "GetInclusionProof",
        AUDITOR,
        _msg(audit_pb2.GetInclusionProofRequest(index=BIG - 1)),
        INVALID,
        "the largest value allowed is 9223372036854775806",
    ),
    Case(
        "cosignature size 2^64 - 1",
        AU + "AddCosignature",
        FR,
        _msg(audit_pb2.AddCosignatureRequest(size=(1 << 64) - 1, signature_line="— x y")),
        INVALID,
        "size is 18446744073709551615",
    ),
    Case(
        "consistency from 2^63",
        AU + "GetConsistencyProof",
        AUDITOR,
        _msg(audit_pb2.GetConsistencyProofRequest(old_size=BIG, new_size=BIG)),
        INVALID,
        "old_size is",
    ),
    Case(
        "entries from 2^63",
        AU + "GetEntries",
        AUDITOR,
        _msg(audit_pb2.GetEntriesRequest(start=BIG)),
        INVALID,
        "start is",
    ),
    Case(
        "257 decision records",
        AU + "GetDecisionRecords",
        AUDITOR,
        _msg(audit_pb2.GetDecisionRecordsRequest(notices=[audit_pb2.NoticeRef()] * 257)),
        INVALID,
        "holds 257 items; at most 256",
    ),
    Case(
        "proof of delivery for a NUL id",
        AU + "GetProofOfDelivery",
        FR,
        _msg(audit_pb2.GetProofOfDeliveryRequest(notice_id="\x00")),
        INVALID,
        "control character",
    ),
    Case(
        "groups.toml holding groups = []",
        AD + "ValidatePolicy",
        ADMIN,
        _msg(admin_pb2.ValidatePolicyRequest(bundle=_bundle(**{"groups.toml": b"groups = []\n"}))),
        OK,
        "groups must be tables",
    ),
    Case(
        "TOML nested 5000 deep",
        AD + "ValidatePolicy",
        ADMIN,
        _msg(admin_pb2.ValidatePolicyRequest(bundle=_bundle(**{"groups.toml": NESTED}))),
        OK,
        "nested too deeply",
    ),
    Case(
        "explain under a bundle nested 5000 deep",
        AD + "ExplainDecision",
        ADMIN,
        _msg(admin_pb2.ExplainDecisionRequest(bundle=_bundle(**{"catalogue.toml": NESTED}))),
        INVALID,
        "nested too deeply",
    ),
    Case(
        "a bundle file twice",
        AD + "ValidatePolicy",
        ADMIN,
        _msg(
            admin_pb2.ValidatePolicyRequest(
                bundle=admin_pb2.PolicyBundle(files=[admin_pb2.BundleFile(path="a.toml")] * 2)
            )
        ),
        INVALID,
        "lists 'a.toml' twice",
    ),
    Case(
        "a role the catalogue lacks",
        AD + "RegisterAgency",
        ADMIN,
        _register(["spy"]),
        INVALID,
        "unknown role 'spy'",
    ),
    Case(
        "a status reason of 2 KB",
        AD + "SetAgencyStatus",
        ADMIN,
        _msg(admin_pb2.SetAgencyStatusRequest(reason="r" * 2048)),
        INVALID,
        "reason is 2048 bytes",
    ),
    # + evidence: attachments and custody
    Case(
        "attachment of notice ../../etc/passwd",
        EV + "GetAttachmentStatus",
        FR,
        _msg(evidence_pb2.AttachmentRef(notice_id="../../etc/passwd", version=1, section="photos")),
        INVALID,
        "is not a lower-case UUID",
    ),
    Case(
        "attachment of a notice never published",
        EV + "GetAttachmentStatus",
        FR,
        _msg(evidence_pb2.AttachmentRef(notice_id=NOTICE, version=1, section="photos")),
        "NOT_FOUND",
        "no notice",
    ),
    Case(
        "attachment version 0",
        EV + "DownloadAttachment",
        FR,
        _msg(
            evidence_pb2.DownloadRequest(
                ref=evidence_pb2.AttachmentRef(notice_id=NOTICE, version=0, section="photos")
            )
        ),
        INVALID,
        "ref.version must be 1 or more",
    ),
    Case(
        "an upload chunk of 5 MiB",
        EV + "UploadAttachment",
        FR,
        _msg(
            evidence_pb2.UploadChunk(
                ref=evidence_pb2.AttachmentRef(notice_id=NOTICE, version=1, section="photos"),
                ciphertext=bytes(5 * 1024 * 1024),
            )
        ),
        INVALID,
        "ciphertext is 5242880 bytes",
    ),
    Case(
        "a custody record that is not protobuf",
        EV + "AppendCustody",
        FR,
        _msg(evidence_pb2.SignedCustody(record=b"\xff\xff", signature=bytes(64))),
        INVALID,
        "not a valid broker.v1.CustodyRecord",
    ),
    Case(
        "a custody record in another agency's name",
        EV + "AppendCustody",
        FR,
        _msg(
            evidence_pb2.SignedCustody(
                record=evidence_pb2.CustodyRecord(
                    notice_id=NOTICE, version=1, section="photos", agency="DE-BKA"
                ).SerializeToString(),
                signature=bytes(64),
            )
        ),
        "PERMISSION_DENIED",
        "a custody record by",
    ),
]

# Signed on a timer and cosigned by the deployment's witness: no request writes them.
SKIP_TABLES = {"tlog_checkpoints", "tlog_cosignatures"}


def store_digest(database: Path) -> str:
    """SHA-256 over every row of every table the requests could change."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in sorted(set(tables) - SKIP_TABLES):
            h.update(table.encode())
            for row in sorted(conn.execute(f"SELECT * FROM {table}"), key=repr):
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        conn.close()


async def send(b: Running, case: Case) -> tuple[str, str]:
    """Send the case's bytes; return (status name, message or diagnostic)."""
    channel = b.channel(case.caller)
    path = "/" + case.method
    data = case.build(b)
    try:
        if case.method.endswith("/Subscribe"):
            frames = []
            while data:
                n = int.from_bytes(data[:4], "big")
                frames.append(data[4 : 4 + n])
                data = data[4 + n :]
            call = channel.stream_stream(path)(iter(frames), timeout=30)
            async for _ in call:
                pass
            return OK, ""
        reply = await channel.unary_unary(path)(data, timeout=60)
        if case.method.endswith("/ValidatePolicy"):
            resp = admin_pb2.ValidatePolicyResponse.FromString(reply)
            return OK, "ok = false: " + "; ".join(
                f"{d.file}:{d.line}:{d.column}: {d.message}" for d in resp.diagnostics
            )
        return OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or ""
    finally:
        await channel.close()


async def settle(b: Running) -> None:
    """Let the log catch up with the set-up (registry signatures ...) before measuring."""
    channel = b.channel(AUDITOR)
    try:
        get = channel.unary_unary("/broker.v1.AuditService/GetCheckpoint")
        for _ in range(20):
            before = store_digest(b.app.config.database)
            await get(audit_pb2.GetCheckpointRequest().SerializeToString(), timeout=30)
            if store_digest(b.app.config.database) == before:
                return
    finally:
        await channel.close()
    raise AssertionError("the store kept changing with no request")


async def test_bad_input_matrix(broker: Running) -> None:
    database = broker.app.config.database
    await settle(broker)
    rows = []
    wrong = []
    for case in CASES:
        before = store_digest(database)
        status, message = await send(broker, case)
        unchanged = store_digest(database) == before
        if status != case.status or case.want not in message or not unchanged:
            wrong.append(f"{case.name}: {status} {message!r} (store unchanged: {unchanged})")
        if len(message.encode()) > 1024:
            wrong.append(f"{case.name}: a message of {len(message.encode())} bytes")
        rows.append(
            [
                matrices.cell(case.name),
                matrices.code(case.method.removeprefix("broker.v1.")),
                status,
                matrices.code(matrices.normalise(message)),
                "yes" if unchanged else "**NO**",
            ]
        )
    assert not wrong, "\n".join(wrong)
    header = ["case", "RPC", "status", "message", "nothing stored"]
    matrices.sync("bad-input", matrices.table(header, rows))
