"""Publish through a real broker over mutual TLS: every refusal is clear and stores nothing."""

from __future__ import annotations

import grpc
import pytest

from broker import pki
from broker.core.identity import Party
from broker.v1 import agency_pb2, notice_pb2

from .conftest import Running
from .helpers import RED_SECTIONS, now_ms, red_header, seal

pytestmark = pytest.mark.integration

POLICE = {"identity", "case_facts", "judicial", "biometrics"}


def nothing_stored(b: Running) -> None:
    assert b.count("notices") == 0
    assert b.count("deliveries") == 0


async def publish_raw(b: Running, envelope: notice_pb2.Envelope, as_: str = "FR-NCB") -> object:
    stub = b.stub(Party("agency", as_))
    return await stub.Publish(agency_pb2.PublishRequest(envelopes=[envelope]), timeout=10)


async def expect(code: grpc.StatusCode, coro: object, *needles: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    for needle in needles:
        assert needle in details, details
    return details


async def test_publish_and_idempotent_republish(broker: Running) -> None:
    envelope = seal(broker.deployment.keys_dir, red_header(), {"DE-BKA": POLICE})
    first = await publish_raw(broker, envelope)
    again = await publish_raw(broker, envelope)
    assert not first.results[0].duplicate  # type: ignore[attr-defined]
    assert again.results[0].duplicate  # type: ignore[attr-defined]
    assert first.results[0].header_digest == again.results[0].header_digest  # type: ignore[attr-defined]
    assert list(again.results[0].recipients) == ["DE-BKA"]  # type: ignore[attr-defined]
    assert broker.count("notices") == 1
    assert broker.count("deliveries") == 1


async def test_replay_with_other_bytes_is_refused(broker: Running) -> None:
    header = red_header()
    await publish_raw(broker, seal(broker.deployment.keys_dir, header, {"DE-BKA": POLICE}))
    other = seal(broker.deployment.keys_dir, header, {"DE-BKA": {"identity", "case_facts"}})
    await expect(grpc.StatusCode.ALREADY_EXISTS, publish_raw(broker, other), "new version")
    assert broker.count("notices") == 1
    assert broker.count("deliveries") == 1


async def test_no_client_certificate_is_refused(broker: Running) -> None:
    stub = agency_pb2_grpc_stub(broker, None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetDeliveryStatus(agency_pb2.DeliveryStatusRequest(notice_id="x"), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def agency_pb2_grpc_stub(b: Running, party: Party | None) -> object:
    return b.stub(party)


async def test_certificate_from_another_ca_is_refused(broker: Running, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other-ca"
    pki.generate_ca(other)
    pki.issue_agency(other, "FR-NCB")
    stub_channel = broker.channel(Party("agency", "FR-NCB"), keys_dir=other)
    from broker.v1 import agency_pb2_grpc

    stub = agency_pb2_grpc.AgencyServiceStub(stub_channel)
    envelope = seal(broker.deployment.keys_dir, red_header(), {"DE-BKA": POLICE})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Publish(agency_pb2.PublishRequest(envelopes=[envelope]), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    nothing_stored(broker)


async def test_non_agency_identity_is_refused(broker: Running) -> None:
    pki.issue_certificate(broker.deployment.keys_dir, Party("admin", "alice"))
    stub = broker.stub(Party("admin", "alice"))
    envelope = seal(broker.deployment.keys_dir, red_header(), {"DE-BKA": POLICE})
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        stub.Publish(agency_pb2.PublishRequest(envelopes=[envelope]), timeout=5),
        "not an agency",
    )
    nothing_stored(broker)


async def test_forged_signature(broker: Running) -> None:
    # Signed by DE-BKA's key but claiming FR-NCB as originator.
    envelope = seal(broker.deployment.keys_dir, red_header(), {"DE-BKA": POLICE}, signer="DE-BKA")
    await expect(grpc.StatusCode.INVALID_ARGUMENT, publish_raw(broker, envelope), "signature")
    nothing_stored(broker)


async def test_tampered_header_bytes(broker: Running) -> None:
    envelope = seal(broker.deployment.keys_dir, red_header(), {"DE-BKA": POLICE})
    raw = bytearray(envelope.header.header_bytes)
    raw[-1] ^= 1
    envelope.header.header_bytes = bytes(raw)
    await expect(grpc.StatusCode.INVALID_ARGUMENT, publish_raw(broker, envelope))
    nothing_stored(broker)


async def test_publishing_as_someone_else(broker: Running) -> None:
    envelope = seal(broker.deployment.keys_dir, red_header("DE-BKA"), {"FR-NCB": POLICE})
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        publish_raw(broker, envelope, as_="FR-NCB"),
        "originator is 'DE-BKA'",
    )
    nothing_stored(broker)


async def test_expired_notice(broker: Running) -> None:
    now = now_ms()
    header = red_header(created_at_ms=now - 2000, expires_at_ms=now - 1000)
    envelope = seal(broker.deployment.keys_dir, header, {"DE-BKA": POLICE})
    await expect(grpc.StatusCode.FAILED_PRECONDITION, publish_raw(broker, envelope), "expired")
    nothing_stored(broker)


async def test_clock_skew(broker: Running) -> None:
    now = now_ms()
    header = red_header(created_at_ms=now + 3_600_000, expires_at_ms=now + 7_200_000)
    envelope = seal(broker.deployment.keys_dir, header, {"DE-BKA": POLICE})
    await expect(grpc.StatusCode.INVALID_ARGUMENT, publish_raw(broker, envelope), "clock")
    nothing_stored(broker)


async def test_retention_beyond_catalogue(broker: Running) -> None:
    now = now_ms()
    header = red_header(expires_at_ms=now + 3000 * 86_400_000)
    envelope = seal(broker.deployment.keys_dir, header, {"DE-BKA": POLICE})
    await expect(grpc.StatusCode.INVALID_ARGUMENT, publish_raw(broker, envelope), "at most")
    nothing_stored(broker)


async def test_unknown_kind(broker: Running) -> None:
    envelope = seal(
        broker.deployment.keys_dir, red_header(kind="interpol.magenta"), {"DE-BKA": POLICE}
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT, publish_raw(broker, envelope), "unknown notice kind"
    )
    nothing_stored(broker)


async def test_section_outside_catalogue(broker: Running) -> None:
    sections = {**RED_SECTIONS, "horoscope": b"x"}
    envelope = seal(
        broker.deployment.keys_dir, red_header(), {"DE-BKA": {"identity"}}, sections=sections
    )
    await expect(grpc.StatusCode.INVALID_ARGUMENT, publish_raw(broker, envelope), "horoscope")
    nothing_stored(broker)


async def test_oversized_envelope_refused_by_broker_limit(start_broker) -> None:  # type: ignore[no-untyped-def]
    b = await start_broker(max_envelope_bytes=64 * 1024)
    sections = {**RED_SECTIONS, "case_facts": b"x" * 100_000}
    envelope = seal(b.deployment.keys_dir, red_header(), {"DE-BKA": POLICE}, sections=sections)
    await expect(grpc.StatusCode.RESOURCE_EXHAUSTED, publish_raw(b, envelope), "limit")
    nothing_stored(b)


async def test_oversized_message_refused_by_transport(broker: Running) -> None:
    sections = {**RED_SECTIONS, "case_facts": b"x" * (9 * 1024 * 1024)}
    envelope = seal(broker.deployment.keys_dir, red_header(), {"DE-BKA": POLICE}, sections=sections)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish_raw(broker, envelope)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    nothing_stored(broker)


async def test_malformed_protobuf(broker: Running) -> None:
    channel = broker.channel(Party("agency", "FR-NCB"))
    publish = channel.unary_unary("/broker.v1.AgencyService/Publish")
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        publish(b"\xff\xff\xff\xff garbage", timeout=5),
        "broker.v1.PublishRequest",
    )
    nothing_stored(broker)


async def test_wrap_beyond_policy_refuses_whole_publish(broker: Running) -> None:
    # A border unit may not read biometrics: the whole publish is refused, nothing stored.
    envelope = seal(
        broker.deployment.keys_dir,
        red_header(),
        {"DE-BKA": POLICE, "IT-BORDER": {"identity", "biometrics"}},
    )
    details = await expect(
        grpc.StatusCode.PERMISSION_DENIED, publish_raw(broker, envelope), "IT-BORDER", "biometrics"
    )
    assert "nothing was stored" in details
    nothing_stored(broker)


async def test_originator_restriction_enforced_at_publish(broker: Running) -> None:
    restrictions = notice_pb2.OriginatorRestrictions(deny_countries=["DE"])
    envelope = seal(
        broker.deployment.keys_dir,
        red_header(),
        {"DE-BKA": POLICE},
        restrictions=restrictions,
    )
    await expect(grpc.StatusCode.PERMISSION_DENIED, publish_raw(broker, envelope), "originator")
    nothing_stored(broker)


async def test_batch_is_atomic(broker: Running) -> None:
    good = seal(broker.deployment.keys_dir, red_header(), {"DE-BKA": POLICE})
    bad = seal(broker.deployment.keys_dir, red_header(kind="nope"), {"DE-BKA": POLICE})
    stub = broker.stub(Party("agency", "FR-NCB"))
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.Publish(agency_pb2.PublishRequest(envelopes=[good, bad]), timeout=5),
        "envelope 1",
    )
    nothing_stored(broker)


async def test_resolve_audience_explains_withholdings(broker: Running) -> None:
    async with broker.node("FR-NCB") as node:
        draft = red_header()
        audience = await node.resolve_audience(
            draft, notice_pb2.OriginatorRestrictions(), sorted(RED_SECTIONS)
        )
    members = {m.agency_id: set(m.sections) for m in audience.members}
    assert members["DE-BKA"] == set(RED_SECTIONS)
    assert members["IT-BORDER"] == {"identity"}
    withheld = {(w.agency_id, w.section): w for w in audience.withheld}
    assert "biometrics-police-only" in withheld[("IT-BORDER", "biometrics")].rules
    assert audience.policy_version == broker.app.policy.version


async def test_publish_many_decides_each_shape_once(broker: Running) -> None:
    from broker.client.types import Draft

    drafts = [
        Draft(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS) for _ in range(5)
    ]
    async with broker.node("FR-NCB") as node:
        sent = await node.publish_many(drafts)
        again = await node.publish_many(drafts[:1])
    assert len({p.notice_id for p in sent + again}) == 6
    assert all(p.audience == sent[0].audience for p in sent + again)
    # The broker decided the shape once and answered the other five from its cache.
    assert (broker.app.decisions.misses, broker.app.decisions.hits) == (1, 5)
    assert broker.count("notices") == 6
    assert broker.count("notice_sections") == 6 * len(RED_SECTIONS)  # each ciphertext once
