"""The catalogue's content_fields, checked by the SDK and by the broker, over real gRPC
with mutual TLS: the SDK checks before sealing by default (NodeConfig.check_content)
and declares a signed content manifest; the broker, which never reads a section,
refuses at publish a notice whose manifest lacks a field its kind requires, naming the
kind, the section and the field, whatever SDK sealed it (broker/core/content.py)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from broker.client.errors import InvalidArgumentError
from broker.client.types import ReceivedNotice
from broker.errors import InvalidArgument
from broker.v1 import notice_pb2

from .conftest import Running
from .helpers import red_header, seal
from .test_publish import expect, publish_raw

pytestmark = pytest.mark.integration

COMPLETE = {
    "identity": "family_name: DOE\nforename: John\ndate_of_birth: 1970-01-01\nnationality: US",
    "case_facts": '{"offence": "fraud", "summary": "invoices forged"}',
    "judicial": "warrant_reference: W1\nissuing_authority: Paris court\npenalty_threshold: 2y",
}
ZZZ = {"identity": "zzz", "case_facts": "zzz", "judicial": "zzz"}


async def test_content_fields_checked_before_sealing_by_default(broker: Running) -> None:
    async with broker.node("FR-NCB") as node, broker.node("DE-BKA") as de:
        before = broker.count("notices")
        with pytest.raises(InvalidArgument) as err:
            await node.publish(
                kind="interpol.red", purpose="locate_arrest", sections=ZZZ, recipients=["DE-BKA"]
            )
        assert not isinstance(err.value, grpc.aio.AioRpcError)  # the SDK's, not the broker's
        assert "section 'identity' lacks family_name, forename" in str(err.value)
        assert "section 'judicial' lacks warrant_reference" in str(err.value)
        assert broker.count("notices") == before  # refused before sealing: nothing stored
        published = await node.publish(
            kind="interpol.red", purpose="locate_arrest", sections=COMPLETE, recipients=["DE-BKA"]
        )
        assert published.audience == {"DE-BKA": ("case_facts", "identity", "judicial")}
        # The recipient gets the signed manifest with the sections, and finds it true.
        got: list[ReceivedNotice] = []
        stop = asyncio.Event()

        async def handle(notice: ReceivedNotice) -> None:
            got.append(notice)
            stop.set()

        await asyncio.wait_for(de.listen(handle, stop=stop), 10)
        assert [n.notice_id for n in got] == [published.notice_id]
        assert got[0].manifest["identity"] == (
            "family_name",
            "forename",
            "date_of_birth",
            "nationality",
        )
        assert got[0].manifest["case_facts"] == ("offence", "summary")
        assert de.findings.since() == []


async def test_without_the_sdk_check_the_broker_refuses_naming_the_field(
    broker: Running,
) -> None:
    """check_content=False (migration only) moves the refusal to the broker: the node
    declares what the sections hold, and the broker refuses the missing field."""
    async with broker.node("FR-NCB", check_content=False) as node:
        before = broker.count("notices")
        almost = {**COMPLETE, "identity": "family_name: DOE\nforename: John\ndate_of_birth: 1970"}
        with pytest.raises(InvalidArgumentError) as err:
            await node.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=almost,
                recipients=["DE-BKA"],
            )
        assert err.value.status == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.reason.startswith(
            "interpol.red content: section 'identity' lacks nationality (its signed content "
            "manifest declares family_name, forename, date_of_birth)"
        ), err.value.reason
        assert "nothing was stored" in err.value.reason
        with pytest.raises(InvalidArgumentError, match="section 'case_facts' lacks offence"):
            await node.publish(
                kind="interpol.red", purpose="locate_arrest", sections=ZZZ, recipients=["DE-BKA"]
            )
        assert broker.count("notices") == before
        await node.publish(  # what it declares truly and completely goes
            kind="interpol.red", purpose="locate_arrest", sections=COMPLETE, recipients=["DE-BKA"]
        )
        assert broker.count("notices") == before + 1


async def test_an_envelope_without_a_manifest_is_refused_for_kinds_that_declare_fields(
    broker: Running,
) -> None:
    """An envelope sealed without a manifest (an SDK from before manifests) is refused
    for a kind declaring content_fields, and accepted for one that declares none."""
    keys = broker.deployment.keys_dir
    police = {"identity", "case_facts", "judicial"}
    bare = seal(keys, red_header(), {"DE-BKA": police}, manifest={})
    details = await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        publish_raw(broker, bare),
        "interpol.red content: section ",
        "lacks ",
        "declares no field",
    )
    assert (
        "section 'identity' lacks family_name, forename, date_of_birth, nationality" in (details)
        or "section 'case_facts' lacks offence, summary" in details
    )
    assert broker.count("notices") == 0
    spec = broker.app.policy.kinds["interpol.black"]
    assert spec.content_fields == ()
    black = red_header(
        kind="interpol.black",
        purpose="identification",
        data_subject=notice_pb2.DATA_SUBJECT_OTHER,
    )
    sections = {"case_facts": b"free text"}
    envelope = seal(keys, black, {"DE-BKA": {"case_facts"}}, sections=sections, manifest={})
    await publish_raw(broker, envelope)
    assert broker.count("notices") == 1
