"""Fair sharing against a real broker: per-agency rate limits and quotas answer
RESOURCE_EXHAUSTED with a google.rpc.RetryInfo and store nothing; the SDK waits as
asked (bounded) or raises RateLimited; re-publishes are answered from the stored
outcome without running the checks again."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import REGISTRY

from broker.client.node import ReceivedNotice
from broker.client.retry import retry_delay_ms
from broker.core.identity import Party
from broker.errors import RateLimited
from broker.quotas import Quota, Quotas
from broker.v1 import agency_pb2, notice_pb2

from .conftest import Running, StartBroker
from .helpers import RED_SECTIONS, red_header, seal

pytestmark = pytest.mark.integration
POLICE = {"identity", "case_facts", "judicial", "biometrics"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def envelopes(
    b: Running, n: int, to: str = "DE-BKA", from_: str = "FR-NCB"
) -> list[notice_pb2.Envelope]:
    return [seal(b.deployment.keys_dir, red_header(from_), {to: POLICE}) for _ in range(n)]


async def publish(b: Running, batch: list[notice_pb2.Envelope], as_: str = "FR-NCB") -> object:
    stub = b.stub(Party("agency", as_))
    return await stub.Publish(agency_pb2.PublishRequest(envelopes=batch), timeout=10)


def retry_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo:
    """The RetryInfo in the rich status details, decoded here without the SDK's helper."""
    raw = dict(exc.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == exc.details()
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    return info


async def refused(coro: object, *needles: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await coro  # type: ignore[misc]
    exc = caught.value
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
    for needle in needles:
        assert needle in (exc.details() or ""), exc.details()
    return exc


def only(agency: str, **quota: int) -> Quotas:
    return Quotas(agencies={agency: Quota(**quota)})


class Clock:
    """The broker's quota clock, stopped: buckets refill only when a test moves it, so
    no refusal depends on how fast a loaded machine runs the calls in between."""

    def __init__(self, b: Running) -> None:
        self.ms = 1_000_000
        b.app.quotas.now = lambda: self.ms


async def started(start_broker: StartBroker, quotas: Quotas) -> Running:
    b = await start_broker(quotas=quotas)
    Clock(b)
    return b


async def test_publishes_over_the_rate_are_refused_with_a_retry_delay_and_store_nothing(
    start_broker: StartBroker,
) -> None:
    b = await started(start_broker, only("FR-NCB", publishes_per_second=1, publish_burst=2))
    before = sample("broker_quota_refusals_total", agency="FR-NCB", quota="publishes")
    await publish(b, envelopes(b, 2))  # the whole burst in one call
    exc = await refused(
        publish(b, envelopes(b, 1)), "FR-NCB is over its publish quota", "1 envelopes per second"
    )
    info = retry_info(exc)
    assert 0 < info.retry_delay.ToMilliseconds() <= 1000
    assert retry_delay_ms(exc) == info.retry_delay.ToMilliseconds()
    assert b.count("notices") == 2 and b.count("deliveries") == 2
    after = sample("broker_quota_refusals_total", agency="FR-NCB", quota="publishes")
    assert after == before + 1
    # Another agency has its own buckets (and no limit here).
    await publish(b, envelopes(b, 3, to="FR-NCB", from_="DE-BKA"), as_="DE-BKA")
    assert b.count("notices") == 5


async def test_a_batch_larger_than_what_is_left_is_refused_whole(start_broker: StartBroker) -> None:
    b = await started(start_broker, only("FR-NCB", publishes_per_second=1, publish_burst=3))
    await publish(b, envelopes(b, 2))
    exc = await refused(publish(b, envelopes(b, 2)))
    assert retry_info(exc).retry_delay.ToMilliseconds() > 0
    assert b.count("notices") == 2


async def test_bytes_over_the_rate_are_refused_with_the_wait_for_the_debt(
    start_broker: StartBroker,
) -> None:
    b = await started(start_broker, only("FR-NCB", bytes_per_second=1000, bytes_burst=1000))
    before = sample("broker_quota_admitted_total", agency="FR-NCB", quota="bytes")
    await publish(b, envelopes(b, 1))  # larger than the burst: passes on a full bucket
    size = sample("broker_quota_admitted_total", agency="FR-NCB", quota="bytes") - before
    assert size > 1000
    exc = await refused(publish(b, envelopes(b, 1)), "1000 bytes per second")
    # The debt (size - 1000 bytes) and then a full burst at 1000 bytes per second, less
    # what came back since.
    assert 0 < retry_info(exc).retry_delay.ToMilliseconds() <= size
    assert b.count("notices") == 1


async def test_lookups_over_the_rate_are_refused_before_anything_is_read(
    start_broker: StartBroker,
) -> None:
    b = await started(start_broker, only("DE-BKA", lookups_per_second=1, lookup_burst=1))
    stub = b.stub(Party("agency", "DE-BKA"))
    before = sample("broker_quota_refusals_total", agency="DE-BKA", quota="lookups")
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await stub.Lookup(b"\xff\xff", timeout=10)  # passes the quota, then fails to parse
    assert first.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    exc = await refused(stub.Lookup(b"\xff\xff", timeout=10), "over its lookup quota")
    assert retry_info(exc).retry_delay.ToMilliseconds() > 0
    assert sample("broker_quota_refusals_total", agency="DE-BKA", quota="lookups") == before + 1


async def test_queued_deliveries_are_counted_from_the_store(start_broker: StartBroker) -> None:
    b = await start_broker(quotas=only("FR-NCB", max_queued_deliveries=2))
    await publish(b, envelopes(b, 2))
    exc = await refused(publish(b, envelopes(b, 1)), "2 deliveries still queued")
    assert retry_info(exc).retry_delay.ToMilliseconds() == 1000
    assert b.count("notices") == 2
    # DE-BKA takes (and receipts) both; once counted again, FR-NCB may publish.
    async with b.node("DE-BKA") as bka:
        stop = asyncio.Event()
        got: list[ReceivedNotice] = []

        async def handle(notice: ReceivedNotice) -> None:
            got.append(notice)

        listening = asyncio.create_task(bka.listen(handle, stop=stop))
        for _ in range(200):
            await b.app.quotas.refresh(b.app.runner)
            if b.app.quotas.queued.get("FR-NCB", 0) == 0:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await listening
    assert len(got) == 2
    assert sample("broker_agency_queued_deliveries", agency="FR-NCB") == 0
    await publish(b, envelopes(b, 1))
    assert b.count("notices") == 3


async def test_the_sdk_waits_as_the_broker_asks_then_publishes(start_broker: StartBroker) -> None:
    b = await start_broker(quotas=only("FR-NCB", publishes_per_second=10, publish_burst=1))
    clock = Clock(b)
    before = sample("broker_quota_refusals_total", agency="FR-NCB", quota="publishes")

    async def time_passes_after_each_refusal() -> None:
        # The clock stands still until the broker refuses; then a token's worth passes
        # (100 ms at 10 per second), as it would while the SDK waits as asked.
        seen = before
        while True:
            now = sample("broker_quota_refusals_total", agency="FR-NCB", quota="publishes")
            if now > seen:
                seen = now
                clock.ms += 100
            await asyncio.sleep(0.005)

    mover = asyncio.create_task(time_passes_after_each_refusal())
    try:
        async with b.node("FR-NCB") as fr:
            for _ in range(3):
                await fr.publish(
                    kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS
                )
    finally:
        mover.cancel()
    # Three publishes within the burst of one: the broker refused the second and the third
    # (at least once each), the SDK waited as asked and then published.
    assert sample("broker_quota_refusals_total", agency="FR-NCB", quota="publishes") >= before + 2
    assert b.count("notices") == 3


async def test_the_sdk_raises_rate_limited_once_it_stops_waiting(start_broker: StartBroker) -> None:
    b = await started(start_broker, only("FR-NCB", publishes_per_second=1, publish_burst=1))
    async with b.node("FR-NCB", quota_retries=0) as fr:
        await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
        with pytest.raises(RateLimited) as info:
            await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
    message = str(info.value)
    assert "over quota" in message and "the broker asks to wait" in message, message
    assert 0 < info.value.retry_after_ms <= 1000
    assert b.count("notices") == 1


async def test_the_sdk_does_not_wait_longer_than_it_may(start_broker: StartBroker) -> None:
    b = await started(start_broker, only("FR-NCB", publishes_per_second=1, publish_burst=1))
    async with b.node("FR-NCB", quota_wait_max_s=0.01) as fr:
        await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
        with pytest.raises(RateLimited, match="refused over quota: "):
            await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)


async def test_a_republish_is_answered_from_the_stored_outcome_without_checks(
    broker: Running,
) -> None:
    batch = envelopes(broker, 3)
    first = await publish(broker, batch)
    checks = sample("broker_publish_checks_total")
    answered = sample("broker_republishes_answered_total")
    cache = broker.app.decisions
    evaluations = cache.hits + cache.misses  # every policy decision asked of the cache
    again = await publish(broker, batch)
    third = await publish(broker, batch)
    assert again == third  # answered identically
    assert sample("broker_publish_checks_total") == checks  # no check ran again
    assert cache.hits + cache.misses == evaluations  # nor any policy evaluation
    assert sample("broker_republishes_answered_total") == answered + 6
    for a, f in zip(again.results, first.results, strict=True):  # type: ignore[attr-defined]
        assert a.duplicate and not f.duplicate
        assert (a.notice_id, a.version, a.header_digest, list(a.recipients), a.policy_version) == (
            f.notice_id,
            f.version,
            f.header_digest,
            list(f.recipients),
            f.policy_version,
        )
    assert broker.count("notices") == 3 and broker.count("deliveries") == 3


async def test_a_republish_with_a_new_envelope_runs_every_check(broker: Running) -> None:
    stored = envelopes(broker, 1)
    await publish(broker, stored)
    checks = sample("broker_publish_checks_total")
    evaluations = broker.app.decisions.hits + broker.app.decisions.misses
    got = await publish(broker, [*stored, *envelopes(broker, 1)])
    assert [r.duplicate for r in got.results] == [True, False]  # type: ignore[attr-defined]
    assert sample("broker_publish_checks_total") == checks + 2
    assert broker.app.decisions.hits + broker.app.decisions.misses > evaluations


async def test_someone_elses_stored_notice_is_not_answered_from_the_store(
    broker: Running,
) -> None:
    stored = envelopes(broker, 1)
    await publish(broker, stored)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish(broker, stored, as_="DE-BKA")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert broker.count("notices") == 1


async def test_a_refusal_is_held_for_part_of_its_wait_and_says_what_is_left() -> None:
    from broker.server.quotas import HOLD_MAX_MS, MAX_HELD, QuotaGate, Refusal

    clock = [0]
    gate = QuotaGate(only("X", publishes_per_second=1, publish_burst=1), now=lambda: clock[0])
    gate.admit_publish("X", 1, 10)
    with pytest.raises(Refusal) as info:
        gate.precheck_publish("X", 10)
    assert info.value.retry_after_ms == 1000
    held = await gate.hold("X", info.value)
    assert held.retry_after_ms == 1000 - HOLD_MAX_MS
    assert str(held).endswith(f"retry in {1000 - HOLD_MAX_MS} ms")
    # At most MAX_HELD at once: the others are answered at once, unchanged.
    got = await asyncio.gather(*(gate.hold("X", info.value) for _ in range(MAX_HELD + 3)))
    waits = sorted(r.retry_after_ms for r in got)
    assert waits == [1000 - HOLD_MAX_MS] * MAX_HELD + [1000] * 3
    assert gate._held == {}


async def test_a_suspended_agency_republishing_is_refused_as_before(broker: Running) -> None:
    from broker.client.admin import AdminClient
    from broker.sandbox import ADMIN_ID

    stored = envelopes(broker, 1)
    await publish(broker, stored)
    async with AdminClient(broker.deployment.keys_dir, ADMIN_ID, broker.target) as admin:
        await admin.set_status("FR-NCB", "suspended", "audit")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish(broker, stored)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "suspended" in (info.value.details() or "")
