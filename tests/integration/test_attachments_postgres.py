"""Attachments with two broker replicas on one PostgreSQL schema: the ciphertext files live
in one directory the replicas share ([attachments] dir; here both replicas' data_dir), the
chain of custody in the database. Uploaded through one replica, downloaded through the
other, custody appended through both."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.client.attachments import Evidence
from broker.client.witness import run_witness
from broker.config import AttachmentsConfig
from broker.sandbox import WITNESS_ID, Deployment, provision
from broker.server.app import BrokerApp
from broker.v1 import evidence_pb2
from tests.adversarial.kit import SECTIONS, agencies, until
from tests.integration.conftest import Running
from tests.postgres import TempSchema

pytestmark = pytest.mark.integration


@pytest.fixture
async def replicas(
    pg_schema: TempSchema, deployment: Deployment, tmp_path: Path
) -> AsyncIterator[tuple[Running, Running]]:
    shared = AttachmentsConfig(dir=str(tmp_path / "shared-attachments"))
    apps = []
    stop = asyncio.Event()
    witness = None
    try:
        for _ in range(2):
            config = deployment.server_config(
                store=pg_schema.dsn, store_pool_max=2, store_workers=2, attachments=shared
            )
            app = BrokerApp(config)
            app.poll_interval = 0.1
            await app.start()
            apps.append(app)
        a, b = (Running(app, deployment, f"127.0.0.1:{app.port}") for app in apps)
        await provision(deployment, a.target)
        witness = asyncio.create_task(  # the deployment's witness (trust.toml) cosigns
            run_witness(
                deployment.keys_dir,
                WITNESS_ID,
                a.target,
                deployment.root / "witness.json",
                stop=stop,
                interval_s=0.1,
            )
        )
        yield a, b
    finally:
        stop.set()
        if witness is not None:
            await witness
        for app in apps:
            await app.stop(grace=0.5)


async def test_postgres_replicas_share_attachments_and_custody(
    replicas: tuple[Running, Running], tmp_path: Path
) -> None:
    a, b = replicas
    source = tmp_path / "image.dd"
    source.write_bytes(hashlib.sha256(b"x").digest() * 10_000)
    async with agencies(a, "FR-NCB") as on_a, agencies(b, "DE-BKA") as on_b:
        published, _ = await Evidence(on_a["FR-NCB"].node).publish(
            source,
            section="photos",
            sections=SECTIONS,
            kind="interpol.red",
            purpose="locate_arrest",
            recipients=["DE-BKA"],
            chunk_size=4096,
        )
        de = on_b["DE-BKA"]
        await until(lambda: any(n.notice_id == published.notice_id for n in de.notices), 30)
        notice = next(n for n in de.notices if n.notice_id == published.notice_id)
        ev = Evidence(de.node)
        got = await ev.fetch(notice, "photos", tmp_path / "out.dd")
        assert got.path.read_bytes() == source.read_bytes()
        chain = await ev.chain(published.notice_id, 1, "photos")
        assert [
            evidence_pb2.CustodyRecord.FromString(e.signed.record).agency for e in chain.entries
        ] == ["FR-NCB", "DE-BKA", "DE-BKA"]
    assert list((tmp_path / "shared-attachments").rglob("*.ct"))
    assert not list((a.app.config.data_dir / "attachments").rglob("*.ct"))
