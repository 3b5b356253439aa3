"""Fuzz targets: one function per parser, each taking arbitrary bytes.

A target may raise only the project's error family (BrokerError); anything else is a
finding. The same targets run under hypothesis in `make test` (tests/fuzz/test_targets.py)
and under atheris, coverage-guided, in `make fuzz` (tests/fuzz/atheris_main.py).

Signatures stop a fuzzer at the door, so the signed targets sign what the fuzzer wrote with
fixed test keys before checking it: they explore what comes after the signature (the
parse, the bounds, the tree and policy checks), which is where a malicious but
authenticated client can reach.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError
from nacl.public import PrivateKey

from broker import pki
from broker.bundles import read_bundle_dir
from broker.config import load_config
from broker.core import checkpoint as cp
from broker.core import envelope as env
from broker.core import envelope_suite as es
from broker.core import lifecycle, logleaf, receipts, relay
from broker.core.identity import parse_party_uri
from broker.core.merkle import leaf_hash, root_from_hashes
from broker.core.policy import AgencyProfile, compile_bundle, source
from broker.errors import BrokerError
from broker.registry import parse_registry
from broker.sandbox import REPO_POLICIES
from broker.server.wire import parse as parse_request
from broker.v1 import audit_pb2, notice_pb2

from .strategies import REQUEST_TYPES

NOW = 1_790_000_000_000
FR_SEED = bytes(range(32))
DE_SEED = bytes(range(32, 64))
DE_BOX = PrivateKey(bytes(range(64, 96)))
FR_PUB = es.ed25519_public_key(FR_SEED)
DE_PUB = es.ed25519_public_key(DE_SEED)
LOG_SEED = bytes(range(96, 128))
LOG_NAME = "sealed-notice-broker/fuzz"
LOG_VERIFIER = cp.Verifier(LOG_NAME, cp.ed25519_public_key(LOG_SEED), cp.SIG_TYPE_ED25519)
FILES = read_bundle_dir(REPO_POLICIES)
POLICY = compile_bundle(FILES)
_PURPOSES = frozenset({"locate_arrest", "locate_missing", "identification", "investigation"})
REGISTRY = {
    "FR-NCB": relay.RegisteredAgency(
        AgencyProfile("FR-NCB", "FR", frozenset({"ncb", "police"}), purposes=_PURPOSES),
        FR_PUB,
        bytes(32),
        b"",
    ),
    "DE-BKA": relay.RegisteredAgency(
        AgencyProfile("DE-BKA", "DE", frozenset({"police", "sirene"}), purposes=_PURPOSES),
        DE_PUB,
        bytes(DE_BOX.public_key),
        b"",
    ),
}
LIMITS = relay.Limits()
_SCRATCH = Path(tempfile.mkdtemp(prefix="broker-fuzz-"))  # the file loaders' input
atexit.register(shutil.rmtree, _SCRATCH, True)


def _counter_rng() -> Callable[[int], bytes]:
    state = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            state[0] += 1
            out += hashlib.sha256(state[0].to_bytes(8, "big")).digest()
        return out[:n]

    return rng


def _header(**fields: object) -> notice_pb2.NoticeHeader:
    header = notice_pb2.NoticeHeader(
        notice_id="6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        version=1,
        originator="FR-NCB",
        kind="interpol.red",
        purpose="locate_arrest",
        data_subject=notice_pb2.DATA_SUBJECT_SUSPECT,
        tlp=notice_pb2.TLP_AMBER,
        created_at_ms=NOW,
        expires_at_ms=NOW + 86_400_000,
    )
    for k, v in fields.items():
        setattr(header, k, v)
    return header


def sealed_envelope() -> notice_pb2.Envelope:
    sections = [env.SectionInput(n, n.encode() * 3) for n in ("case_facts", "identity", "judicial")]
    recipient = env.RecipientInput(
        "DE-BKA", bytes(DE_BOX.public_key), frozenset({"case_facts", "identity", "judicial"})
    )
    return env.seal(
        _header(),
        notice_pb2.OriginatorRestrictions(),
        sections,
        [recipient],
        FR_SEED,
        _counter_rng(),
    )


# -- the targets ------------------------------------------------------------------------------


def envelope(data: bytes) -> None:
    """A publish as the broker checks it (accept_publish), then as the recipient opens it."""
    msg = notice_pb2.Envelope()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        return
    msg.header.signature = es.ed25519_sign(FR_SEED, es.HEADER_CONTEXT + msg.header.header_bytes)
    try:
        created = notice_pb2.NoticeHeader.FromString(msg.header.header_bytes).created_at_ms
    except DecodeError:
        created = NOW
    now = created if 0 < created < 1 << 62 else NOW
    accepted = relay.accept_publish(
        msg.SerializeToString(), "FR-NCB", REGISTRY, POLICY, now, LIMITS
    )
    for plan in accepted.plans:
        delivery = env.delivery_for(msg, plan.recipient, plan.sections)
        env.open_delivery(delivery, plan.recipient, bytes(DE_BOX), FR_PUB)


def delivery(data: bytes) -> None:
    """What a recipient receives: opening fails with one opaque error, whatever the bytes."""
    msg = notice_pb2.Delivery()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        return
    msg.header.signature = es.ed25519_sign(FR_SEED, es.HEADER_CONTEXT + msg.header.header_bytes)
    env.open_delivery(msg, "DE-BKA", bytes(DE_BOX), FR_PUB)


def receipt_batch(data: bytes) -> None:
    """A receipt batch signed by the recipient, then each proven receipt offline."""
    batch = notice_pb2.ReceiptBatch()
    try:
        batch.ParseFromString(data)
    except DecodeError:
        return
    batch.signer = "DE-BKA"
    if 1 <= len(batch.receipts) <= receipts.MAX_BATCH:
        root = root_from_hashes([leaf_hash(r) for r in batch.receipts])
        message = receipts.receipt_batch_message(root, len(batch.receipts))
        batch.signature = es.ed25519_sign(DE_SEED, message)
    for proven, _receipt in relay.accept_receipts(batch, "DE-BKA", REGISTRY, LIMITS):
        receipts.verify_proven_receipt(proven, DE_PUB)


def proven_receipt(data: bytes) -> None:
    proven = notice_pb2.ProvenReceipt()
    try:
        proven.ParseFromString(data)
    except DecodeError:
        return
    receipts.verify_proven_receipt(proven, DE_PUB)


def checkpoint(data: bytes) -> None:
    """A checkpoint text and a signed note: parsed raw, then signed and opened."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    with contextlib.suppress(BrokerError):
        cp.parse_checkpoint(text)
    with contextlib.suppress(BrokerError):
        cp.open_checkpoint(text, [LOG_VERIFIER])
    note = cp.sign_note(text, LOG_NAME, LOG_SEED)  # the fuzzer's text, validly signed
    cp.open_note(note, [LOG_VERIFIER])
    cp.open_checkpoint(note, [LOG_VERIFIER])


def note_keys(data: bytes) -> None:
    """Verifier and signer key strings, and cosignature lines."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    for parse in (cp.parse_verifier_key, cp.parse_signer_key):
        with contextlib.suppress(BrokerError):
            parse(text)
    checkpoint_text = cp.format_checkpoint(cp.Checkpoint(LOG_NAME, 1, bytes(32)))
    verifier = cp.Verifier("w", DE_PUB, cp.SIG_TYPE_COSIGNATURE_V1)
    cp.verify_cosignature(checkpoint_text, text, verifier)


def log_leaf(data: bytes) -> None:
    leaf = logleaf.parse(data)
    logleaf.index_of(leaf)
    logleaf.describe(leaf)
    logleaf.to_json(leaf)


_CATALOGUE = source.parse_catalogue("catalogue.toml", FILES["catalogue.toml"])
_GROUPS = source.parse_groups("groups.toml", FILES["groups.toml"])
_POLICY_FILES = ["catalogue.toml", "groups.toml", "rules/fuzz.toml", *sorted(FILES)]


def policy(data: bytes) -> None:
    """One file of the shipped bundle replaced by the input. The first byte picks which
    (its low bits) and how: alone through its parser (fast), or with the whole bundle
    compiled (its high bit: the engine too)."""
    if not data:
        return
    path = _POLICY_FILES[(data[0] & 0x7F) % len(_POLICY_FILES)]
    content = data[1:]
    if data[0] & 0x80:
        compile_bundle({**FILES, path: content})
    elif path == "catalogue.toml":
        source.parse_catalogue(path, content)
    elif path == "groups.toml":
        source.parse_groups(path, content)
    elif path.startswith("rules/"):
        source.parse_rules(path, content, source.new_context(_CATALOGUE, _GROUPS))
    else:
        source.parse_toml(path, content)


def _scratch(name: str, data: bytes) -> Path:
    path = _SCRATCH / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def config(data: bytes) -> None:
    load_config(_scratch("broker.toml", data))


def registry(data: bytes) -> None:
    parse_registry(_scratch("registry.toml", data), POLICY)


def revocation_list(data: bytes) -> None:
    _scratch("ca/revoked.txt", data)
    pki.revoked_parties(_SCRATCH)


_STATE = lifecycle.NoticeState(
    notice_id="6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
    originator="FR-NCB",
    kind="interpol.red",
    created_at_ms=NOW - 1000,
    expires_at_ms=NOW + 86_400_000,
    received=frozenset({"DE-BKA"}),
    pending=frozenset(),
)


def lifecycle_action(data: bytes) -> None:
    """A signed lifecycle action, as the broker verifies and plans it."""
    signed = notice_pb2.SignedLifecycleAction(action=data)
    signed.signature = lifecycle.sign_action(data, FR_SEED)
    action = lifecycle.verify_action(signed, FR_PUB)
    lifecycle.plan_action(action, _STATE, now_ms=NOW, retention_days=1826)


def restriction_update(data: bytes) -> None:
    signature = relay.sign_restriction_update(data, FR_SEED)
    update = relay.accept_restriction_update(data, signature, "FR-NCB", "FR-NCB", FR_PUB)
    relay.restrictions_of(update.restrictions)


_REQUEST_BY_NAME = {cls.DESCRIPTOR.full_name.encode(): cls for cls in REQUEST_TYPES}


def request(data: bytes) -> None:
    """Request bytes of any RPC, through wire.parse. The type is named by a first line
    ("broker.v1.GetCheckpointRequest\\n", stable as RPCs are added: what the regression
    files use) or, failing that, picked by the first byte."""
    if not data:
        return
    name, newline, body = data.partition(b"\n")
    cls = _REQUEST_BY_NAME.get(name) if newline else None
    if cls is None:
        cls, body = REQUEST_TYPES[data[0] % len(REQUEST_TYPES)], data[1:]
    parse_request(cls, body)


def party_uri(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    parse_party_uri(text)


# -- seeds: valid inputs for the fuzzers to start from -----------------------------------------


def _seeds_envelope() -> list[bytes]:
    return [sealed_envelope().SerializeToString()]


def _seeds_delivery() -> list[bytes]:
    e = sealed_envelope()
    return [env.delivery_for(e, "DE-BKA", ["case_facts", "identity"]).SerializeToString()]


def _receipt() -> notice_pb2.Receipt:
    return notice_pb2.Receipt(
        notice_id="6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        version=1,
        recipient="DE-BKA",
        header_digest=bytes(32),
        sections=["identity"],
        received_at_ms=NOW,
    )


def _seeds_receipts() -> list[bytes]:
    return [receipts.sign_receipts("DE-BKA", [_receipt(), _receipt()], DE_SEED).SerializeToString()]


def _seeds_proven() -> list[bytes]:
    batch = receipts.sign_receipts("DE-BKA", [_receipt()], DE_SEED)
    return [receipts.verify_receipt_batch(batch, DE_PUB)[0].SerializeToString()]


def _seeds_checkpoint() -> list[bytes]:
    text = cp.format_checkpoint(cp.Checkpoint(LOG_NAME, 5, bytes(range(32))))
    return [text.encode(), cp.sign_note(text, LOG_NAME, LOG_SEED).encode()]


def _seeds_note_keys() -> list[bytes]:
    text = cp.format_checkpoint(cp.Checkpoint(LOG_NAME, 1, bytes(32)))
    return [
        cp.format_verifier_key(LOG_NAME, LOG_VERIFIER.public_key).encode(),
        cp.format_signer_key(LOG_NAME, LOG_SEED).encode(),
        cp.cosign(text, "w", DE_SEED, 1_790_000_000).encode(),
    ]


def _seeds_log_leaf() -> list[bytes]:
    leaf = logleaf.lifecycle(
        kind="withdraw",
        notice_id="6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        version=1,
        originator="FR-NCB",
        recipient="DE-BKA",
        detail="x",
        logged_at_ms=NOW,
    )
    return [logleaf.serialize(leaf)]


def _seeds_policy() -> list[bytes]:
    out = []
    for n in ("catalogue.toml", "groups.toml", *sorted(f for f in FILES if f.startswith("rules/"))):
        i = _POLICY_FILES.index(n)
        out += [bytes([i]) + FILES[n], bytes([i | 0x80]) + FILES[n]]
    return out


def _seeds_config() -> list[bytes]:
    return [b'[server]\nlisten = "127.0.0.1:7443"\ndata_dir = "d"\n\n[limits]\nlease_ms = 1000\n']


def _seeds_registry() -> list[bytes]:
    return [
        b'[agencies."FR-NCB"]\ncountry = "FR"\nroles = ["police"]\n'
        b'purposes = ["locate_arrest"]\nstatus = "active"\n'
    ]


def _seeds_revocation() -> list[bytes]:
    return [b"# revoked\nurn:broker:agency:FR-NCB\nurn:broker:admin:alice\n"]


def _seeds_action() -> list[bytes]:
    action = notice_pb2.LifecycleAction(
        action_id="123e4567-e89b-42d3-a456-426614174000",
        notice_id=_STATE.notice_id,
        actor="FR-NCB",
        kind=notice_pb2.LIFECYCLE_SUSPEND,
        reason="r",
        until_ms=NOW + 1000,
        at_ms=NOW,
    )
    return [action.SerializeToString()]


def _seeds_update() -> list[bytes]:
    from broker.v1 import agency_pb2

    update = agency_pb2.RestrictionUpdate(
        notice_id=_STATE.notice_id,
        sequence=1,
        restrictions=notice_pb2.OriginatorRestrictions(deny_countries=["IT"]),
    )
    return [update.SerializeToString()]


def _seeds_request() -> list[bytes]:
    size = audit_pb2.GetCheckpointRequest(size=3).SerializeToString()
    return [b"broker.v1.GetCheckpointRequest\n" + size, bytes([0])]


def _seeds_uri() -> list[bytes]:
    return [b"urn:broker:agency:FR-NCB"]


@dataclass(frozen=True)
class Target:
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


TARGETS: dict[str, Target] = {
    "envelope": Target(envelope, _seeds_envelope),
    "delivery": Target(delivery, _seeds_delivery),
    "receipt_batch": Target(receipt_batch, _seeds_receipts),
    "proven_receipt": Target(proven_receipt, _seeds_proven),
    "checkpoint": Target(checkpoint, _seeds_checkpoint),
    "note_keys": Target(note_keys, _seeds_note_keys),
    "log_leaf": Target(log_leaf, _seeds_log_leaf),
    "policy": Target(policy, _seeds_policy),
    "config": Target(config, _seeds_config),
    "registry": Target(registry, _seeds_registry),
    "revocation_list": Target(revocation_list, _seeds_revocation),
    "lifecycle_action": Target(lifecycle_action, _seeds_action),
    "restriction_update": Target(restriction_update, _seeds_update),
    "request": Target(request, _seeds_request),
    "party_uri": Target(party_uri, _seeds_uri),
}


def run(name: str, data: bytes) -> None:
    """Run target `name` on `data`; return quietly on the project's own errors. Any other
    exception escapes: it is a finding."""
    with contextlib.suppress(BrokerError):
        TARGETS[name].run(data)
