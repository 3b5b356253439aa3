"""An originator that lies in its content manifest: it declares, signed, every field the
catalogue asks of its Red notice's sections, and writes "zzz" in them. The broker
cannot read sections, so it accepts the notice (the names check out); the recipient's
node opens it, finds the declared fields missing and refuses it: never shown, never
receipted, a `content_manifest` finding naming the originator, the sections and the
fields (broker/client/intake.py, broker/core/content.py). And a broker that skips its
manifest check: the recipient's node finds the fields missing under the signed policy
and reports it (`content_incomplete`)."""

from __future__ import annotations

import sqlite3

import pytest

from broker.core import content
from tests.content import fields_of
from tests.integration.conftest import Running
from tests.integration.helpers import red_header, seal
from tests.integration.test_publish import publish_raw

from .kit import Listener, agencies, publish, until

pytestmark = pytest.mark.integration

POLICE = {"identity", "case_facts", "judicial"}


def _state(broker: Running, notice_id: str, recipient: str) -> str:
    conn = sqlite3.connect(f"file:{broker.app.config.database}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT state FROM deliveries WHERE notice_id=? AND recipient=?",
            (notice_id, recipient),
        ).fetchone()
    finally:
        conn.close()
    return str(row[0])


async def test_a_manifest_that_does_not_match_its_sections_is_refused_by_the_recipient(
    broker: Running,
) -> None:
    keys = broker.deployment.keys_dir
    claimed = {s: fields_of("interpol.red", s) for s in sorted(POLICE)}
    # All of identity's fields but nationality are there; case_facts and judicial are "zzz".
    sections = {
        "identity": b"family_name: DOE\nforename: J\ndate_of_birth: 1970-01-01\n",
        "case_facts": b"zzz",
        "judicial": b"zzz",
    }
    header = red_header()
    lie = seal(keys, header, {"DE-BKA": POLICE}, sections=sections, manifest=claimed)
    await publish_raw(broker, lie)  # the broker sees only names, and they are complete
    assert broker.count("notices") == 1
    async with agencies(broker, "FR-NCB") as a:
        de = Listener(broker.node("DE-BKA"))
        await de.start()
        try:
            await until(lambda: bool(de.found("content_manifest")))
            (finding,) = de.found("content_manifest")
            assert finding.notice_id == header.notice_id and finding.subject == "FR-NCB"
            assert finding.detail.startswith(
                "interpol.red v1: section 'case_facts' lacks 'offence', 'summary'; "
                "section 'identity' lacks 'nationality'; section 'judicial' lacks "
                "'warrant_reference', 'issuing_authority', 'penalty_threshold', which the "
                "originator's signed content manifest declares; refused"
            ), finding.detail
            assert [f.kind for _, f in de.node.findings.since(0, header.notice_id)] == [
                "content_manifest"
            ]
            # An honest notice after it is shown: the node listens, and refused only the lie.
            honest = await publish(a["FR-NCB"].node, ["DE-BKA"])
            await until(lambda: de.versions(honest) == [1])
            assert de.versions(header.notice_id) == []  # never shown
            assert not de.node.inbox.held_versions(header.notice_id)
            assert _state(broker, honest, "DE-BKA") == "delivered"
            assert _state(broker, header.notice_id, "DE-BKA") != "delivered"  # no receipt
        finally:
            await de.halt()
            await de.node.close()


async def test_a_truthful_manifest_with_extra_content_is_not_a_lie(broker: Running) -> None:
    """The recipient refuses only declared fields that are missing: content beyond the
    manifest (free text after the fields) is the originator's business."""
    keys = broker.deployment.keys_dir
    header = red_header()
    sections = {
        "identity": b"family_name: DOE\nforename: J\ndate_of_birth: 1970\nnationality: FR\n"
        b"Known to use the alias JD; speaks French and Dutch.",
        "case_facts": b'{"offence": "fraud", "summary": "forged invoices", "note": "x"}',
        "judicial": b"warrant_reference: W1\nissuing_authority: Lyon\npenalty_threshold: 2y",
    }
    envelope = seal(keys, header, {"DE-BKA": POLICE}, sections=sections)
    await publish_raw(broker, envelope)
    de = Listener(broker.node("DE-BKA"))
    await de.start()
    try:
        await until(lambda: de.versions(header.notice_id) == [1])
        assert de.found("content_manifest") == de.found("content_incomplete") == []
        assert de.notices[0].manifest["identity"] == fields_of("interpol.red", "identity")
    finally:
        await de.halt()
        await de.node.close()


async def test_a_broker_that_skips_its_manifest_check_is_caught_by_the_recipient(
    broker: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker (patched) passes on a notice with no manifest and "zzz" sections; the
    recipient's node shows it (it is the originator's signed notice) and reports what the
    signed catalogue asks of the sections it lacks."""
    monkeypatch.setattr(content, "check_manifest", lambda *_args: None)  # only the broker's
    header = red_header()
    zzz = {s: b"zzz" for s in sorted(POLICE)}
    envelope = seal(broker.deployment.keys_dir, header, {"DE-BKA": POLICE}, zzz, manifest={})
    await publish_raw(broker, envelope)
    de = Listener(broker.node("DE-BKA"))
    await de.start()
    try:
        await until(lambda: bool(de.found("content_incomplete")))
        (finding,) = de.found("content_incomplete")
        assert finding.notice_id == header.notice_id and finding.subject == "FR-NCB"
        assert "section 'identity' lacks family_name, forename, date_of_birth, nationality" in (
            finding.detail
        )
        assert "so the broker should have refused it" in finding.detail
        await until(lambda: de.versions(header.notice_id) == [1])  # shown all the same
        assert de.found("content_manifest") == []  # nothing declared: no lie
    finally:
        await de.halt()
        await de.node.close()
