"""The SDK as an application uses it, against a real broker over mutual TLS: typed errors
carrying the status, the rule and the reason; sections as str or bytes; enums as plain
strings; `async with` and `async for` over received notices."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from broker.client import errors as sdk_errors
from broker.client.node import ReceivedNotice
from broker.errors import InvalidArgument, PolicyRefused
from broker.v1 import agency_pb2, notice_pb2

from .conftest import Running
from .helpers import RED_SECTIONS, red_header, seal

pytestmark = pytest.mark.integration

MISSING = json.dumps(
    {
        "family_name": "Åberg",
        "forename": "Märta",
        "date_of_birth": "2009-04-01",
        "date_missing": "2026-11-30",
    },
    ensure_ascii=False,
)


async def test_a_policy_refusal_reaches_the_sdk_with_its_rule_and_reason(broker: Running) -> None:
    # IT-BORDER may not read biometrics: sealed for it anyway, the broker refuses.
    envelope = seal(broker.deployment.keys_dir, red_header(), {"IT-BORDER": set(RED_SECTIONS)})
    async with broker.node("FR-NCB") as fr:
        with pytest.raises(sdk_errors.PolicyRefusedError) as info:
            await fr.publish_envelopes([envelope])
    err = info.value
    assert isinstance(err, grpc.aio.AioRpcError)  # existing `except` clauses still work
    assert isinstance(err, sdk_errors.PermissionDeniedError)
    assert err.code() == err.status == grpc.StatusCode.PERMISSION_DENIED
    assert "does not allow IT-BORDER" in err.reason
    assert err.rule and err.rule in err.reason
    refusal = next(r for r in err.refusals if r.section == "biometrics")
    assert refusal.recipient == "IT-BORDER" and refusal.rules and refusal.reason
    assert refusal.reason in err.reason
    assert broker.count("notices") == 0


async def test_other_refusals_are_typed_too(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr:
        with pytest.raises(sdk_errors.InvalidArgumentError) as info:
            await fr.stub.Publish(agency_pb2.PublishRequest(), timeout=5)
        assert info.value.status == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.rule == "" and info.value.refusals == ()
        assert "no envelopes" in str(info.value)
        status = (
            await fr.stub.GetDeliveryStatus(
                agency_pb2.DeliveryStatusRequest(notice_id="nope"), timeout=5
            )
            if False
            else None
        )
        assert status is None


async def test_the_sdk_refuses_locally_with_the_same_detail(broker: Running) -> None:
    # The originator's own restrictions deny IT-BORDER; naming it is refused before sealing.
    async with broker.node("FR-NCB") as fr:
        with pytest.raises(PolicyRefused) as info:
            await fr.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=RED_SECTIONS,
                recipients=["IT-BORDER"],
                data_subject="convicted",
                restrictions=notice_pb2.OriginatorRestrictions(deny_agencies=["IT-BORDER"]),
            )
    assert "does not allow IT-BORDER" in str(info.value)
    assert info.value.refusals
    assert {r.recipient for r in info.value.refusals} == {"IT-BORDER"}
    assert all(r.rules and r.reason for r in info.value.refusals)
    assert broker.count("notices") == 0


async def test_text_sections_plain_enums_and_an_async_iterator(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr:
        sent = await fr.publish(
            kind="interpol.yellow",
            purpose="locate_missing",
            sections={"identity": MISSING, "case_facts": b"last seen at the station"},
            data_subject="victim",
            recipients=["DE-BKA"],
        )
        second = await fr.publish(
            kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS
        )
    got: list[ReceivedNotice] = []
    async with broker.node("DE-BKA") as de:
        async for notice in de.notices():
            got.append(notice)
            if len(got) == 2:
                break
    first = next(n for n in got if n.notice_id == sent.notice_id)
    assert first.data_subject == "victim" and first.kind == "interpol.yellow"
    assert first.text("identity") == MISSING
    assert first.sections["identity"] == MISSING.encode("utf-8")
    assert first.sections["case_facts"] == b"last seen at the station"
    assert {n.notice_id for n in got} == {sent.notice_id, second.notice_id}
    # Leaving the loop by `break` counts the notice it was on as handled: both receipted.
    async with broker.node("FR-NCB") as fr:
        for notice in got:
            await wait_delivered(fr, notice.notice_id, "DE-BKA")
        third = await fr.publish(
            kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS
        )
    # A loop that fails on a notice leaves it unhandled: the next start hands it again.
    async with broker.node("DE-BKA") as de:
        with pytest.raises(RuntimeError, match="the application failed"):
            async with de.notices() as stream:
                async for notice in stream:
                    assert notice.notice_id == third.notice_id
                    raise RuntimeError("the application failed")
    stop = asyncio.Event()
    again: list[str] = []
    async with broker.node("DE-BKA") as de:
        async for notice in de.notices(stop=stop):
            again.append(notice.notice_id)
            stop.set()  # the loop ends when it asks for the next one
    assert again == [third.notice_id]
    async with broker.node("FR-NCB") as fr:
        await wait_delivered(fr, third.notice_id, "DE-BKA")


async def wait_delivered(node: Any, notice_id: str, recipient: str) -> None:
    for _ in range(100):
        status = await node.delivery_status(notice_id)
        states = {r.recipient: r.state for r in status.recipients}
        if states.get(recipient) == agency_pb2.DELIVERY_STATE_DELIVERED:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{notice_id} not delivered to {recipient}: {status}")


async def test_bad_sections_and_enum_names_fail_before_anything_is_sent(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr:
        with pytest.raises(
            TypeError, match=r"section 'identity' must be str \(sent as UTF-8\) or bytes, not int"
        ):
            await fr.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections={**RED_SECTIONS, "identity": 42},  # type: ignore[dict-item]
            )
        with pytest.raises(InvalidArgument, match="data subject 'boss' is not one of suspect"):
            await fr.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=RED_SECTIONS,
                data_subject="boss",
            )
        with pytest.raises(InvalidArgument, match="lifecycle kind 'erase' is not one of"):
            await fr.act("erase", "some-notice")
    assert broker.count("notices") == 0


async def test_lifecycle_kinds_as_strings(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr:
        sent = await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
        await fr.act("withdraw", sent.notice_id, reason="arrested")
        with pytest.raises(sdk_errors.FailedPreconditionError) as info:
            await fr.act("withdraw", sent.notice_id, reason="again")
        assert info.value.status == grpc.StatusCode.FAILED_PRECONDITION
    await asyncio.sleep(0)
