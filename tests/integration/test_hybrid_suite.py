"""The hybrid suite end to end: real broker, real mutual TLS, real nodes; a mixed deployment
(FR-NCB and DE-BKA hold post-quantum keys, IT-BORDER does not) during migration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType

import grpc
import pytest

from broker.client.node import ReceivedNotice
from broker.client.witness import run_witness
from broker.core import hybrid as hy
from broker.core import receipts as rcp
from broker.core.envelope import SUITE, SUITE_HYBRID
from broker.core.suites import SuitePolicy
from broker.errors import FailedPrecondition, InvalidArgument
from broker.sandbox import DEMO_AGENCIES, WITNESS_ID, Deployment, create_deployment, provision
from broker.server.app import BrokerApp
from broker.v1 import agency_pb2

from .conftest import Running
from .helpers import RED_SECTIONS

pytestmark = pytest.mark.integration
PQ_AGENCIES = ("FR-NCB", "DE-BKA", "EU-HUB")


@pytest.fixture(scope="module")
def mixed_template(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return create_deployment(tmp_path_factory.mktemp("mixed"), DEMO_AGENCIES, pq=PQ_AGENCIES)


@asynccontextmanager
async def _broker(template: Deployment, tmp: Path, crypto: SuitePolicy) -> AsyncIterator[Running]:
    """As conftest's start_broker, with broker.toml [crypto] set: a copy of the deployment,
    a provisioned broker and the deployment's witness cosigning checkpoints."""
    import shutil

    root = tmp / "deployment"
    shutil.copytree(template.root, root)
    d = Deployment(
        root, root / "keys", root / "registry.toml", root / "broker.toml", template.agencies
    )
    app = BrokerApp(d.server_config(expiry_interval_s=0.1, crypto=crypto))
    app.poll_interval = 0.1
    port = await app.start()
    stop = asyncio.Event()
    witness = None
    try:
        running = Running(app, d, f"127.0.0.1:{port}")
        await provision(d, running.target)
        witness = asyncio.create_task(
            run_witness(
                d.keys_dir,
                WITNESS_ID,
                running.target,
                root / "witness.json",
                stop=stop,
                interval_s=0.1,
            )
        )
        yield running
    finally:
        stop.set()
        if witness is not None:
            await witness
        await app.stop(grace=0.5)


@pytest.fixture
async def mixed(mixed_template: Deployment, tmp_path: Path) -> AsyncIterator[Running]:
    async with _broker(mixed_template, tmp_path, SuitePolicy()) as running:
        yield running


@pytest.fixture
async def red_needs_hybrid(mixed_template: Deployment, tmp_path: Path) -> AsyncIterator[Running]:
    policy = SuitePolicy(kinds=MappingProxyType({"interpol.red": frozenset({SUITE_HYBRID})}))
    async with _broker(mixed_template, tmp_path, policy) as running:
        yield running


async def _receive(node: object, want: int = 1) -> list[ReceivedNotice]:
    got: list[ReceivedNotice] = []
    stop = asyncio.Event()

    async def handle(notice: ReceivedNotice) -> None:
        got.append(notice)
        if len(got) >= want:
            stop.set()

    await asyncio.wait_for(node.listen(handle, stop=stop), 15)  # type: ignore[attr-defined]
    return got


async def test_hybrid_notice_round_trip_with_hybrid_receipt(mixed: Running) -> None:
    async with mixed.node("FR-NCB") as fr, mixed.node("DE-BKA") as de:
        sent = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["DE-BKA"],
            suite="hybrid",
        )
        [got] = await _receive(de)
        assert got.notice_id == sent.notice_id
        assert dict(got.sections) == {k: RED_SECTIONS[k] for k in got.sections}
        assert set(got.sections) >= {"identity", "case_facts"}
        row = None
        for _ in range(200):
            status = await fr.delivery_status(sent.notice_id)
            row = next(r for r in status.recipients if r.recipient == "DE-BKA")
            if row.state == agency_pb2.DELIVERY_STATE_DELIVERED:
                break
            await asyncio.sleep(0.05)
        assert row is not None and row.state == agency_pb2.DELIVERY_STATE_DELIVERED
        assert len(row.receipt.signature) == hy.SIGNATURE_SIZE  # DE-BKA signs hybrid
        de_keys = mixed.app.registry["DE-BKA"]
        assert (
            rcp.verify_proven_receipt(row.receipt, de_keys.verify_key).notice_id == sent.notice_id
        )
        with pytest.raises(rcp.ReceiptError):  # the Ed25519 half alone is not enough
            rcp.verify_proven_receipt(row.receipt, de_keys.signing_key)


async def test_node_refuses_hybrid_for_a_recipient_without_pq_keys(mixed: Running) -> None:
    async with mixed.node("FR-NCB") as fr:
        with pytest.raises(
            FailedPrecondition, match=r"key statement of IT-BORDER .* no post-quantum"
        ):
            await fr.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=RED_SECTIONS,
                recipients=["DE-BKA", "IT-BORDER"],
                suite="hybrid",
            )


async def test_auto_falls_back_to_classical_for_a_mixed_audience(mixed: Running) -> None:
    async with (
        mixed.node("FR-NCB") as fr,
        mixed.node("IT-BORDER") as it,
        mixed.node("DE-BKA", suite="auto") as de,
    ):
        mixed_audience = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["DE-BKA", "IT-BORDER"],
            suite="auto",
        )
        [at_it] = await _receive(it)
        assert at_it.notice_id == mixed_audience.notice_id
        [first] = await _receive(de)
        assert first.notice_id == mixed_audience.notice_id
        hybrid_only = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["DE-BKA"],
            suite="auto",
        )
        [second] = await _receive(de)
        assert second.notice_id == hybrid_only.notice_id
    suites = {
        nid: s
        for nid, s in _stored_suites(mixed).items()
        if nid in (mixed_audience.notice_id, hybrid_only.notice_id)
    }
    assert suites == {mixed_audience.notice_id: SUITE, hybrid_only.notice_id: SUITE_HYBRID}


def _stored_suites(b: Running) -> dict[str, str]:
    import sqlite3

    from broker.v1 import notice_pb2

    conn = sqlite3.connect(f"file:{b.app.config.database}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT notice_id, envelope FROM notices").fetchall()
    finally:
        conn.close()
    return {nid: notice_pb2.Envelope.FromString(e).header.suite for nid, e in rows}


async def test_broker_refuses_classical_where_the_kind_demands_hybrid(
    red_needs_hybrid: Running,
) -> None:
    async with red_needs_hybrid.node("FR-NCB") as fr:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fr.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=RED_SECTIONS,
                recipients=["DE-BKA"],
                suite="classical",
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not allowed for notices of kind" in (info.value.details() or "")
        sent = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["DE-BKA"],
            suite="hybrid",
        )
        assert sent.notice_id


async def test_broker_refuses_a_hybrid_wrap_to_a_recipient_without_pq_keys(mixed: Running) -> None:
    """A node that skipped its own check (or a buggy one): the broker refuses it too."""
    import os

    from broker import pki
    from broker.core import envelope as env
    from broker.core.identity import Party
    from broker.v1 import notice_pb2

    from .helpers import red_header

    fr = pki.load_agency(mixed.deployment.keys_dir, "FR-NCB")
    kem = hy.kem_public_key_bytes(os.urandom(96))  # a key IT-BORDER's statement does not have
    envelope = env.seal(
        red_header(),
        notice_pb2.OriginatorRestrictions(),
        [env.SectionInput(n, d) for n, d in sorted(RED_SECTIONS.items())],
        [env.RecipientInput("IT-BORDER", bytes(32), frozenset({"identity"}), kem)],
        fr.signing_key,
        os.urandom,
        suite=SUITE_HYBRID,
    )
    stub = mixed.stub(Party("agency", "FR-NCB"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Publish(agency_pb2.PublishRequest(envelopes=[envelope]), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "IT-BORDER's key statement carries no post-quantum key" in (info.value.details() or "")


async def test_lifecycle_actions_of_a_pq_agency_are_signed_hybrid(mixed: Running) -> None:
    """An originator with PQ keys withdraws its hybrid notice: the action is signed hybrid,
    the broker and the recipient both verify it, and the recipient erases its copy."""
    from broker.client.node import LifecycleNotice
    from broker.core import lifecycle

    async with mixed.node("FR-NCB") as fr, mixed.node("DE-BKA") as de:
        sent = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["DE-BKA"],
            suite="hybrid",
        )
        actions: list[LifecycleNotice] = []
        stop = asyncio.Event()

        async def on_notice(notice: ReceivedNotice) -> None:
            await fr.withdraw(sent.notice_id, "located and arrested")

        async def on_action(action: LifecycleNotice) -> None:
            actions.append(action)
            stop.set()

        await asyncio.wait_for(de.listen(on_notice, stop=stop, on_lifecycle=on_action), 20)
        [withdrawn] = actions
        assert withdrawn.kind == "withdraw" and withdrawn.erased == 1
        assert withdrawn.action.notice_id == sent.notice_id

    # The signature the broker kept is hybrid, and only the hybrid verify key accepts it.
    import sqlite3

    from broker.v1 import notice_pb2

    conn = sqlite3.connect(f"file:{mixed.app.config.database}?mode=ro", uri=True)
    try:
        action, signature = conn.execute(
            "SELECT action, signature FROM lifecycle_actions WHERE notice_id = ?",
            (sent.notice_id,),
        ).fetchone()
    finally:
        conn.close()
    signed = notice_pb2.SignedLifecycleAction(action=action, signature=signature)
    assert len(signed.signature) == hy.SIGNATURE_SIZE
    fr_keys = mixed.app.registry["FR-NCB"]
    assert lifecycle.verify_action(signed, fr_keys.verify_key).notice_id == sent.notice_id
    with pytest.raises(InvalidArgument, match="does not verify"):
        lifecycle.verify_action(signed, fr_keys.signing_key)


async def _cli(*args: str) -> tuple[int, str, str]:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_publish_with_suite(mixed: Running, tmp_path: Path) -> None:
    common = [
        "--agency",
        "FR-NCB",
        "--broker",
        mixed.target,
        "--keys-dir",
        str(mixed.deployment.keys_dir),
        "--state-dir",
        str(tmp_path / "nodes"),
        "--kind",
        "interpol.red",
        "--purpose",
        "locate_arrest",
        # the fields the catalogue asks of a Red notice (the CLI checks them)
        "--section=identity=family_name: DOE\nforename: John\ndate_of_birth: 1970-01-01\n"
        "nationality: US",
        "--section=case_facts=offence: fraud\nsummary: fraud",
        "--field=judicial.warrant_reference=warrant 7",
        "--field=judicial.issuing_authority=Paris court",
        "--field=judicial.penalty_threshold=2 years",
    ]
    code, _out, err = await _cli("node", "publish", *common, "--to", "DE-BKA", "--suite", "hybrid")
    assert code == 0, err
    code, _out, err = await _cli(
        "node", "publish", *common, "--to", "IT-BORDER", "--suite", "hybrid"
    )
    assert code != 0
    assert "IT-BORDER" in err and "no post-quantum keys" in err
