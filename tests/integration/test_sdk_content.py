"""The SDK checks the catalogue's content_fields before sealing when asked
(NodeConfig.check_content, which `broker node publish` sets): a Red notice whose
sections are "zzz" is refused naming the fields, and nothing reaches the broker."""

from __future__ import annotations

import pytest

from broker.errors import InvalidArgument

from .conftest import Running
from .helpers import RED_SECTIONS

pytestmark = pytest.mark.integration

COMPLETE = {
    "identity": "family_name: DOE\nforename: John\ndate_of_birth: 1970-01-01\nnationality: US",
    "case_facts": '{"offence": "fraud", "summary": "invoices forged"}',
    "judicial": "warrant_reference: W1\nissuing_authority: Paris court\npenalty_threshold: 2y",
}


async def test_content_fields_checked_before_sealing(broker: Running) -> None:
    async with broker.node("FR-NCB", check_content=True) as node:
        before = broker.count("notices")
        with pytest.raises(InvalidArgument) as err:
            await node.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections={"identity": "zzz", "case_facts": "zzz", "judicial": "zzz"},
                recipients=["DE-BKA"],
            )
        assert "section 'identity' lacks family_name, forename" in str(err.value)
        assert "section 'judicial' lacks warrant_reference" in str(err.value)
        assert broker.count("notices") == before  # refused before sealing: nothing stored
        published = await node.publish(
            kind="interpol.red", purpose="locate_arrest", sections=COMPLETE, recipients=["DE-BKA"]
        )
        assert published.audience == {"DE-BKA": ("case_facts", "identity", "judicial")}
    async with broker.node("FR-NCB") as node:  # off by default: free text still goes
        await node.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["DE-BKA"],
        )
