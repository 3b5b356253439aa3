"""What only the PostgreSQL backend has to get right: the SQL translation, the schema
kept in step with SQLite's, and several transactions at once (replicas and store
workers) on one database: exclusive claims, one log sequence, deadlock retries,
lost connections, concurrent migrations.

Tests needing the server take `pg_schema` (skipped without BROKER_TEST_POSTGRES_DSN).
No assertion depends on timing: where one transaction must wait for another, the
test waits until PostgreSQL itself shows the waiter blocked on that lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.core import logleaf, merkle
from broker.errors import InvalidArgument, Unavailable
from broker.store.migrations import MIGRATIONS
from broker.store.pg_migrations import PG_MIGRATIONS
from broker.store.pgsql import IDENTITY_KEYS, translate
from broker.store.postgres import PostgresStore, lock_key
from broker.store.runner import StoreRunner
from broker.store.sqlite import SqliteStore
from tests.postgres import TempSchema
from tests.store.test_contract import NOW, R1, item, notice


# -- translation (no server needed) -----------------------------------------------------------
def test_placeholders_and_percent_signs() -> None:
    t = translate("SELECT a FROM t WHERE b=? AND c LIKE '50% ?' AND d=?")
    assert t.sql == "SELECT a FROM t WHERE b=%s AND c LIKE '50%% ?' AND d=%s"
    assert not t.returning and not t.ordered


def test_blob_literals_become_bytea() -> None:
    assert (
        translate("UPDATE n SET e=x'' WHERE id=?").sql == "UPDATE n SET e='\\x'::bytea WHERE id=%s"
    )
    assert (
        translate("SELECT x'0aFF', max(x) FROM t").sql == "SELECT '\\x0aFF'::bytea, max(x) FROM t"
    )
    with pytest.raises(ValueError, match="blob literal"):
        translate("SELECT x'abc'")


def test_insert_or_ignore_and_returning() -> None:
    t = translate("INSERT OR IGNORE INTO receipts VALUES (?,?)")
    assert t.sql == "INSERT INTO receipts VALUES (%s,%s) ON CONFLICT DO NOTHING"
    assert not t.returning
    t = translate("INSERT INTO events (agency) VALUES (?)")
    assert t.sql == "INSERT INTO events (agency) VALUES (%s) RETURNING seq"
    assert t.returning and t.ordered  # event numbers follow the log's order
    many = translate("INSERT INTO deliveries (recipient) VALUES (?)", many=True)
    assert many.sql == "INSERT INTO deliveries (recipient) VALUES (%s)" and not many.returning


def test_statements_on_the_log_take_the_sequencer() -> None:
    for text in (
        "SELECT MAX(idx) FROM tlog_leaves",
        "INSERT INTO tlog_checkpoints VALUES (?,?,?,?)",
        "SELECT position FROM tlog_cursors WHERE source=?",
        "SELECT COALESCE(MAX(seq), 0) FROM policy_activations",
        "  insert into events (agency) values (?)",
    ):
        assert translate(text).ordered, text
    for text in ("SELECT seq FROM events WHERE agency=?", "UPDATE events SET acked=1"):
        assert not translate(text).ordered, text


def test_sqlite_only_spellings_are_refused() -> None:
    with pytest.raises(ValueError, match="PRAGMA"):
        translate("PRAGMA user_version")
    with pytest.raises(ValueError, match="upsert"):
        translate("INSERT OR REPLACE INTO t VALUES (?)")
    with pytest.raises(ValueError, match="unterminated"):
        translate("SELECT 'oops")


# -- the schema, in step with SQLite's ---------------------------------------------------------
def sqlite_columns(tmp_path: Path) -> dict[str, list[str]]:
    SqliteStore.open(tmp_path / "s.db").close()
    conn = sqlite3.connect(str(tmp_path / "s.db"))
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        conn.close()


def test_schema_matches_sqlite_step_for_step(pg_schema: TempSchema, tmp_path: Path) -> None:
    assert len(PG_MIGRATIONS) == len(MIGRATIONS), "append the PostgreSQL step too"
    PostgresStore.open(pg_schema.dsn).close()
    rows = pg_schema.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name <> 'broker_schema' "
        "ORDER BY table_name, ordinal_position"
    )
    pg: dict[str, list[str]] = {}
    for table, column in rows:
        pg.setdefault(str(table), []).append(str(column))
    assert pg == sqlite_columns(tmp_path)  # same tables, same columns, same order
    identity = pg_schema.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'"
    )
    assert dict(identity) == IDENTITY_KEYS


def test_sessions_commit_durably(pg_schema: TempSchema) -> None:
    runner = StoreRunner(PostgresStore.open(pg_schema.dsn))
    try:
        sync, fsync = runner.call_sync(
            lambda s: s.conn.execute(
                "SELECT current_setting('synchronous_commit'), current_setting('fsync')"
            ).fetchone()
        )
    finally:
        runner.close()
    assert sync in ("on", "remote_write", "remote_apply") and fsync == "on"


def test_migrate_is_idempotent_and_safe_to_race(pg_schema: TempSchema) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PostgresStore.open(pg_schema.dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert [s.schema_version() for s in stores] == [len(PG_MIGRATIONS)] * 3
        assert stores[0].migrate() == (len(PG_MIGRATIONS), len(PG_MIGRATIONS))
    finally:
        for s in stores:
            s.close()


def test_unreachable_server_and_missing_schema_say_what_to_fix(pg_schema: TempSchema) -> None:
    with pytest.raises(Unavailable, match="cannot connect to PostgreSQL"):
        PostgresStore.open("postgresql://postgres:secret@127.0.0.1:1/test?connect_timeout=2")
    missing = TempSchema(pg_schema.base, pg_schema.name + "_missing")
    with pytest.raises(InvalidArgument, match="CREATE SCHEMA"):
        PostgresStore.open(missing.dsn)
    with pytest.raises(InvalidArgument, match="pool sizes"):
        PostgresStore.open(pg_schema.dsn, pool_min=3, pool_max=2)


# -- several transactions at once --------------------------------------------------------------
@pytest.fixture
def two(pg_schema: TempSchema) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one schema, as two replicas have: separate pools, separate sessions."""
    a = PostgresStore.open(pg_schema.dsn, pool_min=1, pool_max=2)
    b = PostgresStore.open(pg_schema.dsn, pool_min=1, pool_max=2)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def in_transaction(store: PostgresStore, fn: Callable[[PostgresStore], Any]) -> Any:
    store.begin()
    try:
        value = fn(store)
    except BaseException:
        store.rollback()
        raise
    store.commit()
    return value


def wait_until_blocked(pg_schema: TempSchema, what: str) -> None:
    """Return once some session of this test's database waits on a lock of kind `what`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        waiting = pg_schema.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = %s", what
        )
        if int(waiting[0][0]):  # type: ignore[call-overload]
            return
        time.sleep(0.01)
    raise AssertionError(f"no session ever waited on a {what} lock")


def test_two_replicas_never_claim_the_same_delivery(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    notices = [notice(f"n-{i:02}") for i in range(10)]
    in_transaction(a, lambda s: s.publish([item(n, R1) for n in notices]))

    a.begin()  # replica A leases, and has not committed yet
    leased_a = a.lease(R1, 4, NOW, 30_000)
    leased_b = in_transaction(b, lambda s: s.lease(R1, 100, NOW, 30_000))  # skips A's rows
    a.commit()
    leased_again = in_transaction(b, lambda s: s.lease(R1, 100, NOW, 30_000))

    ids_a, ids_b = {d.notice_id for d in leased_a}, {d.notice_id for d in leased_b}
    assert len(ids_a) == 4 and len(ids_b) == 6
    assert not ids_a & ids_b
    assert ids_a | ids_b == {n.notice_id for n in notices}
    assert leased_again == []  # everything is in flight, each delivery on one replica


def test_log_appends_from_two_replicas_form_one_sequence(
    pg_schema: TempSchema, two: tuple[PostgresStore, PostgresStore]
) -> None:
    a, b = two
    leaves = [
        logleaf.lifecycle(
            kind="test",
            notice_id=f"n-{i}",
            version=1,
            originator="FR-NCB",
            recipient="DE-BKA",
            detail=str(i),
            logged_at_ms=NOW,
        )
        for i in range(6)
    ]
    a.begin()
    assert a.tlog_append(leaves[:3]) == [0, 1, 2]
    assert a.conn.sequenced
    got: list[list[int]] = []
    worker = threading.Thread(
        target=lambda: got.append(in_transaction(b, lambda s: s.tlog_append(leaves[3:])))
    )
    worker.start()
    wait_until_blocked(pg_schema, "advisory")  # B waits for A's log lock...
    a.commit()  # ... and appends after A's entries once A commits
    worker.join(30)
    assert got == [[3, 4, 5]]
    hashes = [merkle.leaf_hash(logleaf.serialize(leaf)) for leaf in leaves]
    assert in_transaction(a, lambda s: s.tlog_root(6)) == merkle.root_from_hashes(hashes)


def test_events_are_numbered_in_commit_order(
    pg_schema: TempSchema, two: tuple[PostgresStore, PostgresStore]
) -> None:
    """The log catches up with events by cursor: an event must never commit under a number
    below one already logged (A takes number 1, B must not commit 2 first)."""
    a, b = two
    a.begin()
    first = a.add_event("FR-NCB", "review_due", "n-1", 0, "", "first", NOW)
    done: list[Any] = []
    worker = threading.Thread(
        target=lambda: done.append(
            in_transaction(
                b, lambda s: s.add_event("FR-NCB", "review_due", "n-2", 0, "", "second", NOW)
            )
        )
    )
    worker.start()
    wait_until_blocked(pg_schema, "advisory")
    a.commit()
    worker.join(30)
    [second] = done
    assert second.seq > first.seq
    assert in_transaction(b, lambda s: s.tlog_sync(NOW)) == 2
    assert in_transaction(a, lambda s: s.tlog_sync(NOW)) == 0


def test_a_rolled_back_operation_gives_the_log_lock_back(pg_schema: TempSchema) -> None:
    """Rolling back to a savepoint releases an advisory lock taken inside it: the next
    operation of the group must take the log's lock again before it appends."""
    runner = StoreRunner(PostgresStore.open(pg_schema.dsn))
    leaf = logleaf.lifecycle(
        kind="test",
        notice_id="n",
        version=1,
        originator="FR-NCB",
        recipient="",
        detail="",
        logged_at_ms=NOW,
    )
    key = lock_key(pg_schema.name, "log")

    def holds_lock(s: Any) -> bool:
        row = s.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND granted "
            "AND pid=pg_backend_pid() AND classid::bigint=? AND objid::bigint=?",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchone()
        return int(row[0]) == 1

    def group(s: Any) -> list[Any]:
        seen: list[Any] = []
        s.savepoint()  # a first operation: appends, then fails
        s.tlog_append([leaf])
        seen.append((s.conn.sequenced, holds_lock(s)))
        s.rollback_savepoint()
        seen.append((s.conn.sequenced, holds_lock(s)))
        s.savepoint()  # the next one appends again
        seen.append(s.tlog_append([leaf]))
        seen.append((s.conn.sequenced, holds_lock(s)))
        s.release_savepoint()
        seen.append((s.conn.sequenced, holds_lock(s)))  # now the group's, until COMMIT
        return seen

    try:
        assert runner.call_sync(group) == [
            (True, True),
            (False, False),
            [0],
            (True, True),
            (True, True),
        ]
    finally:
        runner.close()


def test_a_deadlock_between_replicas_is_retried(pg_schema: TempSchema) -> None:
    """Two replicas lock two deliveries in opposite orders: PostgreSQL aborts one of them,
    and its runner runs the whole group again once the other has committed."""
    a = StoreRunner(PostgresStore.open(pg_schema.dsn, pool_max=1))
    b = StoreRunner(PostgresStore.open(pg_schema.dsn, pool_max=1))
    try:
        a.call_sync(lambda s: s.publish([item(notice("n-x"), R1), item(notice("n-y"), R1)]))
        seqs = a.call_sync(
            lambda s: [r[0] for r in s.conn.execute("SELECT seq FROM deliveries ORDER BY seq")]
        )
        first_locked = threading.Barrier(2, timeout=30)
        runs: dict[str, int] = {"a": 0, "b": 0}

        def cross(name: str, mine: int, theirs: int) -> Callable[[Any], str]:
            def op(s: Any) -> str:
                runs[name] += 1
                s.conn.execute("SELECT seq FROM deliveries WHERE seq=? FOR UPDATE", (mine,))
                if runs[name] == 1:
                    first_locked.wait()  # both hold their first row: now cross over
                s.conn.execute("SELECT seq FROM deliveries WHERE seq=? FOR UPDATE", (theirs,))
                return name

            return op

        results: dict[str, str] = {}
        threads = [
            threading.Thread(target=lambda: results.update(a=a.call_sync(cross("a", *seqs)))),
            threading.Thread(
                target=lambda: results.update(b=b.call_sync(cross("b", seqs[1], seqs[0])))
            ),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == {"a": "a", "b": "b"}  # both succeeded in the end
        assert a.retries + b.retries == 1  # one was chosen as the deadlock's victim
        assert sorted(runs.values()) == [1, 2]
    finally:
        a.close()
        b.close()


def test_a_dropped_connection_is_replaced(pg_schema: TempSchema) -> None:
    runner = StoreRunner(PostgresStore.open(pg_schema.dsn, pool_min=1, pool_max=1))
    try:
        pid = runner.call_sync(lambda s: s.conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        pg_schema.execute("SELECT pg_terminate_backend(%s)", pid)
        runner.call_sync(lambda s: s.publish([item(notice(), R1)]))  # on a new connection
        new_pid = runner.call_sync(
            lambda s: s.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        )
        assert new_pid != pid
        assert runner.retries >= 1
        assert [d.notice_id for d in runner.call_sync(lambda s: s.lease(R1, 10, NOW, 1))] == ["n-1"]
    finally:
        runner.close()


def test_an_operation_that_always_violates_a_unique_key_fails_alone(
    pg_schema: TempSchema,
) -> None:
    """23505 is retried (another transaction may have taken the key first); one that
    recurs splits the group, so the others in it commit and only its caller fails."""
    runner = StoreRunner(PostgresStore.open(pg_schema.dsn, pool_max=1))
    gate, started = threading.Event(), threading.Event()

    def blocker(_s: Any) -> str:
        started.set()
        assert gate.wait(30)
        return "released"

    def insert(k: int) -> Callable[[Any], int]:
        def op(s: Any) -> int:
            s.conn.execute("INSERT INTO dup (k) VALUES (?)", (k,))
            return k

        return op

    try:
        runner.call_sync(lambda s: s.conn.execute("CREATE TABLE dup (k BIGINT PRIMARY KEY)"))
        runner.call_sync(insert(1))
        results: dict[int, object] = {}

        def call(k: int) -> None:
            try:
                results[k] = runner.call_sync(insert(k))
            except Unavailable as exc:
                results[k] = exc

        held = threading.Thread(target=runner.call_sync, args=(blocker,))
        held.start()
        assert started.wait(30)
        callers = [threading.Thread(target=call, args=(k,)) for k in (2, 1, 3)]
        for t in callers:
            t.start()
        # All three wait behind the blocker, so that they run as one group.
        deadline = time.monotonic() + 30
        while runner._queue.qsize() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        held.join(30)
        for t in callers:
            t.join(60)
        assert results[2] == 2 and results[3] == 3
        assert isinstance(results[1], Unavailable)
        assert runner.splits == 1
        keys = runner.call_sync(
            lambda s: [r[0] for r in s.conn.execute("SELECT k FROM dup ORDER BY k")]
        )
        assert keys == [1, 2, 3]
    finally:
        gate.set()
        runner.close()


def test_several_workers_commit_groups_at_once(pg_schema: TempSchema) -> None:
    """With two store workers, one group blocked inside its transaction does not hold up
    the other worker's groups."""
    store = PostgresStore.open(pg_schema.dsn, pool_max=2)
    runner = StoreRunner(store, store.handle())
    gate, started = threading.Event(), threading.Event()

    def blocker(_s: Any) -> str:
        started.set()
        assert gate.wait(30)
        return "released"

    try:
        held: list[str] = []
        t = threading.Thread(target=lambda: held.append(runner.call_sync(blocker)))
        t.start()
        assert started.wait(30)
        outcomes = runner.call_sync(lambda s: s.publish([item(notice(), R1, sections=("a",))]))
        assert [o.notice_id for o in outcomes] == ["n-1"]  # committed while the other waits
        gate.set()
        t.join(30)
        assert held == ["released"]
    finally:
        gate.set()
        runner.close()
