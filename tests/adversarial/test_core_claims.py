"""The broker cannot read, alter or misroute a notice (the README's first claims).

The broker is the attacker: it reads its own database, rewrites what it streams, hands
out another key for a recipient, or widens a recipient's profile in its database. The
recipient's node (broker/core/envelope.py through AgencyNode.open) and the
originator's node (broker/client/publisher.py, broker/client/signedview.py) catch each.
"""

from __future__ import annotations

from typing import Any

import pytest

from broker.server import subscribe
from broker.store.tlog import TransparencyLogMixin
from broker.v1 import notice_pb2
from tests.content import section_for
from tests.integration.conftest import Running

from .kit import SECTIONS, agencies, publish, stored_bytes, tamper, until

pytestmark = pytest.mark.integration

SECRET = b"Surname: ZWIRBELKOPF, born 1971-04-02 in Graz"


async def test_the_broker_cannot_read_a_section(broker: Running) -> None:
    """Sections are sealed to the recipients' keys: the plaintext is nowhere in what the
    broker stores, while the recipient reads it."""
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        notice_id = await publish(
            a["FR-NCB"].node,
            ["DE-BKA"],
            sections={**SECTIONS, "identity": section_for("interpol.red", "identity", SECRET)},
        )
        await until(lambda: a["DE-BKA"].versions(notice_id) == [1])
        assert a["DE-BKA"].notices[0].sections["identity"].endswith(SECRET)
    assert b"ZWIRBELKOPF" not in stored_bytes(broker, notice_id.encode())


@pytest.mark.parametrize("part", ["header", "ciphertext"])
async def test_an_altered_notice_is_never_shown_or_receipted(
    broker: Running, monkeypatch: pytest.MonkeyPatch, part: str
) -> None:
    """The broker rewrites what it streams (a header field, a ciphertext byte): the
    recipient's node refuses to open it and sends no receipt."""
    assemble = subscribe.delivery.assemble

    def altered(**kw: Any) -> bytes:
        d = notice_pb2.Delivery.FromString(assemble(**kw))
        if part == "header":
            h = notice_pb2.NoticeHeader.FromString(d.header.header_bytes)
            h.purpose = "locate_missing"
            d.header.header_bytes = h.SerializeToString()
        else:
            c = bytearray(d.sections[0].ciphertext)
            c[-1] ^= 1
            d.sections[0].ciphertext = bytes(c)
        return d.SerializeToString()

    monkeypatch.setattr(subscribe.delivery, "assemble", altered)
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"])
        await until(lambda: a["DE-BKA"].node.stats.rejected >= 1)
        assert a["DE-BKA"].versions(notice_id) == []
        status = await a["FR-NCB"].node.delivery_status(notice_id)
        assert not any(r.receipt.receipt for r in status.recipients)


async def test_a_substituted_recipient_key_is_refused_by_the_originator(
    broker: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker serves its own X25519 key as DE-BKA's: the CA's signature (and the
    key directory's proof) no longer hold, and the node will not seal for DE-BKA."""
    serve = TransparencyLogMixin.directory_entries

    def swapped(self: Any) -> list[tuple[str, bytes, bytes]]:
        out = []
        for agency_id, entry, statement in serve(self):
            if agency_id == "DE-BKA":
                signed = notice_pb2.SignedKeyStatement.FromString(statement)
                st = notice_pb2.KeyStatement.FromString(signed.statement)
                st.encryption_key = bytes(32 * [7])  # the attacker's key
                signed.statement = st.SerializeToString()
                statement = signed.SerializeToString()
            out.append((agency_id, entry, statement))
        return out

    monkeypatch.setattr(TransparencyLogMixin, "directory_entries", swapped)
    async with broker.node("FR-NCB") as fr:
        sent = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=SECTIONS,
        )
        assert "DE-BKA" not in sent.audience and sent.audience
        view = await fr.directory()
        assert "DE-BKA" in view.excluded


async def test_a_widened_profile_does_not_widen_the_audience(broker: Running) -> None:
    """The operator gives IT-BORDER police roles in its database: the originator's node
    decides under the administrator-signed entry, so IT-BORDER still gets no section
    the signed policy keeps from border roles."""
    async with broker.node("FR-NCB") as fr:
        honest = await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=SECTIONS)
    denied = set(SECTIONS) - set(honest.audience.get("IT-BORDER", ()))
    assert denied, "the policy keeps something from border roles"
    assert (
        await tamper(broker, "UPDATE agencies SET roles=? WHERE id='IT-BORDER'", '["police"]') == 1
    )
    await broker.app.reload_registry()
    assert "police" in broker.app.registry["IT-BORDER"].profile.roles  # the broker's view
    async with broker.node("FR-NCB") as fr:
        sent = await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=SECTIONS)
    assert set(sent.audience.get("IT-BORDER", ())) == set(honest.audience.get("IT-BORDER", ()))
