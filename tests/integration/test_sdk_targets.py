"""An agency node given several broker addresses (replicas) uses one that answers."""

from __future__ import annotations

import asyncio

import pytest

from broker.client.node import AgencyNode, NodeConfig, ReceivedNotice

from .conftest import Running
from .helpers import RED_SECTIONS
from .test_crash import free_port

pytestmark = pytest.mark.integration


def node(broker: Running, agency: str, target: str, policy: str) -> AgencyNode:
    return AgencyNode(
        NodeConfig(
            agency_id=agency,
            broker=target,
            keys_dir=broker.deployment.keys_dir,
            state_dir=broker.deployment.root / "nodes",
            lb_policy=policy,
            reconnect_max_s=0.5,
        )
    )


@pytest.mark.parametrize("policy", ["pick_first", "round_robin"])
async def test_a_node_skips_an_address_that_does_not_answer(broker: Running, policy: str) -> None:
    both = f"127.0.0.1:{free_port()},{broker.target}"  # the first is nobody's
    got: asyncio.Queue[ReceivedNotice] = asyncio.Queue()
    stop = asyncio.Event()

    async def handle(notice: ReceivedNotice) -> None:
        await got.put(notice)

    async with (
        node(broker, "FR-NCB", both, policy) as fr,
        node(broker, "DE-BKA", both, policy) as de,
    ):
        listener = asyncio.create_task(de.listen(handle, stop=stop))
        try:
            published = await fr.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=RED_SECTIONS,
                recipients=["DE-BKA"],
            )
            received = await asyncio.wait_for(got.get(), 30)
            assert received.header.notice_id == published.notice_id
        finally:
            stop.set()
            await asyncio.wait_for(listener, 10)
