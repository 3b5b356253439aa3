"""Live revocation: a party revoked while the broker runs is refused at once.

Two ways revoke a party: the CA's list (keys/ca/revoked.txt, which the broker watches
and re-reads when it changes) and an administrator's signed registry entry with status
"revoked" (AdminService.SetAgencyStatus). Either way, on this running broker:

* every call of the party is refused from then on (its certificate is checked against
  the list on every call; a revoked registry status refuses publishes and receipts);
* its open Subscribe stream ends with UNAUTHENTICATED (the stream checks each turn);
* its pending and in-flight deliveries are withheld, and each originator is told (an
  event, as for any withheld delivery);
* a PartyRevoked leaf goes into the transparency log, with the number withheld and
  the digest of the administrator's signed entry (empty for the CA's list); the
  registry leaf and the key directory carry the signed status for nodes.

A name taken off the list is not un-revoked on a running broker: a restart reads the
list afresh (un-revoking is rare and deliberate; it should not happen by an edit).
On PostgreSQL every replica watches its own copy of the list, and each logs what it
withheld.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from broker import pki
from broker.core import logleaf
from broker.core.identity import parse_party_uri
from broker.errors import BrokerError
from broker.server import metrics
from broker.server.wire import now_ms
from broker.store.api import Event, Store

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

log = logging.getLogger("broker.server")
WATCH_INTERVAL_S = 0.5
REVOKED_REASON = "the recipient's credentials were revoked"


class Revocations:
    """Watches the CA's revocation list and applies revocations to a running broker."""

    def __init__(self, app: BrokerApp) -> None:
        self.app = app
        self.path = Path(app.config.keys_dir) / pki.CA_DIR / pki.REVOKED
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    async def watch(self) -> None:
        """Re-read the list whenever it changes (until cancelled)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            stamp = self._stamp()
            if stamp == self._seen:
                continue
            self._seen = stamp
            try:
                listed = pki.revoked_parties(self.app.config.keys_dir)
            except BrokerError as exc:  # a malformed list: keep the one in force, say why
                log.warning("revocation list not applied", extra={"error": str(exc)})
                continue
            new = listed - self.app.revoked
            if new:
                await self.revoke(new, by="ca")

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.watch())

    async def revoke(self, parties: frozenset[str], *, by: str, signed: bytes = b"") -> int:
        """Apply the revocation of `parties` (URIs) now; return the deliveries withheld."""
        app = self.app
        app.revoked = app.revoked | parties
        agencies = sorted(p.id for p in (parse_party_uri(u) for u in parties) if p.kind == "agency")
        now = now_ms()

        def write(store: Store) -> tuple[list[Event], dict[str, int]]:
            events: list[Event] = []
            counts: dict[str, int] = {}
            for agency in agencies:
                mine = [
                    e
                    for seq in store.queued_to(agency)
                    if (e := store.withhold(seq, REVOKED_REASON, now)) is not None
                ]
                counts[agency] = len(mine)
                events += mine
            store.tlog_append(
                [
                    logleaf.party_revoked(
                        party=uri,
                        by=by,
                        signed=signed,
                        withheld=counts.get(parse_party_uri(uri).id, 0)
                        if parse_party_uri(uri).kind == "agency"
                        else 0,
                        logged_at_ms=now,
                    )
                    for uri in sorted(parties)
                ]
            )
            return events, counts

        events, counts = await app.runner.call(write)
        await app.reload_registry()
        for agency in agencies:
            session = app.sessions.get(agency)
            if session is not None:  # its stream sees the revocation on its next turn
                session.closed.set()
                session.wake.set()
        for ev in events:
            metrics.WITHHELD.inc()
            app.wake(ev.agency)
        for uri in sorted(parties):
            log.warning(
                "party revoked",
                extra={"party": uri, "by": by, "withheld": counts.get(uri.rsplit(":", 1)[-1], 0)},
            )
        return len(events)
