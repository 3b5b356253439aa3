"""The demo's lookups: selectors its notices are indexed by, and two border checks.

An Italian border guard scans two travellers. The first one's passport and name
(written differently from the French NCB's) hit the Red notice: the guard learns
what the catalogue releases to border authorities, and the French NCB receives a
sealed hit notification it must answer within 12 hours. The second traveller hits
nothing. The broker sees OPRF tokens only (tests/integration/test_lookup_privacy.py
searches its database and everything it received for these selectors).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from broker.client.lookup import LookupKeyClient, Lookups
from broker.core.selectors import Selector, parse_selector
from broker.lookupkey import KeyServer, KeyServiceConfig
from broker.sandbox import LOOKUP_ID, Deployment

Say = Callable[[str], None]

# What each demo notice is indexed by (by kind), as the originator writes it.
INDEXED: Mapping[str, tuple[str, ...]] = {
    "interpol.red": ("travel_document=FR;P;19FR23456", "person=DUPONT, Jean;14.03.1981"),
    "interpol.yellow": ("person=MUELLER, Lena;2011-07-02", "travel_document=DE;I;L01X00T47"),
    "sis.art36": ("person=ROSSI, Marco;30/05/1975", "plate=IT;GE 123 XY"),
}
# The two travellers at the border, as the guard's scanner and keyboard give them.
TRAVELLERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("traveller 1", ("travel_document=fr;passport;19 FR 23456", "person=Jean Dupont;1981-03-14")),
    ("traveller 2", ("travel_document=IT;P;YA7654321", "person=BIANCHI, Paolo;02.06.1988")),
)
BORDER = "IT-BORDER"


def selectors_for(kind: str) -> list[Selector]:
    return [parse_selector(t) for t in INDEXED.get(kind, ())]


async def start_key_service(deployment: Deployment) -> KeyServer:
    server = KeyServer(
        KeyServiceConfig(
            LOOKUP_ID, deployment.keys_dir, deployment.root / "lookup", listen="127.0.0.1:0"
        )
    )
    await server.start()
    return server


def lookups_for(nodes: Mapping[str, Any], keys_dir: Path, port: int) -> dict[str, Lookups]:
    return {
        agency: Lookups(node, LookupKeyClient(keys_dir, agency, f"127.0.0.1:{port}", LOOKUP_ID))
        for agency, node in nodes.items()
    }


async def border_checks(
    lookups: Mapping[str, Lookups], notices: Mapping[tuple[str, int, str], Any], say: Say
) -> dict[str, object]:
    """Two travellers at the Italian border: one hit, one no-hit; the originator is told."""
    say("")
    say(f"border checks by {BORDER} (the broker sees OPRF tokens only, never a selector):")
    out: list[dict[str, object]] = []
    hit_counts: list[int] = []
    origins: list[str] = []
    for label, texts in TRAVELLERS:
        selectors = [parse_selector(t) for t in texts]
        results = await lookups[BORDER].lookup(
            selectors, "border_control", note=f"{label} at Fiumicino gate B12"
        )
        hits = [h for r in results for h in r.hits]
        hit_counts.append(len(hits))
        origins += [h.originator for h in hits]
        if not hits:
            say(f"  {label}: no hit on {len(selectors)} selector(s); let through")
        for r in results:
            if not r.hit:
                continue
            h = r.hits[0]
            say(
                f"  {label}: HIT on {r.selector.type}: {h.kind or 'a notice'} {h.notice_id[:8]} "
                f"by {h.originator} (release: {h.release})"
            )
            if h.action:
                say(f"    action: {h.action}")
        out.append({"traveller": label, "hits": [r.to_json() for r in results]})
    if not hit_counts[0] or hit_counts[1]:
        raise AssertionError("the border checks did not give one hit and one no-hit")
    origin = origins[0]
    sealed = await _hit_notification(notices, origin)
    body = json.loads(sealed.sections["hit"])
    say(
        f"  {origin} opened the sealed hit notification: {body['querier']} matched "
        f"{', '.join(body['selectors'])} ({body['note']}); answer due within "
        f"{(sealed.header.respond_by_ms - body['at_ms']) // 3_600_000} h"
    )
    return {"travellers": out, "notified": origin}


async def _hit_notification(notices: Mapping[tuple[str, int, str], Any], origin: str) -> Any:
    for _ in range(200):
        for (_nid, _v, agency), n in list(notices.items()):
            if agency == origin and n.header.kind == "reply.lookup_hit":
                return n
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{origin} never received the hit notification")
