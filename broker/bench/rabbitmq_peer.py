"""Peer (b): the same do-it-yourself pipeline on RabbitMQ, and its confirmed publish rate.

One durable fanout exchange per run and one durable classic queue per recipient bound
to it. The publisher seals each notice (broker.bench.peercrypto) and publishes it as a
persistent message on a channel in publisher-confirm mode: `exchange.publish` returns
once the broker has confirmed it (for persistent messages on durable queues, after
writing them to disk). Each recipient consumes its queue with manual
acknowledgements and a prefetch of `window` (our credit window), verifies, unwraps,
decrypts, then acknowledges; AMQP 0-9-1 does not confirm consumer acknowledgements,
so the "receipt" moment is when the ack has been written to the connection.

The capacity peer: persistent, confirmed publishes of a message of the same size to one
durable queue with 256 publishes in flight, counted over a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from broker.bench import procs
from broker.bench.peercrypto import Opener, PeerKeys, Sealer
from broker.bench.workers import DELIVERED, RECEIPTED, Channel, serve
from broker.bench.workload import Item, Samples, notice_body, now, publisher_commands

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def names(run_id: str, recipients: Sequence[str] = ()) -> tuple[str, list[str], str]:
    """(exchange, one queue per recipient, capacity queue) of one run."""
    base = f"bench.{run_id}"
    return base, [f"{base}.{r}" for r in recipients], f"{base}.capacity"


async def _connect(url: str) -> Any:
    import aio_pika

    return await aio_pika.connect(url, timeout=5)


async def setup(url: str, run_id: str, recipients: Sequence[str]) -> None:
    import aio_pika

    conn = await _connect(url)
    try:
        channel = await conn.channel()
        exchange_name, queues, _ = names(run_id, recipients)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        for q in queues:
            queue = await channel.declare_queue(q, durable=True)
            await queue.bind(exchange)
    finally:
        await conn.close()


async def teardown(url: str, run_id: str, recipients: Sequence[str]) -> None:
    conn = await _connect(url)
    try:
        channel = await conn.channel()
        exchange_name, queues, capacity = names(run_id, recipients)
        for q in [*queues, capacity]:
            await channel.queue_delete(q)
        await channel.exchange_delete(exchange_name)
    finally:
        await conn.close()


async def consumers_main(spec: dict[str, Any], channel: Channel) -> None:
    keys = PeerKeys.from_spec(spec["keys"])
    conn = await _connect(spec["url"])
    samples = Samples()
    _, queues, _ = names(spec["run_id"], spec["agencies"])
    tags = []
    for me, queue_name in zip(spec["agencies"], queues, strict=True):
        opener = Opener(keys, me)
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=int(spec.get("window", 64)))
        queue = await ch.get_queue(queue_name)

        def on_message(message: Any, me: str = me, opener: Opener = opener) -> Any:
            async def handle() -> None:
                notice_id, body = opener.open(message.body)
                key = (me, notice_id)
                if samples.on_delivered(key, body):
                    channel.count(DELIVERED)
                await message.ack()
                if samples.on_receipted(key):
                    channel.count(RECEIPTED)

            return handle()

        tags.append((queue, await queue.consume(on_message)))

    async def collect(args: dict[str, Any]) -> dict[str, Any]:
        return samples.take(args["tag"])

    channel.reply({"agencies": list(spec["agencies"])})
    await serve(channel, {"collect": collect})
    for queue, tag in tags:
        await queue.cancel(tag)
    await conn.close()


async def _confirm_rate(
    channel: Any, queue: str, body: bytes, seconds: float, in_flight: int
) -> dict[str, Any]:
    import aio_pika

    exchange = channel.default_exchange
    confirmed = 0
    started = now()
    deadline = started + seconds

    async def publisher() -> None:
        nonlocal confirmed
        while now() < deadline:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, routing_key=queue)
            confirmed += 1

    await asyncio.gather(*(publisher() for _ in range(in_flight)))
    ended = now()
    return {
        "confirmed": confirmed,
        "seconds": ended - started,
        "in_flight": in_flight,
        "message_bytes": len(body),
        "confirmed_per_s": confirmed / (ended - started),
    }


async def publisher_main(spec: dict[str, Any], channel: Channel) -> None:
    import aio_pika

    keys = PeerKeys.from_spec(spec["keys"])
    sealer = Sealer(keys, spec["agency"])
    conn = await _connect(spec["url"])
    ch = await conn.channel(publisher_confirms=True)
    exchange_name, _, capacity_queue = names(spec["run_id"])
    exchange = await ch.get_exchange(exchange_name)

    async def send(items: Sequence[Item]) -> None:
        for i in items:
            data = sealer.seal(f"{i.tag}-{i.seq}", notice_body(i.tag, i.t0))
            message = aio_pika.Message(data, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, routing_key="")

    async def confirm_rate(args: dict[str, Any]) -> dict[str, Any]:
        await ch.declare_queue(capacity_queue, durable=True)
        body = sealer.seal("capacity", notice_body("capacity", 0.0))
        result = await _confirm_rate(
            ch, capacity_queue, body, float(args["seconds"]), int(args["in_flight"])
        )
        await ch.queue_delete(capacity_queue)
        return result

    channel.reply({"agency": spec["agency"]})
    commands = publisher_commands(send, sealer.recipients)
    await serve(channel, {**commands, "confirm_rate": confirm_rate})
    await conn.close()


def reachable(url: str) -> str | None:
    """None if RabbitMQ answers at `url`, else why not."""

    async def probe() -> None:
        conn = await _connect(url)
        await conn.close()

    return procs.unreachable("RabbitMQ", url, 5672, probe)
