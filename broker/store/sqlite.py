"""The store's SQL, written once, and the SQLite backend that runs it as it is.

`SqlStore` holds the relay's statements (registry, publish, delivery, receipts,
events); with its mixins (admin.py, lifecycle.py, tlog.py) it is the whole store
over any `broker.store.sql.Connection`. The statements are in SQLite's dialect;
PostgresStore (broker/store/postgres.py) runs the same ones through a translating
connection and overrides only what must differ.

`SqliteStore`: WAL journal, synchronous=FULL, versioned migrations. One
connection, owned by one thread (the StoreRunner's); the runner groups writes
into one transaction and acknowledges them only after COMMIT returns, which with
synchronous=FULL means the WAL has been fsync'd.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from broker.errors import (
    AlreadyExists,
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from broker.store.admin import AdminStoreMixin
from broker.store.api import (
    DEAD,
    DELIVERED,
    IN_FLIGHT,
    PENDING,
    PURGED,
    WITHHELD,
    AgencyRecord,
    DeliveryPlan,
    DeliveryStatus,
    Event,
    LeasedDelivery,
    NoticeRecord,
    PublishOutcome,
    ReceiptOutcome,
    ReceiptRecord,
)
from broker.store.console_reads import ConsoleReadsMixin
from broker.store.custody import CustodyStoreMixin
from broker.store.lifecycle import LifecycleStoreMixin
from broker.store.lookup import LookupStoreMixin
from broker.store.migrations import MIGRATIONS
from broker.store.quota_reads import QuotaReadsMixin
from broker.store.requests import RequestStoreMixin
from broker.store.sql import Connection
from broker.store.tlog import TransparencyLogMixin


def _j(values: Sequence[str]) -> str:
    return json.dumps(list(values))


def _t(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


_IN_CHUNK = 256  # notice ids per IN (...) list: well under SQLite's 32,766 parameters


def receipt_lookup_sql(n: int) -> str:
    """The deliveries (with their notice's digest and originator) of `n` notices to one
    recipient; parameters: the n notice ids, then the recipient."""
    # CAST: the recipient is a filter, not an index to search; on the plain column both
    # SQLite and PostgreSQL would pick the queue index and scan every delivery the
    # recipient ever had (tests/store/test_contract.py checks SQLite's plan).
    return (
        "SELECT d.notice_id, d.version, d.seq, d.state, n.header_digest, n.originator, "
        "d.sections FROM deliveries d JOIN notices n USING (notice_id, version) "
        f"WHERE d.notice_id IN ({','.join('?' * n)}) AND CAST(d.recipient AS TEXT)=?"
    )


_REFUSED_STATES = {
    PENDING: "was never streamed to you (or its lease ran out): receipt it when it arrives",
    WITHHELD: "was withheld, not delivered",
    PURGED: "was purged before it reached you",
    DEAD: "was given up (dead-lettered) before your receipt came",
}


def _receipt_refusal(
    r: ReceiptRecord, row: tuple[int, str, bytes, str, str] | None
) -> BrokerError | None:
    """Why a receipt does not count for the delivery it names (None: it counts)."""
    what = f"notice {r.notice_id} version {r.version}"
    if row is None:
        return NotFound(f"no delivery of {what} to {r.recipient}")
    _seq, state, digest, _originator, sections = row
    if digest != r.header_digest:
        return InvalidArgument(
            f"receipt for {what} names another header digest than the one delivered"
        )
    if state not in (IN_FLIGHT, DELIVERED):
        return FailedPrecondition(f"the delivery of {what} {_REFUSED_STATES.get(state, state)}")
    if tuple(sorted(r.sections)) != tuple(sorted(_t(sections))):
        return InvalidArgument(
            f"receipt for {what} names sections {', '.join(sorted(r.sections)) or 'none'}; "
            f"{', '.join(sorted(_t(sections)))} were delivered"
        )
    return None


class SqlStore(
    AdminStoreMixin,
    LifecycleStoreMixin,
    TransparencyLogMixin,
    ConsoleReadsMixin,
    LookupStoreMixin,  # + lookups (lookup.py)
    RequestStoreMixin,  # + judicial (requests.py)
    CustodyStoreMixin,  # + evidence: chains of custody (custody.py)
    QuotaReadsMixin,  # + fair sharing (quota_reads.py)
):  # + transparency log (tlog.py), console views (console_reads.py)
    """The store over one connection; a backend adds transactions and migrations."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- registry --------------------------------------------------------------
    def upsert_agency(self, agency: AgencyRecord) -> None:
        self.conn.execute(
            "INSERT INTO agencies (id, country, roles, groups_, purposes, status, statement, "
            "signing_key, encryption_key, serial, signed_entry) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET "
            "country=excluded.country, roles=excluded.roles, groups_=excluded.groups_, "
            "purposes=excluded.purposes, status=excluded.status, statement=excluded.statement, "
            "signing_key=excluded.signing_key, encryption_key=excluded.encryption_key, "
            "serial=excluded.serial, signed_entry=excluded.signed_entry",
            (
                agency.id,
                agency.country,
                _j(agency.roles),
                _j(agency.groups),
                _j(agency.purposes),
                agency.status,
                agency.statement,
                agency.signing_key,
                agency.encryption_key,
                agency.serial,
                agency.signed_entry,
            ),
        )

    def agencies(self) -> list[AgencyRecord]:
        rows = self.conn.execute(
            "SELECT id, country, roles, groups_, purposes, status, statement, signing_key, "
            "encryption_key, serial, signed_entry FROM agencies ORDER BY id"
        ).fetchall()
        return [
            AgencyRecord(
                r[0],
                r[1],
                _t(r[2]),
                _t(r[3]),
                _t(r[4]),
                r[5],
                bytes(r[6]),
                bytes(r[7]),
                bytes(r[8]),
                r[9],
                None if r[10] is None else bytes(r[10]),
            )
            for r in rows
        ]

    # -- publish -----------------------------------------------------------------
    def publish(
        self, items: Sequence[tuple[NoticeRecord, Sequence[DeliveryPlan]]]
    ) -> list[PublishOutcome]:
        outcomes = []
        for notice, plans in items:
            owner = self.conn.execute(
                "SELECT originator FROM notices WHERE notice_id=? LIMIT 1", (notice.notice_id,)
            ).fetchone()
            if owner is not None and owner[0] != notice.originator:
                raise PermissionDenied(
                    f"notice id {notice.notice_id} belongs to another originator; "
                    "use a new notice id"
                )
            row = self.conn.execute(
                "SELECT envelope_digest, header_digest, policy_version FROM notices "
                "WHERE notice_id=? AND version=?",
                (notice.notice_id, notice.version),
            ).fetchone()
            if row is not None:
                if bytes(row[0]) != notice.envelope_digest:
                    raise AlreadyExists(
                        f"notice {notice.notice_id} version {notice.version} was already "
                        "published with other content; publish a new version instead"
                    )
                recipients = tuple(
                    r[0]
                    for r in self.conn.execute(
                        "SELECT recipient FROM deliveries WHERE notice_id=? AND version=? "
                        "ORDER BY recipient",
                        (notice.notice_id, notice.version),
                    )
                )
                outcomes.append(
                    PublishOutcome(
                        notice.notice_id, notice.version, bytes(row[1]), True, recipients, row[2]
                    )
                )
                continue
            self.conn.execute(
                "INSERT INTO notices (notice_id, version, originator, kind, header_digest, "
                "envelope_digest, envelope, created_at_ms, expires_at_ms, accepted_at_ms, "
                "policy_version, decisions, head) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    notice.notice_id,
                    notice.version,
                    notice.originator,
                    notice.kind,
                    notice.header_digest,
                    notice.envelope_digest,
                    notice.envelope,
                    notice.created_at_ms,
                    notice.expires_at_ms,
                    notice.accepted_at_ms,
                    notice.policy_version,
                    notice.decisions,
                    notice.head,
                ),
            )
            if notice.ciphertexts:
                self.conn.executemany(
                    "INSERT INTO notice_sections (notice_id, version, position, ciphertext) "
                    "VALUES (?,?,?,?)",
                    [
                        (notice.notice_id, notice.version, i, ct)
                        for i, ct in enumerate(notice.ciphertexts)
                    ],
                )
            self.conn.executemany(
                "INSERT INTO deliveries (recipient, notice_id, version, sections, state, "
                "not_before_ms, cut, wrap, obligations, decided_under, priority) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        p.recipient,
                        notice.notice_id,
                        notice.version,
                        _j(p.sections),
                        PENDING,
                        p.not_before_ms,
                        p.cut,
                        p.wrap,
                        p.obligations,
                        p.decided_under,
                        notice.priority,
                    )
                    for p in plans
                ],
            )
            outcomes.append(
                PublishOutcome(
                    notice.notice_id,
                    notice.version,
                    notice.header_digest,
                    False,
                    tuple(sorted(p.recipient for p in plans)),
                    notice.policy_version,
                )
            )
        return outcomes

    # -- delivery ----------------------------------------------------------------
    def lease(self, recipient: str, limit: int, now_ms: int, lease_ms: int) -> list[LeasedDelivery]:
        rows = self.conn.execute(
            "SELECT d.seq, d.notice_id, d.version, d.sections, d.attempts, n.envelope, n.head, "
            "d.cut, d.wrap, d.obligations, d.decided_under, d.priority, n.accepted_at_ms "
            "FROM deliveries d JOIN notices n USING (notice_id, version) "
            "WHERE d.recipient=? AND d.state=? AND d.not_before_ms <= ? "
            "AND NOT EXISTS (SELECT 1 FROM notice_state s WHERE s.notice_id=d.notice_id "
            "AND (s.closed<>'' OR s.suspended_until_ms>?)) "
            # + judicial: urgent first (the signed priority), then oldest first
            "ORDER BY d.priority DESC, d.seq LIMIT ?" + self.claim_rows("d"),
            (recipient, PENDING, now_ms, now_ms, limit),
        ).fetchall()
        if not rows:
            return []
        marks = ",".join("?" * len(rows))
        self.conn.execute(
            "UPDATE deliveries SET state=?, attempts=attempts+1, deadline_ms=? "
            f"WHERE seq IN ({marks})",
            (IN_FLIGHT, now_ms + lease_ms, *(r[0] for r in rows)),
        )
        texts = self._ciphertexts({(r[1], r[2]) for r in rows if r[7]})
        return [
            LeasedDelivery(
                r[0],
                recipient,
                r[1],
                r[2],
                _t(r[3]),
                r[4] + 1,
                bytes(r[5]),
                bytes(r[6]),
                bytes(r[7]),
                bytes(r[8]),
                bytes(r[9]),
                r[10],
                texts.get((r[1], r[2]), ()),
                r[11],
                r[12],
            )
            for r in rows
        ]

    def _ciphertexts(
        self, notices: set[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[tuple[int, bytes], ...]]:
        """The stored section ciphertexts of these notice versions, by position."""
        out: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
        ids = sorted({n for n, _v in notices})
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for nid, version, position, ct in self.conn.execute(
                "SELECT notice_id, version, position, ciphertext FROM notice_sections "
                f"WHERE notice_id IN ({marks}) ORDER BY notice_id, version, position",
                chunk,
            ):
                if (nid, version) in notices:
                    out.setdefault((nid, version), []).append((position, bytes(ct)))
        return {k: tuple(v) for k, v in out.items()}

    def release(self, recipient: str, now_ms: int, max_attempts: int) -> list[Event]:
        rows = self.conn.execute(
            "SELECT d.seq, d.recipient, d.notice_id, d.version, d.attempts, n.originator "
            "FROM deliveries d JOIN notices n USING (notice_id, version) "
            "WHERE d.recipient=? AND d.state=?" + self.lock_rows("d"),
            (recipient, IN_FLIGHT),
        ).fetchall()
        return self._requeue(rows, now_ms, max_attempts)

    def record_receipts(self, receipts: Sequence[ReceiptRecord]) -> list[tuple[str, int]]:
        outcomes = self.receive_receipts(receipts)
        for o in outcomes:
            if o.error is not None:
                raise o.error  # the caller's savepoint undoes the others
        return [(o.notice_id, o.version) for o in outcomes]

    def receive_receipts(self, receipts: Sequence[ReceiptRecord]) -> list[ReceiptOutcome]:
        if not receipts:
            return []
        found: dict[tuple[str, int, str], tuple[int, str, bytes, str, str]] = {}
        # One query per recipient and chunk of notices, by the unique (notice, version,
        # recipient) key's leading column: a query by recipient alone would scan every
        # delivery that recipient ever had, and one query per receipt cost a round trip
        # each (a batch of receipts is nearly always one recipient's).
        wanted = set((r.notice_id, r.version, r.recipient) for r in receipts)
        by_recipient: dict[str, dict[str, None]] = {}
        for notice_id, _version, recipient in wanted:
            by_recipient.setdefault(recipient, {})[notice_id] = None
        for recipient, unique in by_recipient.items():
            ids = list(unique)
            for at in range(0, len(ids), _IN_CHUNK):
                chunk = ids[at : at + _IN_CHUNK]
                rows = self.conn.execute(
                    receipt_lookup_sql(len(chunk)) + self.lock_rows("d"),
                    (*chunk, recipient),
                ).fetchall()
                for nid, version, seq, state, digest, originator, sections in rows:
                    key = (nid, version, recipient)
                    if key in wanted:
                        found[key] = (seq, state, bytes(digest), originator, sections)
        outcomes: list[ReceiptOutcome] = []
        delivered: dict[int, ReceiptRecord] = {}  # seq -> the receipt that delivers it now
        for r in receipts:
            row = found.get((r.notice_id, r.version, r.recipient))
            error = _receipt_refusal(r, row)
            if error is not None:
                outcomes.append(ReceiptOutcome(r.notice_id, r.version, r.recipient, error=error))
                continue
            assert row is not None
            seq, state, _digest, originator, _sections = row
            first = state == IN_FLIGHT and seq not in delivered
            if first:
                delivered[seq] = r
            outcomes.append(ReceiptOutcome(r.notice_id, r.version, r.recipient, first, originator))
        if delivered:
            self.conn.executemany(  # receipts first: a failure leaves the states unchanged
                "INSERT OR IGNORE INTO receipts VALUES (?,?,?,?,?,?)",
                [
                    (
                        r.notice_id,
                        r.version,
                        r.recipient,
                        r.header_digest,
                        r.proven,
                        r.received_at_ms,
                    )
                    for r in delivered.values()
                ],
            )
            self.conn.executemany(
                "UPDATE deliveries SET state=?, deadline_ms=NULL, delivered_at_ms=? WHERE seq=?",
                [(DELIVERED, r.received_at_ms, seq) for seq, r in delivered.items()],
            )
        return outcomes

    def expire_leases(self, now_ms: int, max_attempts: int) -> list[Event]:
        rows = self.conn.execute(
            "SELECT d.seq, d.recipient, d.notice_id, d.version, d.attempts, n.originator "
            "FROM deliveries d JOIN notices n USING (notice_id, version) "
            "WHERE d.state='in_flight' AND d.deadline_ms < ?"  # the partial index
            + self.claim_rows("d"),
            (now_ms,),
        ).fetchall()
        return self._requeue(rows, now_ms, max_attempts)

    def _requeue(
        self, rows: list[tuple[int, str, str, int, int, str]], now_ms: int, max_attempts: int
    ) -> list[Event]:
        """Back to pending, or dead-lettered (with an event for the originator)."""
        events = []
        for seq, recipient, notice_id, version, attempts, originator in rows:
            if attempts < max_attempts:
                self.conn.execute(
                    "UPDATE deliveries SET state=?, deadline_ms=NULL WHERE seq=?", (PENDING, seq)
                )
                continue
            self.conn.execute(
                "UPDATE deliveries SET state=?, deadline_ms=NULL WHERE seq=?", (DEAD, seq)
            )
            detail = f"no receipt after {attempts} delivery attempts"
            cur = self.conn.execute(
                "INSERT INTO events (agency, kind, notice_id, version, recipient, detail, at_ms) "
                "VALUES (?,?,?,?,?,?,?)",
                (originator, "dead_lettered", notice_id, version, recipient, detail, now_ms),
            )
            events.append(
                Event(
                    int(cur.lastrowid or 0),
                    originator,
                    "dead_lettered",
                    notice_id,
                    version,
                    recipient,
                    detail,
                    now_ms,
                )
            )
        return events

    def add_event(
        self,
        agency: str,
        kind: str,
        notice_id: str,
        version: int,
        recipient: str,
        detail: str,
        at_ms: int,
    ) -> Event:
        cur = self.conn.execute(
            "INSERT INTO events (agency, kind, notice_id, version, recipient, detail, at_ms) "
            "VALUES (?,?,?,?,?,?,?)",
            (agency, kind, notice_id, version, recipient, detail, at_ms),
        )
        return Event(
            int(cur.lastrowid or 0), agency, kind, notice_id, version, recipient, detail, at_ms
        )

    def events(self, agency: str, after_seq: int, limit: int) -> list[Event]:
        rows = self.conn.execute(
            "SELECT seq, agency, kind, notice_id, version, recipient, detail, at_ms FROM events "
            "WHERE agency=? AND acked=0 AND seq>? ORDER BY seq LIMIT ?",
            (agency, after_seq, limit),
        ).fetchall()
        return [Event(*r) for r in rows]

    def ack_events(self, agency: str, up_to_seq: int) -> None:
        self.conn.execute(
            "UPDATE events SET acked=1 WHERE agency=? AND seq<=?", (agency, up_to_seq)
        )

    def delivery_status(
        self, originator: str, notice_id: str, version: int
    ) -> list[DeliveryStatus]:
        known = self.conn.execute(
            "SELECT 1 FROM notices WHERE notice_id=? AND originator=? AND (?=0 OR version=?)",
            (notice_id, originator, version, version),
        ).fetchone()
        if known is None:
            raise NotFound(f"you have published no notice {notice_id}")
        # Only this originator's versions: notice ids are chosen by clients, so another
        # agency may have published other versions under the same id.
        rows = self.conn.execute(
            "SELECT d.recipient, d.version, d.state, d.attempts, d.sections, r.proven "
            "FROM deliveries d "
            "JOIN notices n ON n.notice_id=d.notice_id AND n.version=d.version "
            "LEFT JOIN receipts r ON r.notice_id=d.notice_id AND r.version=d.version "
            "AND r.recipient=d.recipient "
            "WHERE d.notice_id=? AND n.originator=? AND (?=0 OR d.version=?) "
            "ORDER BY d.version, d.recipient",
            (notice_id, originator, version, version),
        ).fetchall()
        return [
            DeliveryStatus(r[0], r[1], r[2], r[3], _t(r[4]), None if r[5] is None else bytes(r[5]))
            for r in rows
        ]

    def pending_recipients(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT recipient FROM deliveries WHERE state=?", (PENDING,)
        ).fetchall()
        return [r[0] for r in rows]


class SqliteStore(SqlStore):
    """The embedded store. Construct with :meth:`open`."""

    conn: sqlite3.Connection

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)

    @classmethod
    def open(cls, path: Path, *, migrate: bool = True) -> SqliteStore:
        """Open (creating and, unless told otherwise, migrating) the database at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")  # erased means erased
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        store = cls(conn)
        try:
            if migrate:
                store.migrate()
        except BaseException:
            conn.close()  # e.g. a schema newer than this broker: do not leak the connection
            raise
        return store

    def close(self) -> None:
        self.conn.close()

    # -- transactions (used by StoreRunner) ---------------------------------
    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    def savepoint(self) -> None:
        self.conn.execute("SAVEPOINT op")

    def release_savepoint(self) -> None:
        self.conn.execute("RELEASE SAVEPOINT op")

    def rollback_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO SAVEPOINT op")
        self.conn.execute("RELEASE SAVEPOINT op")

    def schema_version(self) -> int:
        row = self.conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def migrate(self) -> tuple[int, int]:
        """Apply every migration newer than the database's user_version, atomically each;
        return (version before, version after)."""
        current = self.schema_version()
        if current > len(MIGRATIONS):
            raise InvalidArgument(
                f"database schema version {current} is newer than this broker "
                f"({len(MIGRATIONS)}): upgrade the broker"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                pending = ""  # a trigger body holds ';': split only where a statement ends
                for piece in MIGRATIONS[version - 1].split(";"):
                    pending += piece + ";"
                    if sqlite3.complete_statement(pending):
                        if pending.strip(" \n;"):
                            self.conn.execute(pending)
                        pending = ""
                self.conn.execute(f"PRAGMA user_version={version}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return current, max(current, len(MIGRATIONS))
