"""Peer (a): the do-it-yourself pipeline on NATS JetStream.

One file-backed stream per run. The publisher seals each notice (broker.bench.peercrypto:
sign, one sealed-box wrap per recipient, XChaCha20-Poly1305 body) and publishes it with
`js.publish`, which returns once JetStream has stored it and answered with a PubAck.
Every recipient is a durable push consumer with explicit (manual) acknowledgements and
at most `window` unacknowledged messages (the analogue of our credit window); it
verifies, unwraps and decrypts each message, then acknowledges it with `ack_sync`,
which waits for the server to confirm the acknowledgement (the analogue of our
stored receipt).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.bench import procs
from broker.bench.peercrypto import Opener, PeerKeys, Sealer
from broker.bench.workers import DELIVERED, RECEIPTED, Channel, serve
from broker.bench.workload import Item, Samples, notice_body, publisher_commands

DEFAULT_URL = "nats://127.0.0.1:4222"


def names(run_id: str) -> tuple[str, str]:
    """(stream, subject) of one run."""
    return f"BENCH_{run_id}", f"bench.{run_id}.notices"


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: errors surface as exceptions of the calls instead."""


async def _connect(url: str) -> Any:
    import nats

    return await nats.connect(
        servers=[url],
        connect_timeout=3,
        max_reconnect_attempts=0,
        allow_reconnect=False,
        error_cb=_quiet,
    )


async def setup(url: str, run_id: str) -> None:
    """Create the run's stream (file storage); raises if the server is unreachable."""
    from nats.js.api import StorageType, StreamConfig

    nc = await _connect(url)
    try:
        stream, subject = names(run_id)
        await nc.jetstream().add_stream(
            StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE)
        )
    finally:
        await nc.close()


async def teardown(url: str, run_id: str) -> None:
    """Delete the run's stream and its consumers."""
    nc = await _connect(url)
    try:
        await nc.jetstream().delete_stream(names(run_id)[0])
    finally:
        await nc.close()


async def consumers_main(spec: dict[str, Any], channel: Channel) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    keys = PeerKeys.from_spec(spec["keys"])
    stream, subject = names(spec["run_id"])
    nc = await _connect(spec["url"])
    js = nc.jetstream()
    samples = Samples()
    subs = []

    def handler(me: str) -> Any:
        opener = Opener(keys, me)

        async def on_message(msg: Any) -> None:
            notice_id, body = opener.open(msg.data)
            key = (me, notice_id)
            if samples.on_delivered(key, body):
                channel.count(DELIVERED)
            await msg.ack_sync(timeout=30)
            if samples.on_receipted(key):
                channel.count(RECEIPTED)

        return on_message

    for me in spec["agencies"]:
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_ack_pending=int(spec.get("window", 64)),
            ack_wait=30,
        )
        subs.append(
            await js.subscribe(
                subject,
                stream=stream,
                durable=f"r-{me}",
                cb=handler(me),
                manual_ack=True,
                config=config,
            )
        )

    async def collect(args: dict[str, Any]) -> dict[str, Any]:
        return samples.take(args["tag"])

    channel.reply({"agencies": list(spec["agencies"])})
    await serve(channel, {"collect": collect})
    for sub in subs:
        await sub.unsubscribe()
    await nc.close()


async def publisher_main(spec: dict[str, Any], channel: Channel) -> None:
    keys = PeerKeys.from_spec(spec["keys"])
    sealer = Sealer(keys, spec["agency"])
    _, subject = names(spec["run_id"])
    nc = await _connect(spec["url"])
    js = nc.jetstream()

    async def send(items: Sequence[Item]) -> None:
        for i in items:
            body = notice_body(i.tag, i.t0)
            await js.publish(subject, sealer.seal(f"{i.tag}-{i.seq}", body))

    channel.reply({"agency": spec["agency"]})
    await serve(channel, publisher_commands(send, sealer.recipients))
    await nc.close()


def reachable(url: str) -> str | None:
    """None if a JetStream server answers at `url`, else why not."""

    async def probe() -> None:
        nc = await _connect(url)
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()

    return procs.unreachable("NATS JetStream", url, 4222, probe)
