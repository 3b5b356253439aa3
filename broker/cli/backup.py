"""`broker backup` and `broker restore`: a checked copy of the live SQLite store, and its
restore into a new data directory (broker/store/backup.py). PostgreSQL stores are backed
up with PostgreSQL's own tools (docs/operations.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from broker.config import load_config
from broker.errors import FailedPrecondition

PG_HINT = (
    "this broker's store is PostgreSQL: back it up with pg_dump --format=custom (or "
    "pg_basebackup for point-in-time recovery), see docs/operations.md"
)


def register(sub: Any) -> None:
    b = sub.add_parser(
        "backup",
        help="copy the live SQLite store into a new directory, checked (SQLite online backup)",
        description="Copy the store of a running (or stopped) broker with SQLite's online "
        "backup API into a new directory, with a manifest; the copy is checked (integrity, "
        "schema, the log's leaves against its newest signed checkpoint). Keys are not "
        "included: back up the keys directory apart.",
    )
    b.add_argument("out", type=Path, help="the new backup directory")
    b.add_argument("--config", type=Path, help="broker.toml (default: built-in defaults)")
    b.add_argument("--data-dir", type=Path, help="where the SQLite store lives")
    b.add_argument("--json", action="store_true", help="print the manifest as JSON")
    b.set_defaults(func=run_backup)
    r = sub.add_parser(
        "restore",
        help="restore a backup into a data directory that holds no store",
        description="Check a backup made by `broker backup` (manifest, digest, integrity, "
        "the log against its checkpoint) and put it into the data directory; then start "
        "the broker on it and verify the log with `broker audit monitor`.",
    )
    r.add_argument("backup", type=Path, help="a directory made by `broker backup`")
    r.add_argument("--config", type=Path, help="broker.toml (its data_dir is the target)")
    r.add_argument("--data-dir", type=Path, help="the data directory to restore into")
    r.add_argument("--json", action="store_true", help="print the manifest as JSON")
    r.set_defaults(func=run_restore)


def _describe(manifest: Any) -> str:
    cp = manifest.checkpoint
    head = (
        f"checkpoint of size {cp['size']}, root {cp['root'][:16]}…"
        if cp
        else "no signed checkpoint yet"
    )
    return (
        f"schema {manifest.schema_version}, {manifest.log_size} log entries, {head}, "
        f"{manifest.bytes} bytes, sha256 {manifest.sha256[:16]}…"
    )


def run_backup(args: argparse.Namespace) -> int:
    from broker.store import backup

    config = load_config(args.config, data_dir=args.data_dir)
    if config.store:
        raise FailedPrecondition(PG_HINT)
    manifest = backup.backup(config.database, args.out)
    if args.json:
        print(manifest.to_json(), end="")
    else:
        print(f"backed up {config.database} to {args.out}: {_describe(manifest)}")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from broker.store import backup

    config = load_config(args.config, data_dir=args.data_dir)
    if config.store:
        raise FailedPrecondition(
            "this broker's store is PostgreSQL: restore with pg_restore, see docs/operations.md"
        )
    manifest = backup.restore(args.backup, config.data_dir)
    if args.json:
        print(json.dumps({"restored_to": str(config.database), **json.loads(manifest.to_json())}))
    else:
        print(
            f"restored {args.backup} into {config.data_dir}: {_describe(manifest)}. Start the "
            "broker on it, then check the log with `broker audit monitor` and your saved state"
        )
    return 0
