"""`broker store migrate`: bring the store's schema to this broker's version, and say so."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from broker.config import load_config


def register(sub: Any) -> None:
    p = sub.add_parser("store", help="the broker's store (SQLite or PostgreSQL)")
    stores = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    m = stores.add_parser(
        "migrate",
        help="apply the schema migrations this broker knows (idempotent)",
        description="Create or upgrade the store's tables to this broker's schema version. "
        "Running it again changes nothing. On PostgreSQL, run it once before starting new "
        "replicas (several replicas starting together also migrate only once).",
    )
    m.add_argument("--config", type=Path, help="broker.toml (default: built-in defaults)")
    m.add_argument("--store", help="postgresql:// URL (overrides the config)")
    m.add_argument("--data-dir", type=Path, help="where the SQLite store lives")
    m.add_argument("--json", action="store_true", help="print the outcome as JSON")
    m.set_defaults(func=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    config = load_config(args.config, store=args.store, data_dir=args.data_dir)
    if config.store:
        from broker.store.backends import redact
        from broker.store.postgres import PostgresStore

        pg = PostgresStore.open(config.store, pool_min=1, pool_max=1, migrate=False)
        try:
            before, after = pg.migrate()
        finally:
            pg.close()
        where = f"{redact(config.store)} (schema {pg.schema})"
    else:
        from broker.store.sqlite import SqliteStore

        lite = SqliteStore.open(config.database, migrate=False)
        try:
            before, after = lite.migrate()
        finally:
            lite.close()
        where = str(config.database)
    if args.json:
        print(json.dumps({"store": where, "from": before, "to": after, "applied": after - before}))
    elif after == before:
        print(f"{where}: already at schema version {after}; nothing to do")
    else:
        print(f"{where}: migrated from schema version {before} to {after}")
    return 0
