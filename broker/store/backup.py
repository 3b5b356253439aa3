"""Backups of the SQLite store: a consistent copy of a live database taken with SQLite's
online backup API, checked, and described by a manifest; and their restore into a data
directory that holds no store yet.

A backup is a directory holding ``broker.sqlite3`` and ``backup.json``:

    {"format": 1, "created_at": "...Z", "source": "...", "schema_version": 9,
     "log_size": 12, "checkpoint": {"size": 12, "root": "<hex>", "issued_at_ms": ...},
     "bytes": 123456, "sha256": "<hex of broker.sqlite3>"}

Both ends check the copy: SQLite's integrity check, the schema version, and the
transparency log (its leaves, hashed again, give the root of its newest signed
checkpoint). Keys are not part of a backup: they live in the keys directory, kept and
backed up apart (keys/README.md). PostgreSQL stores are backed up with pg_dump or
pg_basebackup (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from broker.core import merkle
from broker.errors import FailedPrecondition, InvalidArgument
from broker.store.migrations import MIGRATIONS

FORMAT = 1
DATABASE = "broker.sqlite3"
MANIFEST = "backup.json"
PAGES_PER_STEP = 1024  # the live broker writes between steps; SQLite restarts on a change


@dataclass(frozen=True)
class Manifest:
    format: int
    created_at: str
    source: str
    schema_version: int
    log_size: int
    checkpoint: dict[str, Any]
    bytes: int
    sha256: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_database(path: Path) -> tuple[int, int, dict[str, Any]]:
    """Check a database copy; return (schema version, log size, newest checkpoint).

    Raises FailedPrecondition when SQLite finds it damaged, its schema is newer than this
    broker's, or its log's leaves do not hash to its newest checkpoint's root.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise FailedPrecondition(f"{path} is not a readable SQLite database ({exc})") from exc
        if verdict != "ok":
            raise FailedPrecondition(f"{path} is damaged: SQLite's integrity check says {verdict}")
        if version == 0:
            raise FailedPrecondition(f"{path} holds no broker store (schema version 0)")
        if version > len(MIGRATIONS):
            raise FailedPrecondition(
                f"{path} has schema version {version}, newer than this broker's "
                f"({len(MIGRATIONS)}): restore it with the broker version that made it"
            )
        row = conn.execute(
            "SELECT size, root, issued_at_ms FROM tlog_checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        leaves = [bytes(d) for (d,) in conn.execute("SELECT leaf FROM tlog_leaves ORDER BY idx")]
    finally:
        conn.close()
    checkpoint: dict[str, Any] = {}
    if row is not None:
        size, root, issued = int(row[0]), bytes(row[1]), int(row[2])
        if size > len(leaves) or merkle.root(leaves[:size]) != root:
            raise FailedPrecondition(
                f"{path}: the log's leaves do not hash to its checkpoint of size {size}; "
                "the copy is not the log the broker signed"
            )
        checkpoint = {"size": size, "root": root.hex(), "issued_at_ms": issued}
    return version, len(leaves), checkpoint


def backup(database: Path, out: Path, now_s: float | None = None) -> Manifest:
    """Copy the live database at `database` into the new directory `out`; return its
    manifest. Raises FailedPrecondition when there is nothing to back up, `out` exists
    and is not empty, or the copy does not check."""
    if not database.is_file():
        raise FailedPrecondition(
            f"no broker store at {database}: give the data directory the broker runs on"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FailedPrecondition(f"{out} exists and is not empty: choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (DATABASE + ".part")
    src = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst, pages=PAGES_PER_STEP)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            dst.close()
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise FailedPrecondition(f"cannot back up {database}: {exc}") from exc
    finally:
        src.close()
    try:
        version, size, checkpoint = check_database(tmp)
    except FailedPrecondition:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(tmp)
    final = out / DATABASE
    tmp.replace(final)
    manifest = Manifest(
        format=FORMAT,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s)),
        source=str(database),
        schema_version=version,
        log_size=size,
        checkpoint=checkpoint,
        bytes=final.stat().st_size,
        sha256=_sha256(final),
    )
    (out / MANIFEST).write_text(manifest.to_json())
    _fsync(out / MANIFEST)
    _fsync(out)
    return manifest


def read_manifest(backup_dir: Path) -> Manifest:
    """The manifest of a backup directory. Raises InvalidArgument when it is missing or
    not a manifest this broker reads."""
    path = backup_dir / MANIFEST
    try:
        doc = json.loads(path.read_text())
        manifest = Manifest(**doc)
    except FileNotFoundError:
        raise InvalidArgument(f"{backup_dir} is not a broker backup (no {MANIFEST})") from None
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{path} is not a backup manifest ({exc})") from exc
    if manifest.format != FORMAT:
        raise InvalidArgument(f"{path}: backup format {manifest.format} is not {FORMAT}")
    return manifest


def restore(backup_dir: Path, data_dir: Path) -> Manifest:
    """Put the backup in `backup_dir` into `data_dir` (which must hold no store); return
    its manifest. Raises InvalidArgument for something that is not a backup and
    FailedPrecondition for a damaged one or a data directory already in use."""
    manifest = read_manifest(backup_dir)
    source = backup_dir / DATABASE
    if not source.is_file():
        raise InvalidArgument(f"{backup_dir} holds no {DATABASE}")
    if _sha256(source) != manifest.sha256:
        raise FailedPrecondition(
            f"{source} does not match its manifest (sha256 differs): the backup was altered "
            "or cut short"
        )
    version, size, checkpoint = check_database(source)
    if (version, size, checkpoint) != (
        manifest.schema_version,
        manifest.log_size,
        manifest.checkpoint,
    ):
        raise FailedPrecondition(f"{source} does not hold what its manifest says")
    target = data_dir / DATABASE
    leftovers = [p for p in (target, Path(f"{target}-wal"), Path(f"{target}-shm")) if p.exists()]
    if leftovers:
        raise FailedPrecondition(
            f"{data_dir} already holds a store ({leftovers[0].name}): restore into an empty "
            "data directory, or move the old one away first"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / (DATABASE + ".restore")
    try:
        with source.open("rb") as src, tmp.open("wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        tmp.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync(data_dir)
    return manifest
