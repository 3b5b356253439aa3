"""Real brokers on 127.0.0.1 with real mutual TLS, and real agency nodes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker import pki
from broker.client.node import AgencyNode, NodeConfig
from broker.client.witness import run_witness
from broker.core.identity import Party
from broker.core.relay import Limits
from broker.quotas import Quotas
from broker.sandbox import (
    DEMO_AGENCIES,
    WITNESS_ID,
    Deployment,
    create_deployment,
    provision,
)
from broker.server.app import BrokerApp
from broker.v1 import agency_pb2_grpc


@pytest.fixture(scope="session")
def deployment_template(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """Keys take a moment to make: make them once per session, copy per test."""
    return create_deployment(tmp_path_factory.mktemp("deployment"), DEMO_AGENCIES)


@pytest.fixture
def deployment(deployment_template: Deployment, tmp_path: Path) -> Deployment:
    import shutil

    root = tmp_path / "deployment"
    shutil.copytree(deployment_template.root, root)
    return Deployment(
        root,
        root / "keys",
        root / "registry.toml",
        root / "broker.toml",
        deployment_template.agencies,
    )


@dataclass
class Running:
    app: BrokerApp
    deployment: Deployment
    target: str

    def node(self, agency: str, **kw: Any) -> AgencyNode:
        return AgencyNode(
            NodeConfig(
                agency_id=agency,
                broker=self.target,
                keys_dir=self.deployment.keys_dir,
                state_dir=self.deployment.root / "nodes",
                **kw,
            )
        )

    def channel(self, party: Party | None, keys_dir: Path | None = None) -> grpc.aio.Channel:
        """A raw channel presenting `party`'s certificate (None: no client certificate)."""
        keys = keys_dir or self.deployment.keys_dir
        ca = (self.deployment.keys_dir / "ca" / "ca.pem").read_bytes()
        if party is None:
            creds = grpc.ssl_channel_credentials(root_certificates=ca)
        else:
            files = pki.load_party(keys, party)
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=files.key.read_bytes(),
                certificate_chain=files.cert.read_bytes(),
            )
        return grpc.aio.secure_channel(
            self.target, creds, options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)]
        )

    def stub(self, party: Party | None) -> agency_pb2_grpc.AgencyServiceStub:
        return agency_pb2_grpc.AgencyServiceStub(self.channel(party))

    def count(self, table: str) -> int:
        """Rows in a store table, read straight from the SQLite file."""
        conn = sqlite3.connect(f"file:{self.app.config.database}?mode=ro", uri=True)
        try:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()


StartBroker = Callable[..., Any]


@pytest.fixture
async def start_broker(deployment: Deployment) -> AsyncIterator[StartBroker]:
    apps: list[BrokerApp] = []
    witnesses: list[asyncio.Task[int]] = []
    stop = asyncio.Event()

    async def start(
        provisioned: bool = True, witness: bool = True, quotas: Quotas | None = None, **limits: Any
    ) -> Running:
        config = deployment.server_config(
            limits=Limits(**limits), expiry_interval_s=0.1, quotas=quotas or Quotas()
        )
        app = BrokerApp(config)
        app.poll_interval = 0.1
        port = await app.start()
        apps.append(app)
        running = Running(app, deployment, f"127.0.0.1:{port}")
        if provisioned:
            await provision(deployment, running.target)
        if witness and WITNESS_ID in {a.id for a in deployment.agencies}:
            # The deployment's witness (trust.toml) cosigns checkpoints as they come.
            state = deployment.root / f"witness-{len(apps)}.json"
            witnesses.append(
                asyncio.create_task(
                    run_witness(
                        deployment.keys_dir,
                        WITNESS_ID,
                        running.target,
                        state,
                        stop=stop,
                        interval_s=0.1,
                    )
                )
            )
        return running

    yield start
    stop.set()
    for task in witnesses:
        await task
    for app in apps:
        await app.stop(grace=0.5)


@pytest.fixture
async def broker(start_broker: StartBroker) -> Running:
    running: Running = await start_broker()
    return running
