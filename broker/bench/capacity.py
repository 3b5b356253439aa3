"""Broker capacity: recipients that only sign receipts, on raw Subscribe streams.

Each recipient keeps one Subscribe stream with a credit window, and for every batch of
deliveries signs one receipt batch (broker.core.receipts.sign_receipts) naming what it
was given: the notice id and version (parsed from the signed header bytes, not
verified), the SHA-256 of those bytes, the sections of its wrap, the obligations. It
opens nothing and verifies nothing, so what limits the deliveries per second is the
broker: verifying, storing and acknowledging receipts, leasing and streaming deliveries.
The envelopes are sealed ahead of time by the publisher and sent with
AgencyNode.publish_envelopes (broker.bench.ours_workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import grpc

from broker.bench.workers import DELIVERED, RECEIPTED, Channel
from broker.bench.workload import now
from broker.client.node import AgencyNode, now_ms
from broker.core import receipts as rcp
from broker.errors import Unavailable
from broker.v1 import agency_pb2, notice_pb2


def receipt_for(me: str, delivery: notice_pb2.Delivery) -> notice_pb2.Receipt:
    """What a recipient would receipt for a delivery, read without opening it."""
    header_bytes = delivery.header.header_bytes
    header = notice_pb2.NoticeHeader.FromString(header_bytes)
    leaf = notice_pb2.WrapLeaf.FromString(delivery.wrap.leaf)
    return notice_pb2.Receipt(
        notice_id=header.notice_id,
        version=header.version,
        recipient=me,
        header_digest=hashlib.sha256(header_bytes).digest(),
        sections=sorted(leaf.sections),
        received_at_ms=now_ms(),
        obligations=sorted(f"{o.section}:{o.kind}:{o.rule}" for o in delivery.obligations),
    )


class _Progress:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.first: float | None = None
        self.last: float | None = None
        self.delivered = 0
        self.receipted = 0

    def take(self) -> dict[str, Any]:
        out = {
            "first": self.first,
            "last": self.last,
            "delivered": self.delivered,
            "receipted": self.receipted,
        }
        self.first = self.last = None
        self.delivered = self.receipted = 0
        return out


async def _receive(node: AgencyNode, window: int, progress: _Progress) -> None:
    call = node.stub.Subscribe()
    seed = node.credentials.signing_key  # Ed25519, or Ed25519 || ML-DSA-65 seeds (hybrid)
    try:
        await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=window)))
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            if response.deliveries:
                if progress.first is None:
                    progress.first = now()
                receipts = [receipt_for(node.me, d) for d in response.deliveries]
                n = len(receipts)
                progress.delivered += n
                progress.channel.count(DELIVERED, n)
                batch = rcp.sign_receipts(node.me, receipts, seed)
                await call.write(agency_pb2.SubscribeRequest(receipts=batch))
                await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=n)))
            acks = sum(1 for a in response.receipt_acks if not a.action_id)
            if acks:
                progress.last = now()
                progress.receipted += acks
                progress.channel.count(RECEIPTED, acks)
    finally:
        call.cancel()


class RawReceivers:
    """Receipt-only streams for a set of agency nodes (their SDK listeners stopped)."""

    def __init__(self, nodes: list[AgencyNode], window: int, channel: Channel) -> None:
        self.progress = _Progress(channel)
        self.tasks = [asyncio.create_task(_receive(n, window, self.progress)) for n in nodes]

    def take(self) -> dict[str, Any]:
        """Progress since the last take; raises the first stream's failure, if any."""
        for t in self.tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise Unavailable(f"a receipt-only stream failed: {t.exception()!r}")
        return self.progress.take()

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await t
