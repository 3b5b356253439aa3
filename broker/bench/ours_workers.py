"""Our pipeline's worker processes: recipients and the publisher, through the real SDK.

Recipients are `AgencyNode.listen`: verify the header and key statement, open the
sections, take the notice into the node's SQLite inbox, hand it to the application
(the handler here only reads the marker), and sign receipts. A receipt counts as
stored when the broker's acknowledgement of it comes back on the stream.

The publisher is `AgencyNode.publish` (audience resolved, checked against the signed
policy and registry, sealed, signed, published). `sdk_publish` is the one place that
calls it, so that moving to a batch API is a one-line change.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from broker.bench.capacity import RawReceivers
from broker.bench.workers import DELIVERED, RECEIPTED, Channel, serve
from broker.bench.workload import (
    KIND,
    PURPOSE,
    Driven,
    Item,
    Samples,
    drive,
    notice_sections,
    now,
    section_inputs,
)
from broker.client.node import AgencyNode, Draft, NodeConfig, ReceivedNotice, now_ms
from broker.core import envelope as env
from broker.core.identity import verify_key_statement
from broker.errors import FailedPrecondition
from broker.v1 import notice_pb2


def node_for(spec: dict[str, Any], agency: str) -> AgencyNode:
    return AgencyNode(
        NodeConfig(
            agency_id=agency,
            broker=spec["broker"],
            keys_dir=Path(spec["keys_dir"]),
            state_dir=Path(spec["state_dir"]),
            window=int(spec.get("window", 64)),
            rpc_timeout_s=30.0,
            suite=str(spec.get("suite", "classical")),
        )
    )


class _TimedAcks(set[tuple[str, int]]):
    """ListenStats.acked that also tells the bench when each receipt was acknowledged."""

    def __init__(self, on_ack: Callable[[tuple[str, int]], None]) -> None:
        super().__init__()
        self._on_ack = on_ack

    def add(self, key: tuple[str, int]) -> None:
        super().add(key)
        self._on_ack(key)


class _Recipient:
    def __init__(self, node: AgencyNode, samples: Samples, channel: Channel) -> None:
        self.node = node
        self.samples = samples
        self.channel = channel
        self.stop = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None
        node.stats.acked = _TimedAcks(self._acked)

    async def _handle(self, notice: ReceivedNotice) -> None:
        key = (self.node.me, notice.notice_id, notice.version)
        if self.samples.on_delivered(key, notice.sections.get("case_facts", b"")):
            self.channel.count(DELIVERED)

    def _acked(self, key: tuple[str, int]) -> None:
        if self.samples.on_receipted((self.node.me, *key)):
            self.channel.count(RECEIPTED)

    def start(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.node.listen(self._handle, stop=self.stop))

    async def halt(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
            self.task = None


async def recipients_main(spec: dict[str, Any], channel: Channel) -> None:
    """Listen as each agency of spec["agencies"] until told to quit."""
    samples = Samples()
    recipients = {a: _Recipient(node_for(spec, a), samples, channel) for a in spec["agencies"]}
    for r in recipients.values():
        r.start()
    while any(r.node.stats.connects == 0 for r in recipients.values()):
        await asyncio.sleep(0.01)
    raw: list[RawReceivers] = []

    async def offline(args: dict[str, Any]) -> bool:
        await recipients[args["agency"]].halt()
        return True

    async def online(args: dict[str, Any]) -> bool:
        recipients[args["agency"]].start()
        return True

    async def collect(args: dict[str, Any]) -> dict[str, Any]:
        return samples.take(args["tag"])

    async def to_raw(args: dict[str, Any]) -> bool:
        """Capacity: receipt-only streams instead of the SDK listeners."""
        for r in recipients.values():
            await r.halt()
        nodes = [r.node for r in recipients.values()]
        raw.append(RawReceivers(nodes, int(spec.get("window", 64)), channel))
        await asyncio.sleep(0.2)  # let the streams open before the publisher starts
        return True

    async def collect_raw(args: dict[str, Any]) -> dict[str, Any]:
        if not raw:
            raise FailedPrecondition("collect_raw before raw")
        return raw[-1].take()

    async def to_sdk(args: dict[str, Any]) -> bool:
        """Back from receipt-only streams to the SDK listeners."""
        while raw:
            await raw.pop().stop()
        for r in recipients.values():
            r.start()
        return True

    channel.reply({"agencies": sorted(recipients)})
    await serve(
        channel,
        {
            "offline": offline,
            "online": online,
            "collect": collect,
            "raw": to_raw,
            "collect_raw": collect_raw,
            "sdk": to_sdk,
        },
    )
    for receivers in raw:
        await receivers.stop()
    for r in recipients.values():
        await r.halt()
        await r.node.close()


# --- publisher ----------------------------------------------------------------------


async def sdk_publish(
    node: AgencyNode, items: Sequence[Item], *, recipients: Sequence[str]
) -> None:
    """Publish `items` through the SDK: sealed together, one Publish call (publish_many)."""
    await node.publish_many(
        [
            Draft(
                kind=KIND,
                purpose=PURPOSE,
                sections=notice_sections(i.tag, i.t0),
                recipients=tuple(recipients),
            )
            for i in items
        ]
    )


def _header(originator: str) -> notice_pb2.NoticeHeader:
    created = now_ms()
    return notice_pb2.NoticeHeader(
        notice_id=str(uuid.uuid4()),
        version=1,
        originator=originator,
        kind=KIND,
        purpose=PURPOSE,
        data_subject=notice_pb2.DATA_SUBJECT_SUSPECT,
        tlp=notice_pb2.TLP_AMBER,
        created_at_ms=created,
        expires_at_ms=created + 30 * 86_400_000,
    )


async def sealer(
    node: AgencyNode, recipients: Sequence[str]
) -> Callable[[str, float], notice_pb2.Envelope]:
    """Resolve and check the audience once (as publish does), then seal envelopes for
    `recipients` without a round trip each: for envelopes sealed ahead of time."""
    restrictions = notice_pb2.OriginatorRestrictions()
    names = sorted(notice_sections("x", 0.0))
    draft = _header(node.me)
    audience = await node.resolve_audience(draft, restrictions, names)
    await node.check_audience(draft, restrictions, names, audience)
    members = {m.agency_id: m for m in audience.members}
    missing = sorted(set(recipients) - set(members))
    if missing:
        raise FailedPrecondition(f"the policy does not let {missing} receive the bench notice")
    inputs = []
    for agency in recipients:
        m = members[agency]
        keys = verify_key_statement(m.key_statement, node.ca_key, now_ms(), expected_agency=agency)
        inputs.append(
            env.RecipientInput(
                agency, keys.encryption_key, frozenset(m.sections), keys.pq_encryption_key
            )
        )
    hybrid = node.config.suite == "hybrid"
    suite = env.SUITE_HYBRID if hybrid else env.SUITE
    key = node.credentials.signing_key if hybrid else node.credentials.signing_seed

    def seal(tag: str, t0: float) -> notice_pb2.Envelope:
        sections = section_inputs(notice_sections(tag, t0))
        return env.seal(
            _header(node.me),
            restrictions,
            sections,
            inputs,
            key,
            os.urandom,
            suite=suite,
        )

    return seal


async def publish_sealed(
    node: AgencyNode, envelopes: Iterator[notice_pb2.Envelope], batch: int, concurrency: int
) -> Driven:
    """Publish envelopes in batches of `batch` with `concurrency` batches in flight."""
    out = Driven(started=now())

    async def sender() -> None:
        while True:
            chunk = [e for _, e in zip(range(batch), envelopes, strict=False)]
            if not chunk:
                return
            try:
                await node.publish_envelopes(chunk)
            except Exception as exc:  # counted and reported
                out.errors += len(chunk)
                out.first_error = out.first_error or f"{type(exc).__name__}: {exc}"
            else:
                out.published += len(chunk)

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    out.ended = now()
    return out


async def publisher_main(spec: dict[str, Any], channel: Channel) -> None:
    """Publish as spec["agency"] to spec["recipients"] when told to."""
    node = node_for(spec, spec["agency"])
    recipients: list[str] = list(spec["recipients"])
    ahead: list[notice_pb2.Envelope] = []

    async def warmup(args: dict[str, Any]) -> dict[str, list[str]]:
        published = await node.publish(
            kind=KIND,
            purpose=PURPOSE,
            sections=notice_sections(args["tag"], 0.0),
            recipients=recipients,
        )
        return {r: list(s) for r, s in published.audience.items()}

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        send = partial(sdk_publish, node, recipients=recipients)
        return (await drive(send, args["tag"], args["mode"])).as_dict()

    async def seal(args: dict[str, Any]) -> int:
        sealing = await sealer(node, list(args.get("recipients") or recipients))
        ahead[:] = [sealing(args["tag"], 0.0) for _ in range(int(args["count"]))]
        return len(ahead)

    async def publish_ahead(args: dict[str, Any]) -> dict[str, Any]:
        envelopes = iter(list(ahead))
        ahead.clear()
        driven = await publish_sealed(node, envelopes, int(args["batch"]), int(args["concurrency"]))
        return driven.as_dict()

    async def fill(args: dict[str, Any]) -> dict[str, Any]:
        """Seal as we go (a large backlog would not fit in memory sealed ahead)."""
        sealing = await sealer(node, list(args["recipients"]))
        count, tag = int(args["count"]), str(args["tag"])
        stream = (sealing(tag, 0.0) for _ in range(count))
        driven = await publish_sealed(node, stream, int(args["batch"]), int(args["concurrency"]))
        return driven.as_dict()

    channel.reply({"agency": node.me})
    await serve(
        channel,
        {
            "warmup": warmup,
            "run": run,
            "seal": seal,
            "publish_sealed": publish_ahead,
            "fill": fill,
        },
    )
    await node.close()
