"""The transparency log over real gRPC with mutual TLS: AuditService authorization,
proofs of delivery verified offline, and the tamper tests of the acceptance criteria:
a leaf altered in the database, a rewritten history, two forked logs under one key,
and a delivery recorded under a bundle that forbade it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker import pki
from broker.bundles import read_bundle_dir as read_policy_dir
from broker.cli.main import main
from broker.client import audit as ac
from broker.core import auditing, logleaf, merkle
from broker.core import pod as pd
from broker.core import receipts as rcp
from broker.core import replay as rp
from broker.core import tlog as tree
from broker.core.checkpoint import Checkpoint, Signer, cosign, format_checkpoint, sign_note
from broker.core.decisions import DecisionCache
from broker.core.identity import Party
from broker.core.policy import AgencyProfile, compile_bundle
from broker.core.relay import facts_of
from broker.errors import InvalidArgument, NotFound, PermissionDenied
from broker.sandbox import AUDITOR_ID, REPO_POLICIES, provision
from broker.server.app import BrokerApp
from broker.store.tlog import node_id
from broker.v1 import agency_pb2, audit_pb2, audit_pb2_grpc, notice_pb2

from .conftest import Running
from .helpers import RED_SECTIONS, now_ms, red_header, seal, streamed

pytestmark = pytest.mark.integration
POLICE = {"identity", "case_facts", "judicial", "biometrics"}
AUDITOR = Party("auditor", AUDITOR_ID)


def auditor(b: Running, party: Party = AUDITOR) -> ac.AuditClient:
    return ac.AuditClient(b.target, b.deployment.keys_dir, party)


def trust(b: Running, **kw: Any) -> ac.Trust:
    return ac.load_trust(b.deployment.keys_dir, **kw)


async def publish(
    b: Running,
    audience: dict[str, set[str]] | None = None,
    *,
    receipted: bool = True,
    originator: str = "FR-NCB",
) -> tuple[str, bytes]:
    """Publish a red notice by hand; each recipient signs a receipt for what it was sent."""
    audience = audience or {"DE-BKA": POLICE, "IT-BORDER": {"identity"}}
    envelope = seal(b.deployment.keys_dir, red_header(originator), audience)
    resp = await b.stub(Party("agency", originator)).Publish(
        agency_pb2.PublishRequest(envelopes=[envelope]), timeout=10
    )
    result = resp.results[0]
    if receipted:
        for recipient, sections in audience.items():
            await submit_receipt(b, recipient, result.notice_id, result.header_digest, sections)
    return result.notice_id, bytes(result.header_digest)


async def submit_receipt(
    b: Running, recipient: str, notice_id: str, digest: bytes, sections: set[str]
) -> None:
    creds = pki.load_agency(b.deployment.keys_dir, recipient)
    receipt = notice_pb2.Receipt(
        notice_id=notice_id,
        version=1,
        recipient=recipient,
        header_digest=digest,
        sections=sorted(sections),
        received_at_ms=now_ms(),
    )
    batch = rcp.sign_receipts(recipient, [receipt], creds.signing_seed)
    stub = b.stub(Party("agency", recipient))
    await streamed(stub)  # a receipt counts only for what was streamed
    await stub.SubmitReceipts(agency_pb2.SubmitReceiptsRequest(batches=[batch]), timeout=10)


def db(b: Running) -> sqlite3.Connection:
    return sqlite3.connect(b.app.config.database, timeout=10, isolation_level=None)


def leaves_of(b: Running) -> list[tuple[int, bytes]]:
    conn = db(b)
    try:
        return [(int(i), bytes(d)) for i, d in conn.execute("SELECT idx, leaf FROM tlog_leaves")]
    finally:
        conn.close()


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli.main",
        "audit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def conn_args(b: Running, party: Party = AUDITOR) -> list[str]:
    return [
        "--broker",
        b.target,
        "--keys-dir",
        str(b.deployment.keys_dir),
        "--as",
        f"{party.kind}:{party.id}",
    ]


# ---------------------------------------------------------------------------- checkpoints


async def test_checkpoints_follow_the_log_and_verify(broker: Running) -> None:
    await publish(broker)
    size = len(leaves_of(broker))

    def signed_sizes() -> list[int]:
        conn = db(broker)
        try:
            return [int(r[0]) for r in conn.execute("SELECT size FROM tlog_checkpoints")]
        finally:
            conn.close()

    # The background task signs one as the log grows (no RPC asks). Other leaves (registry
    # and activation catch-up) may land meanwhile, so the first checkpoint covering the
    # publish can be larger than the size read here.
    for _ in range(200):
        if max(signed_sizes(), default=0) >= size:
            break
        await asyncio.sleep(0.05)
    assert max(signed_sizes(), default=0) >= size
    t = trust(broker)
    async with auditor(broker) as client:
        verified = t.open((await client.checkpoint()).note)
        latest = verified.checkpoint.size
        assert latest >= size
        assert verified.checkpoint.origin == "sealed-notice-broker/broker"
        hashes = [merkle.leaf_hash(leaf) for _, leaf in leaves_of(broker)][:latest]
        assert verified.checkpoint.root == merkle.root_from_hashes(hashes)
        assert (await client.checkpoint(size=latest)).size == latest
        with pytest.raises(NotFound, match="no checkpoint of size 999999"):
            await client.checkpoint(size=999_999)


# -------------------------------------------------------------------------- authorization


async def test_who_sees_what(broker: Running) -> None:
    notice_id, _ = await publish(broker)
    size = len(leaves_of(broker))

    async def entries(party: Party) -> list[audit_pb2.LogLeaf]:
        async with auditor(broker, party) as client:
            return [logleaf.parse(e.leaf) for e in await client.entries(0, size)]

    everything = await entries(AUDITOR)
    assert len(everything) == size
    mine = await entries(Party("agency", "FR-NCB"))
    assert [logleaf.kind_of(leaf) for leaf in mine] == [
        "notice",
        "decision",
        "withheld",
        "receipt",
        "receipt",
    ]
    for recipient in ("DE-BKA", "IT-BORDER"):  # its own receipt; never what was withheld
        seen = await entries(Party("agency", recipient))
        assert [(logleaf.kind_of(x), x.receipt.recipient) for x in seen] == [("receipt", recipient)]

    notice_index = next(
        i for i, leaf in leaves_of(broker) if logleaf.kind_of(logleaf.parse(leaf)) == "notice"
    )
    async with auditor(broker, Party("agency", "DE-BKA")) as de:
        with pytest.raises(NotFound):
            await de.inclusion(notice_index)
        own = next(
            i
            for i, leaf in leaves_of(broker)
            if logleaf.index_of(logleaf.parse(leaf)).reader == "DE-BKA"
        )
        proof = await de.inclusion(own)
        cp = trust(broker).open((await de.checkpoint(size=proof.tree_size)).note).checkpoint
        merkle.verify_inclusion(
            own, cp.size, merkle.leaf_hash(proof.entry.leaf), proof.hashes, cp.root
        )
        with pytest.raises(NotFound):
            await de.pod(notice_id)
        assert await de.decision_records([(notice_id, 1)]) == {}  # not its notice
    async with auditor(broker, Party("agency", "FR-NCB")) as fr:
        with pytest.raises(PermissionDenied, match="auditors"):
            await fr.bundle(broker.app.policy.version)
        assert len(await fr.decision_records([(notice_id, 1)])) == 1
    admin = audit_pb2_grpc.AuditServiceStub(broker.channel(Party("admin", "registrar")))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    raw = broker.channel(AUDITOR).unary_unary("/broker.v1.AuditService/GetEntries")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await raw(b"\xff\xff\xff", timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---------------------------------------------------------------------- proof of delivery


async def test_proof_of_delivery_verifies_offline(broker: Running, tmp_path: Path) -> None:
    notice_id, digest = await publish(broker)
    t = trust(broker)
    async with auditor(broker, Party("agency", "FR-NCB")) as fr:
        pod = await fr.pod(notice_id)
    report = pd.verify_pod(pod, t.ca_key, t.log, origin=t.origin)
    assert (report.notice_id, report.originator, report.header_digest) == (
        notice_id,
        "FR-NCB",
        digest,
    )
    assert [(r.recipient, r.sections) for r in report.receipts] == [
        ("DE-BKA", tuple(sorted(POLICE))),
        ("IT-BORDER", ("identity",)),
    ]
    assert report.pending == ()
    assert any("withheld" in e and "IT-BORDER" in e for e in report.events)

    path = tmp_path / "pod.bin"
    path.write_bytes(pod.SerializeToString())
    keys = ["--keys-dir", str(broker.deployment.keys_dir)]
    code = main(["audit", "verify", str(path), *keys, "--json", "--require-cosignatures", "0"])
    assert code == 0
    # By default the deployment's trust.toml applies: a checkpoint its witness cosigned.
    for _ in range(100):
        async with auditor(broker) as client:
            path.write_bytes((await client.pod(notice_id)).SerializeToString())
        if main(["audit", "verify", str(path), *keys, "--json"]) == 0:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("no cosigned proof of delivery")

    # Any part that does not hold up fails the bundle, offline.
    other = pki.load_agency(broker.deployment.keys_dir, "IT-BORDER").statement
    swapped = audit_pb2.ProofOfDelivery()
    swapped.CopyFrom(pod)
    swapped.receipts[0].key_statement.CopyFrom(other)
    with pytest.raises(pd.PodError, match="not for the expected agency"):
        pd.verify_pod(swapped, t.ca_key, t.log)
    altered = audit_pb2.ProofOfDelivery()
    altered.CopyFrom(pod)
    leaf = logleaf.parse(altered.receipts[1].logged.entry.leaf)
    leaf.receipt.sections.append("biometrics")
    altered.receipts[1].logged.entry.leaf = logleaf.serialize(leaf)
    with pytest.raises(pd.PodError, match="not in the log"):
        pd.verify_pod(altered, t.ca_key, t.log)
    stranger = Signer(t.log.name, b"\x09" * 32)
    with pytest.raises(auditing.CheckpointError):
        pd.verify_pod(pod, t.ca_key, stranger.verifier)
    bogus = tmp_path / "bogus.bin"
    bogus.write_bytes(altered.SerializeToString())
    assert main(["audit", "verify", str(bogus), *keys]) == 1


# ------------------------------------------------------------------------- tamper tests


async def test_a_leaf_altered_in_the_database_is_caught(broker: Running, tmp_path: Path) -> None:
    notice_id, _ = await publish(broker)
    t = trust(broker)
    state = tmp_path / "auditor.json"
    async with auditor(broker) as client:
        first = await ac.monitor(client, t, state, check_entries=True)
        assert first.ok, first.message

        # The broker's database is edited: IT-BORDER's receipt now says more than it signed.
        conn = db(broker)
        index, data = next(
            (i, d)
            for i, d in conn.execute("SELECT idx, leaf FROM tlog_leaves WHERE kind='receipt'")
            if logleaf.parse(d).receipt.recipient == "IT-BORDER"
        )
        leaf = logleaf.parse(data)
        leaf.receipt.sections.append("biometrics")
        conn.execute("UPDATE tlog_leaves SET leaf=? WHERE idx=?", (logleaf.serialize(leaf), index))
        conn.close()

        pod = await client.pod(notice_id)
        with pytest.raises(pd.PodError, match=f"log entry {index}.*not in the log"):
            pd.verify_pod(pod, t.ca_key, t.log)
        path = tmp_path / "pod.bin"
        path.write_bytes(pod.SerializeToString())
        keys = ["--keys-dir", str(broker.deployment.keys_dir)]
        assert main(["audit", "verify", str(path), *keys]) == 1

        again = await ac.monitor(client, t, state, check_entries=True, full=True)
        assert not again.ok and again.verdict == "entries-mismatch"
        assert again.evidence is not None and again.evidence.exists()
        with pytest.raises(ac.AuditFailure, match="do not hash"):
            await ac.replay(client, t)


def rewrite_history(b: Running, mutate: Any) -> None:
    """What a broker with database access would do: change a leaf, recompute every node
    hash so proofs still verify, and forget the checkpoints it signed."""
    conn = db(b)
    try:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute("SELECT idx, leaf FROM tlog_leaves ORDER BY idx").fetchall()
        data = [bytes(d) for _, d in rows]
        i = next(k for k, d in enumerate(data) if logleaf.kind_of(logleaf.parse(d)) == "notice")
        leaf = logleaf.parse(data[i])
        mutate(leaf)
        data[i] = logleaf.serialize(leaf)
        conn.execute("UPDATE tlog_leaves SET leaf=? WHERE idx=?", (data[i], i))
        nodes = tree.append(0, [merkle.leaf_hash(d) for d in data], {})
        conn.execute("DELETE FROM tlog_nodes")
        conn.executemany(
            "INSERT INTO tlog_nodes VALUES (?,?)",
            [(node_id(level, index), h) for (level, index), h in nodes.items()],
        )
        conn.execute("DELETE FROM tlog_cosignatures")
        conn.execute("DELETE FROM tlog_checkpoints")
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_a_rewritten_history_is_a_fork(broker: Running, tmp_path: Path) -> None:
    await publish(broker)
    t = trust(broker)
    state = tmp_path / "auditor.json"
    async with auditor(broker) as client:
        kept = await ac.monitor(client, t, state)
        assert kept.ok and kept.verdict == "first"
        before = state.read_text()

        rewrite_history(broker, lambda leaf: setattr(leaf.notice, "kind", "interpol.yellow"))
        forked = await ac.monitor(client, t, state)
        assert not forked.ok and forked.verdict == "fork"
        assert "FORK: two checkpoints of size" in forked.message
        assert state.read_text() == before  # the kept checkpoint stays
        assert forked.evidence is not None
        evidence = json.loads(forked.evidence.read_text())
        assert evidence["kept_checkpoint"] != evidence["new_checkpoint"]

    await publish(broker)  # the rewritten log grows on
    code, out, err = await cli("monitor", *conn_args(broker), "--state", str(state))
    assert code == 1, out + err
    assert "FORK: checkpoint" in err and "is not consistent with checkpoint" in err


async def test_two_logs_under_one_key_are_a_fork(broker: Running, tmp_path: Path) -> None:
    await publish(broker)
    t = trust(broker)
    state = tmp_path / "auditor.json"
    async with auditor(broker) as client:
        assert (await ac.monitor(client, t, state)).ok

    config = dataclasses.replace(broker.app.config, data_dir=tmp_path / "other")
    other = BrokerApp(config)
    port = await other.start()
    try:
        target = f"127.0.0.1:{port}"
        await provision(broker.deployment, target)
        twin = Running(other, broker.deployment, target)
        for _ in range(2):
            await publish(twin)
        async with auditor(twin) as client:
            result = await ac.monitor(client, t, state)
        assert not result.ok and result.verdict == "fork", result.message
        assert "not consistent" in result.message
    finally:
        await other.stop(grace=0.5)


class LyingPolicy:
    """A broker that decides with one bundle and claims another (a widened audience)."""

    def __init__(self, inner: Any, version: str) -> None:
        self._inner = inner
        self.version = version

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_replay_reports_a_delivery_the_bundle_forbade(broker: Running) -> None:
    honest_id, _ = await publish(broker)
    files = read_policy_dir(REPO_POLICIES)
    strict = broker.app.policy
    files["rules/zz-border.toml"] = (
        b'[[rule]]\nid = "zz-border-everything"\neffect = "permit"\nreason = "widened"\n'
        b'recipient_roles = ["border"]\n'
    )
    permissive = compile_bundle(files)
    header = red_header()
    facts = facts_of(header, notice_pb2.OriginatorRestrictions(), sorted(RED_SECTIONS))
    border = next(a for a in broker.app.registry.values() if a.profile.id == "IT-BORDER")
    profile: AgencyProfile = border.profile
    now = now_ms()
    allowed = {d.section for d in strict.decide(facts, profile, now_ms=now).decisions if d.allowed}
    widened = {
        d.section for d in permissive.decide(facts, profile, now_ms=now).decisions if d.allowed
    }
    smuggled = sorted(widened - allowed)
    assert smuggled, "the permissive bundle must widen IT-BORDER's sections"

    broker.app.policy = LyingPolicy(permissive, strict.version)  # type: ignore[assignment]
    honest_cache = broker.app.decisions
    broker.app.decisions = DecisionCache()  # the lying broker decides afresh, permissively
    bad_id, _ = await publish(broker, {"IT-BORDER": allowed | set(smuggled)})
    broker.app.policy = strict
    broker.app.decisions = honest_cache

    async with auditor(broker) as client:
        result = await ac.replay(client, trust(broker))
    report = result.report
    assert report.decisions == 2 and report.replayed == 2
    bad = [f for f in report.findings if f.kind == rp.NOT_PERMITTED]
    assert [(f.notice_id, f.recipient, f.sections) for f in bad] == [
        (bad_id, "IT-BORDER", tuple(smuggled))
    ]
    assert "receipted" in bad[0].detail
    assert {f.notice_id for f in report.findings} == {bad_id} != {honest_id}
    assert rp.DECISION_DIFFERS in {f.kind for f in report.findings}

    code, out, err = await cli("replay", *conn_args(broker))
    assert code == 1, err
    assert "delivery-not-permitted" in out and bad_id in out


# ------------------------------------------------------------------------------ witnesses


async def test_witnesses_cosign_and_auditors_require_them(broker: Running, tmp_path: Path) -> None:
    await publish(broker)
    keys = broker.deployment.keys_dir
    both = trust(broker, witnesses=["EU-HUB", "DE-BKA"], min_cosignatures=1)

    async def witness(agency: str) -> ac.MonitorResult:
        async with auditor(broker, Party("agency", agency)) as client:
            creds = pki.load_agency(keys, agency)
            return await ac.cosign(client, trust(broker), tmp_path / f"{agency}.json", creds)

    hub = await witness("EU-HUB")
    assert hub.ok and hub.cosignatures == 1
    async with auditor(broker) as client:
        one = await ac.monitor(client, both, tmp_path / "a.json")
        assert one.ok and one.cosigners == ("urn:broker:agency:EU-HUB",)
        two = dataclasses.replace(both, min_cosignatures=2)
        refused = await ac.monitor(client, two, tmp_path / "b.json")
        assert not refused.ok and refused.verdict == "too-few-cosignatures"
        assert (await witness("DE-BKA")).cosignatures == 2
        accepted = await ac.monitor(client, two, tmp_path / "b.json")
        assert accepted.ok and len(accepted.cosigners) == 2
        with pytest.raises(PermissionDenied, match="witnesses are agencies"):
            await client.add_cosignature(hub.size, "— x AAAA")

    # A cosignature must be the caller's own, over a checkpoint the broker signed.
    text = format_checkpoint(Checkpoint("sealed-notice-broker/broker", hub.size, hub.root))
    de_seed = pki.load_agency(keys, "DE-BKA").signing_seed
    forged = cosign(text, "urn:broker:agency:FR-NCB", de_seed, 1_700_000_000)
    async with auditor(broker, Party("agency", "FR-NCB")) as fr:
        with pytest.raises(InvalidArgument, match="cosigner key"):
            await fr.add_cosignature(hub.size, forged)

    # A witness shown a checkpoint that contradicts the one it kept does not cosign it.
    log = pki.load_log_signer(keys, "broker")
    fake = Checkpoint(log.name, hub.size, b"\x00" * 32)
    note = sign_note(format_checkpoint(fake), log.name, log.seed)
    ac.MonitorState(note).save(tmp_path / "IT-BORDER.json")
    async with auditor(broker, Party("agency", "IT-BORDER")) as client:
        creds = pki.load_agency(keys, "IT-BORDER")
        refused = await ac.cosign(client, trust(broker), tmp_path / "IT-BORDER.json", creds)
    assert not refused.ok and refused.verdict == "fork" and refused.cosignatures == 0


# ------------------------------------------------------------------------------------ CLI


async def test_cli_checkpoint_pod_monitor_replay(broker: Running, tmp_path: Path) -> None:
    notice_id, _ = await publish(broker)
    code, out, err = await cli("checkpoint", *conn_args(broker), "--json")
    assert code == 0, err
    assert json.loads(out)["origin"] == "sealed-notice-broker/broker"
    pod_file = tmp_path / "pod.bin"
    fr = Party("agency", "FR-NCB")
    code, out, err = await cli("pod", notice_id, *conn_args(broker, fr), "--out", str(pod_file))
    assert code == 0, err
    assert "OK: verified offline" in out and "IT-BORDER" in out
    state = tmp_path / "state.json"
    args = [*conn_args(broker), "--state", str(state), "--entries"]
    code, out, err = await cli("monitor", *args)
    assert code == 0 and "trusted on first use" in out, err
    code, out, err = await cli("replay", *conn_args(broker), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["ok"] is True and summary["decisions"] == 1 and summary["findings"] == []
