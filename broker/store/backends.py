"""Which store a broker runs on: SQLite in its data directory, or a PostgreSQL DSN."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from broker.errors import InvalidArgument
from broker.store.api import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(store: str) -> bool:
    """True for a PostgreSQL URL (postgresql://...); "" means the SQLite file."""
    return store.startswith(POSTGRES_SCHEMES)


def redact(dsn: str) -> str:
    """The store URL without its password, for messages and logs."""
    try:
        parts = urlsplit(dsn)
        password = parts.password
    except ValueError:
        return "(unparsable store URL)"
    if password is None:
        return dsn
    user, _, hosts = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{hosts}"))


def describe(store: str, database: Path) -> str:
    """Where the broker keeps its state, for the log."""
    return redact(store) if store else f"sqlite:{database}"


def check_store(store: str, pool_min: int, pool_max: int, workers: int) -> None:
    """Raise InvalidArgument, saying what to write, for a store setting that cannot work."""
    if store and not is_postgres(store):
        raise InvalidArgument(
            f"store {store.split(':', maxsplit=1)[0]!r} is not supported: leave it empty for the "
            "SQLite file under data_dir, or give a postgresql://user@host:port/db URL"
        )
    sizes = {"store_pool_min": pool_min, "store_pool_max": pool_max, "store_workers": workers}
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidArgument(f"{name} must be a whole number, not {value!r}")
    if not 1 <= pool_min <= pool_max:
        raise InvalidArgument(
            f"store_pool_min and store_pool_max must satisfy 1 <= min <= max, "
            f"not {pool_min} and {pool_max}"
        )
    if not 1 <= workers <= pool_max:
        raise InvalidArgument(
            f"store_workers must be between 1 and store_pool_max ({pool_max}), not {workers}"
        )


def open_stores(
    store: str,
    database: Path,
    *,
    pool_min: int = 1,
    pool_max: int = 4,
    workers: int = 2,
) -> tuple[Store, ...]:
    """Open (and migrate) the store; one handle per StoreRunner thread.

    SQLite: one handle (one connection, one writer). PostgreSQL: `workers`
    handles on one pool of `pool_min`..`pool_max` connections.
    """
    check_store(store, pool_min, pool_max, workers)
    if not store:
        from broker.store.sqlite import SqliteStore

        return (SqliteStore.open(database),)
    from broker.store.postgres import PostgresStore

    first = PostgresStore.open(store, pool_min=pool_min, pool_max=pool_max)
    return (first, *(first.handle() for _ in range(workers - 1)))
