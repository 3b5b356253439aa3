"""The broker stores no free text that can name a person (issue 9, item 6).

Reasons of lifecycle actions travel as their signed digest with the text sealed to the
agencies told (`broker/client/reasons.py`); administrators' status reasons are kept as
digests. The attacker here is whoever reads the broker's database: the test searches
every byte of it (the SQLite file and its write-ahead log) for the texts, while the
agencies they were meant for read them.
"""

from __future__ import annotations

import pytest

from broker import pki
from broker.client.admin import AdminClient
from broker.core.identity import Party
from tests.integration.conftest import Running

from .kit import agencies, publish, stored_bytes, until

pytestmark = pytest.mark.integration

WITHDRAWN = "Jean Dupont was arrested in Lyon"
FLAGGED = "Maria Rossi is a protected witness here"
SUSPENDED = "officer Hans Meier leaked a notice"


async def test_reasons_are_sealed_and_the_broker_keeps_only_digests(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr, de = a["FR-NCB"], a["DE-BKA"]
        notice_id = await publish(fr.node, ["DE-BKA"])
        await until(lambda: de.versions(notice_id) == [1])
        await de.node.flag(notice_id, FLAGGED)  # sealed to the originator (and DE-BKA)
        await until(lambda: any(x.kind == "flag" for x in fr.actions))
        flag = next(x for x in fr.actions if x.kind == "flag")
        assert flag.reason == FLAGGED and flag.action.reason.startswith("sha256:")
        await fr.node.withdraw(notice_id, WITHDRAWN)  # sealed to the signed audience
        await until(lambda: any(x.kind == "withdraw" for x in de.actions))
        withdrawal = next(x for x in de.actions if x.kind == "withdraw")
        assert withdrawal.reason == WITHDRAWN
    pki.issue_certificate(broker.deployment.keys_dir, Party("admin", "alice"))
    async with AdminClient(broker.deployment.keys_dir, "alice", broker.target) as admin:
        await admin.set_status("IT-BORDER", "suspended", SUSPENDED)

    stored = stored_bytes(broker, notice_id.encode())
    for name in ("Jean Dupont", "Maria Rossi", "Hans Meier"):
        assert name.encode() not in stored, f"{name!r} is in the broker's database"
        assert name.upper().encode() not in stored.upper(), name
