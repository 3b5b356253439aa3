"""Deconfliction over real gRPC with a real lookup-key service: two agencies register
cases on the same person (spelled differently); the second learns of the first's case,
the first is told through a sealed notice naming the second, every lookup is logged,
and nothing of the subject reaches the broker in clear."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from broker.client.deconfliction import CASE_KIND, register_case
from broker.core import logleaf
from broker.core.selectors import parse_selector

from .conftest import Running
from .test_lookup import Open, key_server, lookups  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration
PERSON = parse_selector("person=DUPONT, Jean;14.03.1981")
SAME_PERSON = parse_selector("person=Jean Dupont;1981-03-14")
PLATE = parse_selector("plate=FR;AB-123-CD")


async def test_two_cases_on_one_subject_are_told_of_each_other(
    broker: Running,
    lookups: Open,  # noqa: F811
) -> None:
    fr, de = lookups("FR-NCB"), lookups("DE-BKA")
    first = await register_case(fr, [PERSON], b"case FR-2026-17, contact the duty officer")
    assert first.matches == ()
    assert set(first.notice.audience) == {"EU-HUB"}  # sealed to the hub, not broadcast
    second = await register_case(de, [SAME_PERSON, PLATE], b"case DE-44", note="fraud ring")
    (match,) = second.matches
    assert (match.originator, match.notice_id, match.kind) == (
        "FR-NCB",
        first.notice.notice_id,
        CASE_KIND,
    )
    assert match.release == "kind"  # what the catalogue releases of a case

    # The first agency is told, sealed end to end, who else works on the subject.
    got: list[Any] = []
    stop = asyncio.Event()

    async def on_notice(n: Any) -> None:
        if n.header.kind == "reply.lookup_hit":
            got.append(n)
            stop.set()

    await asyncio.wait_for(fr.node.listen(on_notice, stop=stop), 15)
    body = json.loads(got[0].sections["hit"])
    assert (body["querier"], body["selectors"], body["note"]) == (
        "DE-BKA",
        ["person"],
        "fraud ring",
    )
    assert got[0].header.in_reply_to == first.notice.notice_id

    # A third registration on the plate alone matches the second case only.
    third = await register_case(fr, [PLATE], b"case FR-2026-18")
    assert [m.notice_id for m in third.matches] == [second.notice.notice_id]

    # Each match is a logged lookup, visible to the querier.
    def lookups_of(agency: str) -> Any:
        def read(s: Any) -> list[Any]:
            leaves, _next = s.tlog_entries(0, s.tlog_size(), 10_000, agency)
            parsed = [logleaf.parse(b) for _i, b in leaves]
            return [p.lookup for p in parsed if p.WhichOneof("entry") == "lookup"]

        return read

    logged = await broker.app.runner.call(lookups_of("DE-BKA"))
    assert any(first.notice.notice_id in q.hit_notices for q in logged if q.querier == "DE-BKA")
    # The broker's database holds no subject in clear.
    db = broker.app.config.database
    raw = b"".join(f.read_bytes() for f in (db, db.with_name(db.name + "-wal")) if f.exists())
    assert first.notice.notice_id.encode() in raw  # (the files read are the right ones)
    for needle in (b"DUPONT", b"Dupont", b"AB-123-CD", b"AB123CD"):
        assert needle not in raw
