"""PostgreSQL backend: the store's one body of SQL on a pool of psycopg 3 connections.

`PostgresStore` is `SqlStore` (broker/store/sqlite.py and its mixins) over a
`PgConnection` (broker/store/pgsql.py), with what only PostgreSQL needs:

* transactions on pooled connections: `begin()` takes a connection from the
  pool, `commit()`/`rollback()` give it back; a broken connection is dropped
  and the pool opens a new one. Each store handle (`handle()`) runs one
  StoreRunner thread, so a broker with N handles commits N groups at once;
* row locks where several transactions may read the same rows in order to
  change them (`claim_rows`: FOR UPDATE SKIP LOCKED, so two replicas never
  lease the same delivery; `lock_rows`: FOR UPDATE);
* the transparency log's advisory lock (see broker/store/pgsql.py);
* versioned migrations of its own (broker/store/pg_migrations.py), each in one
  transaction, under an advisory lock so replicas starting together migrate once.

Durability: COMMIT returns once PostgreSQL has flushed the WAL (a session the server
would run with synchronous_commit off or local is set to on, so with synchronous
standbys it also waits for them), so the runner acknowledges only what survives a
crash, as with SQLite.

The schema is the connection's current schema (the first of its search_path,
e.g. ``?options=-csearch_path%3Dbroker`` in the DSN); its name also names the
LISTEN/NOTIFY channel and the advisory locks, so several deployments can share
one database in separate schemas.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from broker.errors import InvalidArgument, Unavailable
from broker.store.backends import redact
from broker.store.pg_migrations import PG_MIGRATIONS
from broker.store.pgsql import PgConnection
from broker.store.runner import RetryBatch
from broker.store.sqlite import SqlStore

log = logging.getLogger(__name__)
SCHEMA_TABLE = "broker_schema"
# Connection settings a DSN does not override: notice a dead peer within ~30 s, and
# never let a stuck transaction hold the log's lock for long.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "connect_timeout": 10,
}
IDLE_IN_TRANSACTION_MS = 60_000
POOL_TIMEOUT_S = 10.0


def lock_key(schema: str, purpose: str) -> int:
    """A 64-bit advisory-lock key for one purpose within one schema."""
    digest = hashlib.sha256(f"sealed-notice-broker\0{schema}\0{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the replicas sharing `schema` (at most 63 bytes)."""
    return f"broker_{schema}"[:63]


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.autocommit = True  # transactions are explicit: BEGIN ... COMMIT
    conn.execute(
        "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
        (str(IDLE_IN_TRANSACTION_MS),),
    )
    row = conn.execute("SHOW synchronous_commit").fetchone()
    if row is not None and row[0] in ("off", "local"):
        # An acknowledged publish must survive a crash: wait for the WAL flush (and for
        # synchronous standbys, if the server has any).
        conn.execute("SET synchronous_commit = on")


@dataclass
class _Shared:
    """What every handle of one store shares: the pool and the schema's names."""

    dsn: str
    pool: ConnectionPool[psycopg.Connection[Any]]
    schema: str
    handles: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sequencer_key(self) -> int:
        return lock_key(self.schema, "log")

    @property
    def channel(self) -> str:
        return channel_name(self.schema)


class PostgresStore(SqlStore):
    """The shared store. Construct with :meth:`open`; more handles with :meth:`handle`."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._conn: PgConnection | None = None
        self._closed = False

    # -- connections ----------------------------------------------------------------------
    @classmethod
    def open(
        cls, dsn: str, *, pool_min: int = 1, pool_max: int = 4, migrate: bool = True
    ) -> PostgresStore:
        """Connect (a pool of `pool_min`..`pool_max` connections) and migrate the schema.

        Raises Unavailable when the server cannot be reached, InvalidArgument for a bad
        DSN, a missing schema or a schema newer than this broker.
        """
        if not 1 <= pool_min <= pool_max:
            raise InvalidArgument(
                f"store pool sizes must satisfy 1 <= min <= max, not {pool_min}, {pool_max}"
            )
        try:
            params = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise InvalidArgument(
                f"store DSN is not a PostgreSQL connection string: {exc}"
            ) from exc
        kwargs: dict[str, Any] = {k: v for k, v in _KEEPALIVES.items() if k not in params}
        try:  # one plain connection first: a wrong DSN fails at once, and says why
            with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, **kwargs)) as probe:
                row = probe.execute("SELECT current_schema()").fetchone()
        except psycopg.OperationalError as exc:
            raise Unavailable(
                f"cannot connect to PostgreSQL at {redact(dsn)} ({_first_line(exc)}): "
                "is the server up and the DSN right?"
            ) from exc
        if row is None or row[0] is None:
            raise InvalidArgument(
                "the store DSN's search_path names no existing schema: create it "
                "(CREATE SCHEMA ...) or fix options=-csearch_path=..."
            )
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn,
            min_size=pool_min,
            max_size=pool_max,
            kwargs=kwargs,
            configure=_configure,
            open=False,
            timeout=POOL_TIMEOUT_S,
            name="broker-store",
        )
        try:
            pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        except PoolTimeout as exc:
            pool.close()
            raise Unavailable(
                f"cannot open {pool_min} connection(s) to PostgreSQL at {redact(dsn)}; "
                "lower store_pool_min or raise the server's max_connections"
            ) from exc
        store = cls(_Shared(dsn, pool, str(row[0])))
        if migrate:
            try:
                store.migrate()
            except BaseException:
                pool.close()
                raise
        return store

    def handle(self) -> PostgresStore:
        """Another handle on the same pool, for another StoreRunner thread."""
        with self._shared.lock:
            self._shared.handles += 1
        return PostgresStore(self._shared)

    @property
    def schema(self) -> str:
        return self._shared.schema

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel the broker's replicas share."""
        return self._shared.channel

    @property
    def dsn(self) -> str:
        return self._shared.dsn

    @property
    def conn(self) -> PgConnection:  # type: ignore[override]
        if self._conn is None:
            raise RuntimeError("store methods run inside a StoreRunner transaction")
        return self._conn

    def close(self) -> None:
        """Close this handle; the pool closes with the last one (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._conn is not None:
            self._release(broken=True)
        shared = self._shared
        with shared.lock:
            shared.handles -= 1
            last = shared.handles == 0
        if last:
            shared.pool.close()

    # -- transactions (used by StoreRunner) -------------------------------------------------
    def begin(self) -> None:
        try:
            raw = self._shared.pool.getconn()
        except PoolTimeout as exc:
            raise Unavailable("no PostgreSQL connection available; retry") from exc
        self._conn = PgConnection(raw, self._shared.sequencer_key)
        self._conn.defer("BEGIN")

    def commit(self) -> None:
        try:
            self.conn.defer("COMMIT")
            self.conn.flush()
        except RetryBatch as exc:
            # The connection broke under COMMIT: whether it committed is unknown, so the
            # group must not run again; its callers hear "unavailable" and may retry.
            raise Unavailable("storage connection lost during commit; retry") from exc
        self._release(broken=False)

    def rollback(self) -> None:
        if self._conn is None:
            return
        self._conn.discard()
        try:
            self._conn.defer("ROLLBACK")
            self._conn.flush()
        except (psycopg.Error, RetryBatch):
            self._release(broken=True)
            return
        self._release(broken=False)

    def savepoint(self) -> None:
        self.conn.defer("SAVEPOINT op")
        self.conn.opened_savepoint()

    def release_savepoint(self) -> None:
        self.conn.defer("RELEASE SAVEPOINT op")
        self.conn.released_savepoint()

    def rollback_savepoint(self) -> None:
        self.conn.defer("ROLLBACK TO SAVEPOINT op")
        self.conn.defer("RELEASE SAVEPOINT op")
        self.conn.rolled_back_savepoint()

    def _release(self, *, broken: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if broken and not conn.raw.closed:
            conn.raw.close()  # the pool replaces a closed connection
        self._shared.pool.putconn(conn.raw)

    # -- row locks (see broker/store/sql.py) ------------------------------------------------
    def claim_rows(self, alias: str) -> str:
        return f" FOR UPDATE OF {alias} SKIP LOCKED"

    def lock_rows(self, alias: str) -> str:
        return f" FOR UPDATE OF {alias}"

    # -- migrations ---------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self._shared.pool.connection() as conn:
            return _schema_version(conn)

    def migrate(self) -> tuple[int, int]:
        """Apply every migration newer than the schema's version, each in one transaction;
        return (version before, version after). Safe to run from several replicas at once."""
        key = lock_key(self._shared.schema, "migrate")
        with self._shared.pool.connection() as conn:
            before = _schema_version(conn)
            if before > len(PG_MIGRATIONS):
                raise InvalidArgument(
                    f"database schema version {before} is newer than this broker "
                    f"({len(PG_MIGRATIONS)}): upgrade the broker"
                )
            while True:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                    conn.execute(
                        sql.SQL("CREATE TABLE IF NOT EXISTS {} (version BIGINT NOT NULL)").format(
                            sql.Identifier(SCHEMA_TABLE)
                        )
                    )
                    current = _schema_version(conn)
                    if current >= len(PG_MIGRATIONS):
                        return before, current
                    conn.execute(PG_MIGRATIONS[current])
                    conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(SCHEMA_TABLE)))
                    conn.execute(
                        sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(
                            sql.Identifier(SCHEMA_TABLE)
                        ),
                        (current + 1,),
                    )
                log.info("store migrated", extra={"schema_version": current + 1})


def _schema_version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (SCHEMA_TABLE,)).fetchone()
    if exists is None or not exists[0]:
        return 0
    row = conn.execute(
        sql.SQL("SELECT MAX(version) FROM {}").format(sql.Identifier(SCHEMA_TABLE))
    ).fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
