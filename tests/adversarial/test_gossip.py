"""Agencies compare their views of the log (issue 10, item 5).

The attacker shows FR-NCB one log (broker B, with the deployment's log key and a witness
it fooled) and DE-BKA another (broker A), and relays FR-NCB's notice from B into A. No
single node sees two checkpoints, but FR-NCB signed its view (size and root) into the
header: DE-BKA's node compares it with its own and asks the broker to prove one a prefix
of the other, which it cannot (`broker/client/gossip.py`, a view_differs finding).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from broker.client.node import AgencyNode
from broker.client.types import NodeConfig
from broker.client.witness import run_witness
from broker.core.identity import Party
from broker.sandbox import WITNESS_ID, provision
from broker.server.app import BrokerApp
from broker.v1 import agency_pb2, agency_pb2_grpc, notice_pb2
from tests.integration.conftest import Running

from .kit import agencies, publish, until

pytestmark = pytest.mark.integration


async def test_a_split_view_between_two_agencies_is_found(broker: Running, tmp_path: Path) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        for _ in range(3):  # broker A's log grows beyond what B will show
            nid = await publish(a["FR-NCB"].node, ["DE-BKA"])
            await until(lambda n=nid: a["DE-BKA"].versions(n) == [1])
        # Honest views agree: once each side compared the other's view (proofs fetched by
        # the sweep, or the same size), nothing is found either side.
        await until(lambda: bool(a["DE-BKA"].node.gossip.proven))
        await a["FR-NCB"].node.verify_delivery(nid)
        assert a["FR-NCB"].node.gossip.proven or a["FR-NCB"].node.gossip.pending
        assert not a["DE-BKA"].found("view_differs")
        assert not [
            f for f in a["FR-NCB"].node.findings.since(0, nid) if f[1].kind == "view_differs"
        ]

    other = BrokerApp(dataclasses.replace(broker.app.config, data_dir=tmp_path / "b"))
    port = await other.start()
    stop = asyncio.Event()
    witness: asyncio.Task[int] | None = None
    try:
        target = f"127.0.0.1:{port}"
        await provision(broker.deployment, target)
        witness = asyncio.create_task(
            run_witness(
                broker.deployment.keys_dir,
                WITNESS_ID,
                target,
                tmp_path / "witness-b.json",
                stop=stop,
                interval_s=0.1,
            )
        )
        # FR-NCB (a node that only ever saw broker B) publishes there.
        fr_on_b = AgencyNode(
            NodeConfig(
                agency_id="FR-NCB",
                broker=target,
                keys_dir=broker.deployment.keys_dir,
                state_dir=tmp_path / "fr-state",
            )
        )
        captured: list[notice_pb2.Envelope] = []
        send = fr_on_b.publish_envelopes

        async def keep(envelopes: list[notice_pb2.Envelope]) -> object:
            captured.extend(envelopes)  # what the attacker records off the wire
            return await send(envelopes)

        fr_on_b.publish_envelopes = keep  # type: ignore[method-assign]
        async with fr_on_b:
            notice_id = await publish(fr_on_b, ["DE-BKA"])
        header = notice_pb2.NoticeHeader.FromString(captured[0].header.header_bytes)
        assert header.checkpoint_size  # FR-NCB signed its view of B's log in

        # The attacker relays the envelope into broker A, as FR-NCB published it.
        async with broker.channel(Party("agency", "FR-NCB")) as channel:
            stub = agency_pb2_grpc.AgencyServiceStub(channel)
            await stub.Publish(agency_pb2.PublishRequest(envelopes=captured))

        async with agencies(broker, "DE-BKA") as d:
            de = d["DE-BKA"]
            await until(lambda: de.versions(notice_id) == [1])  # the notice is genuine
            await until(lambda: bool(de.found("view_differs")), 20)
        finding = de.found("view_differs")[0]
        assert finding.subject == "FR-NCB" and finding.notice_id == notice_id
        assert f"size {header.checkpoint_size}" in finding.detail
    finally:
        stop.set()
        if witness is not None:
            await witness
        await other.stop(grace=0.5)
