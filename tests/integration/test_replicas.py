"""Several broker replicas sharing one PostgreSQL schema (real server, real TLS, in-process
BrokerApps on their own ports, one store each, the same broker identity).

What only replicas have to get right: a notice accepted by one replica is streamed by
the replica that holds the recipient's stream, woken by NOTIFY (that replica never
polls in these tests); an agency's stream moves between replicas without two streams
left open; registry, policy and restriction changes made through one replica reach the
others; the transparency log stays one log with one series of checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import grpc
import psycopg
import pytest

from broker.client.admin import AdminClient
from broker.client.node import ReceivedNotice
from broker.client.witness import run_witness
from broker.core import merkle
from broker.core.checkpoint import open_checkpoint
from broker.core.identity import Party
from broker.errors import FailedPrecondition
from broker.sandbox import ADMIN_ID, WITNESS_ID, Deployment, provision
from broker.server.app import BrokerApp
from broker.store.postgres import lock_key
from broker.v1 import agency_pb2, notice_pb2
from tests.postgres import TempSchema

from .conftest import Running
from .helpers import RED_SECTIONS

pytestmark = pytest.mark.integration
NEVER = 3600.0  # a poll interval no test outlives: only a notification can wake that replica

StartReplica = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_replica(
    pg_schema: TempSchema, deployment: Deployment
) -> AsyncIterator[StartReplica]:  # the schema first: without a server, skip before any keys
    apps: list[BrokerApp] = []
    stop = asyncio.Event()
    witnesses: list[asyncio.Task[int]] = []

    async def start(*, poll_interval: float = 0.1, expiry_interval_s: float = 0.1) -> Running:
        config = deployment.server_config(
            store=pg_schema.dsn,
            store_pool_max=2,
            store_workers=2,
            expiry_interval_s=expiry_interval_s,
        )
        app = BrokerApp(config)
        app.poll_interval = poll_interval
        port = await app.start()
        apps.append(app)
        target = f"127.0.0.1:{port}"
        if not witnesses:  # the deployment's witness (trust.toml), through the first replica
            witnesses.append(
                asyncio.create_task(
                    run_witness(
                        deployment.keys_dir,
                        WITNESS_ID,
                        target,
                        deployment.root / "witness.json",
                        stop=stop,
                        interval_s=0.1,
                    )
                )
            )
        return Running(app, deployment, target)

    yield start
    stop.set()
    for task in witnesses:
        await task
    for app in apps:
        await app.stop(grace=0.5)


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    async def wait() -> None:
        while not check():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


def idle(app: BrokerApp, agency: str) -> bool:
    """The agency's stream on `app` waits for a wake-up (it has leased all it could)."""
    session = app.sessions.get(agency)
    return session is not None and bool(session.wake._waiters)  # asyncio.Event's waiters


async def test_replica_b_streams_what_replica_a_accepted(start_replica: StartReplica) -> None:
    a = await start_replica()
    b = await start_replica(poll_interval=NEVER, expiry_interval_s=NEVER)
    await provision(a.deployment, a.target)
    got: asyncio.Queue[ReceivedNotice] = asyncio.Queue()
    stop = asyncio.Event()

    async def handle(notice: ReceivedNotice) -> None:
        await got.put(notice)

    async with a.node("FR-NCB") as fr, b.node("DE-BKA") as de:
        listener = asyncio.create_task(de.listen(handle, stop=stop))
        try:
            await until(lambda: idle(b.app, "DE-BKA"), "DE-BKA's stream on B waits")
            assert b.app.replicas is not None
            heard = b.app.replicas.received
            published = await fr.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=RED_SECTIONS,
                recipients=["DE-BKA"],
            )
            notice = await asyncio.wait_for(got.get(), 30)
            assert notice.header.notice_id == published.notice_id
            assert b.app.replicas.received > heard  # B was woken by A's notification

            async def receipted() -> bool:
                status = await fr.delivery_status(published.notice_id)  # asked of A
                return [r.state for r in status.recipients] == [agency_pb2.DELIVERY_STATE_DELIVERED]

            for _ in range(300):
                if await receipted():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the receipt DE-BKA gave B never showed on A")
        finally:
            stop.set()
            await asyncio.wait_for(listener, 10)


async def test_a_stream_moving_to_another_replica_closes_the_old_one(
    start_replica: StartReplica,
) -> None:
    a = await start_replica()
    b = await start_replica()
    await provision(a.deployment, a.target)
    de = Party("agency", "DE-BKA")
    credit = agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=8))

    async def read_until_end(call: Any) -> None:
        while await call.read() is not None and not call.done():
            pass

    calls = []
    try:
        first = a.stub(de).Subscribe()
        calls.append(first)
        await first.write(credit)
        await until(lambda: "DE-BKA" in a.app.sessions, "A holds DE-BKA's stream")
        old = a.app.sessions["DE-BKA"]
        await until(lambda: old.announced, "A heard its own announcement")

        second = b.stub(de).Subscribe()
        calls.append(second)
        await second.write(credit)
        await until(lambda: "DE-BKA" in b.app.sessions, "B holds DE-BKA's stream")
        await until(lambda: old.closed.is_set(), "A closed the older stream")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(read_until_end(first), 10)
        # + streams: the older stream says it was displaced (from the other replica too)
        assert await first.code() == grpc.StatusCode.ABORTED
        assert "another Subscribe from DE-BKA replaced this stream" in await first.details()
        await until(lambda: "DE-BKA" not in a.app.sessions, "A forgot the older stream")
        newer = b.app.sessions["DE-BKA"]
        await until(lambda: newer.announced, "B heard its own announcement")
        assert not newer.closed.is_set()

        third = a.stub(de).Subscribe()  # and back again: now B's is the older one
        calls.append(third)
        await third.write(credit)
        await until(lambda: newer.closed.is_set(), "B closed the older stream")
        assert not a.app.sessions["DE-BKA"].closed.is_set()
    finally:
        for call in calls:
            call.cancel()


async def test_changes_through_one_replica_reach_the_others(start_replica: StartReplica) -> None:
    a = await start_replica()
    b = await start_replica()
    assert b.app.policy_activation is None  # both run the unsigned bootstrap bundle
    await provision(a.deployment, a.target)  # activates a signed bundle through A
    await until(lambda: b.app.policy_activation is not None, "B installs the signed bundle")
    assert b.app.policy.version == a.app.policy.version
    await until(
        lambda: b.app.registry["DE-BKA"].signed_entry is not None, "B has the signed entries"
    )

    async with AdminClient(a.deployment.keys_dir, ADMIN_ID, a.target) as admin:
        await admin.set_status("IT-BORDER", "suspended", "test: suspended through A")
    await until(
        lambda: b.app.registry["IT-BORDER"].profile.status == "suspended",
        "B sees the suspension made through A",
    )

    async with a.node("FR-NCB") as fr:
        published = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["DE-BKA"],
        )
        await fr.update_restrictions(
            published.notice_id, notice_pb2.OriginatorRestrictions(deny_countries=["DE"]), 1
        )
    await until(
        lambda: published.notice_id in b.app.restriction_overrides,
        "B applies the restrictions updated through A",
    )
    assert (
        b.app.restriction_overrides[published.notice_id]
        == a.app.restriction_overrides[published.notice_id]
    )


async def test_one_log_and_one_series_of_checkpoints(start_replica: StartReplica) -> None:
    a = await start_replica()
    b = await start_replica()
    await provision(a.deployment, a.target)
    sizes = []
    for i in range(6):
        via = (a, b)[i % 2]
        async with via.node("FR-NCB") as fr:
            await fr.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=RED_SECTIONS,
                recipients=["DE-BKA"],
            )
        sizes.append((await via.app.checkpoints.issue()).size)
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)

    runner = a.app.runner
    stored = [await runner.call(lambda s, n=n: s.tlog_checkpoint(size=n)) for n in sizes]
    verifier = a.app.checkpoints.verifier
    for older, newer in itertools.pairwise(stored):
        assert older is not None and newer is not None
        old_cp, _ = open_checkpoint(older.note, [verifier])
        new_cp, _ = open_checkpoint(newer.note, [verifier])
        proof = await runner.call(lambda s, o=old_cp, n=new_cp: s.tlog_consistency(o.size, n.size))
        merkle.verify_consistency(old_cp.size, new_cp.size, old_cp.root, new_cp.root, proof)
    # Both replicas signed checkpoints under the one origin, and see the same latest one.
    latest_a = await a.app.runner.call(lambda s: s.tlog_checkpoint())
    latest_b = await b.app.runner.call(lambda s: s.tlog_checkpoint())
    # (The signed checkpoint itself: a witness may cosign it between the two reads.)
    assert latest_a is not None and latest_b is not None
    assert dataclasses.replace(latest_a, cosignatures=()) == dataclasses.replace(
        latest_b, cosignatures=()
    )


async def test_a_replica_refuses_a_log_signed_under_another_name(
    start_replica: StartReplica, pg_schema: TempSchema, deployment: Deployment
) -> None:
    a = await start_replica()
    await a.app.checkpoints.issue()
    pg_schema.execute(
        "INSERT INTO tlog_checkpoints VALUES (%s, %s, %s, %s)",
        1_000_000,
        b"\0" * 32,
        "sealed-notice-broker/another\n1000000\nAAAA\n\n— x y\n",
        0,
    )
    config = replace(deployment.server_config(store=pg_schema.dsn, store_pool_max=2))
    other = BrokerApp(config)
    try:
        with pytest.raises(FailedPrecondition, match="same broker_id"):
            await other.start()
    finally:
        await other.stop(grace=0.1)


async def test_replicas_starting_together_bootstrap_once(
    start_replica: StartReplica, pg_schema: TempSchema
) -> None:
    """Two replicas reach their bootstrap at the same moment (the log's lock holds both
    back until both wait for it): one activates the bootstrap bundle, the other uses it."""
    holder = psycopg.connect(pg_schema.dsn, autocommit=True)
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(pg_schema.name, "log"),))
        both = asyncio.gather(start_replica(), start_replica())

        def waiting() -> int:
            rows = pg_schema.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            return int(rows[0][0])  # type: ignore[call-overload]

        for _ in range(1500):
            if await asyncio.to_thread(waiting) >= 2:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the replicas never both waited for the log's lock")
        holder.execute("ROLLBACK")
        a, b = await asyncio.wait_for(both, 60)
    finally:
        holder.close()
    history = await a.app.runner.call(lambda s: s.policy_history())
    assert [(h.sequence, h.admin) for h in history] == [(1, "bootstrap")]
    assert a.app.policy.version == b.app.policy.version


async def test_a_replica_whose_channel_drops_reconnects(
    start_replica: StartReplica, pg_schema: TempSchema
) -> None:
    a = await start_replica()
    b = await start_replica(poll_interval=NEVER, expiry_interval_s=NEVER)
    await provision(a.deployment, a.target)
    assert b.app.replicas is not None
    [(pid,)] = pg_schema.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
        f"broker-{b.app.replica_id}-listen",
    )
    pg_schema.execute("SELECT pg_terminate_backend(%s)", pid)
    await until(lambda: b.app.replicas.reconnects == 1, "B listens again")
    await until(lambda: b.app.replicas.listening.is_set(), "B's channel is up")
    got: asyncio.Queue[ReceivedNotice] = asyncio.Queue()
    stop = asyncio.Event()

    async def handle(notice: ReceivedNotice) -> None:
        await got.put(notice)

    async with a.node("FR-NCB") as fr, b.node("DE-BKA") as de:
        listener = asyncio.create_task(de.listen(handle, stop=stop))
        try:
            await until(lambda: idle(b.app, "DE-BKA"), "DE-BKA's stream on B waits")
            published = await fr.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=RED_SECTIONS,
                recipients=["DE-BKA"],
            )
            notice = await asyncio.wait_for(got.get(), 30)  # woken through the new channel
            assert notice.header.notice_id == published.notice_id
        finally:
            stop.set()
            await asyncio.wait_for(listener, 10)
