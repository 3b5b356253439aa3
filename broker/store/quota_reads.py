"""What fair sharing reads from the store (a mixin of SqlStore): the stored outcome of
a notice version a caller publishes again, and each originator's queued deliveries.

No tables of its own: both read the notices and deliveries tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.store.api import IN_FLIGHT, PENDING, PublishOutcome, StoredPublish
from broker.store.sql import SqlBase

_CHUNK = 200  # (notice_id, version) pairs per query, far below SQLite's parameter limit


class QuotaReadsMixin(SqlBase):
    def stored_publishes(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], StoredPublish]:
        """The stored notice versions among `keys`, with the answer their Publish gave
        (as a duplicate: the same recipients, header digest and policy version)."""
        out: dict[tuple[str, int], StoredPublish] = {}
        wanted = sorted(set(keys))
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            where = " OR ".join("(notice_id=? AND version=?)" for _ in chunk)
            params = [v for key in chunk for v in key]
            rows = self.conn.execute(
                "SELECT notice_id, version, originator, envelope_digest, header_digest, "
                f"policy_version FROM notices WHERE {where}",
                params,
            ).fetchall()
            if not rows:  # the usual case, a new notice: no deliveries to read
                continue
            recipients: dict[tuple[str, int], list[str]] = {}
            for r in self.conn.execute(
                f"SELECT notice_id, version, recipient FROM deliveries WHERE {where} "
                "ORDER BY notice_id, version, recipient",
                params,
            ):
                recipients.setdefault((r[0], int(r[1])), []).append(r[2])
            for r in rows:
                key = (r[0], int(r[1]))
                out[key] = StoredPublish(
                    originator=r[2],
                    envelope_digest=bytes(r[3]),
                    outcome=PublishOutcome(
                        r[0], key[1], bytes(r[4]), True, tuple(recipients.get(key, ())), r[5]
                    ),
                )
        return out

    def queued_by_originator(self) -> dict[str, int]:
        """Deliveries not yet delivered (pending or in flight), per originator."""
        rows = self.conn.execute(
            "SELECT n.originator, COUNT(*) FROM deliveries d JOIN notices n "
            "ON n.notice_id = d.notice_id AND n.version = d.version "
            "WHERE d.state IN (?, ?) GROUP BY n.originator",
            (PENDING, IN_FLIGHT),
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}
