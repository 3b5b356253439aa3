"""Signed checkpoints and witness cosignatures of the transparency log: a mixin of the
SQL stores, beside broker/store/tlog.py (tables ``tlog_checkpoints``, ``tlog_cosignatures``).

A checkpoint is signed by the log's Ed25519 key (C2SP signed-note) and, where the
deployment runs the hybrid suite, also by its ML-DSA-65 key over the same text
(broker/core/pqnote.py). Cosignatures are kept apart, one line per witness.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from broker.core import keymap
from broker.core.checkpoint import Checkpoint, Signer, format_checkpoint, sign_note
from broker.core.pqnote import PQSigner, add_pq_signature, carries_line_of
from broker.store.api import StoredCheckpoint
from broker.store.sql import SqlBase


class CheckpointMixin(SqlBase):
    """Issuing, reading and cosigning checkpoints."""

    if TYPE_CHECKING:  # provided by TransparencyLogMixin (broker/store/tlog.py)

        def tlog_sync(self, at_ms: int) -> int: ...

        def tlog_size(self) -> int: ...

        def tlog_root(self, size: int) -> bytes: ...

        def tlog_directory(self) -> dict[str, bytes]: ...

    def tlog_issue_checkpoint(
        self, signer: Signer, at_ms: int, pq: PQSigner | None = None
    ) -> StoredCheckpoint:
        """Catch up (tlog_sync), then sign and keep a checkpoint if the log grew since the
        last one; return the latest. The origin is the signer's key name. With `pq` (hybrid
        suite) the note also carries an ML-DSA-65 line (core/pqnote.py), added to a latest
        checkpoint signed before the broker had that key."""
        self.tlog_sync(at_ms)
        size = self.tlog_size()
        latest = self.tlog_checkpoint()
        if latest is not None and latest.size == size:
            if pq is None or carries_line_of(latest.note, pq):
                return latest
            note = add_pq_signature(latest.note, pq)
            self.conn.execute("UPDATE tlog_checkpoints SET note=? WHERE size=?", (note, size))
            return replace(latest, note=note)
        root = self.tlog_root(size)
        directory = keymap.root(self.tlog_directory())
        text = format_checkpoint(
            Checkpoint(signer.name, size, root, (keymap.extension(directory),))
        )
        note = sign_note(text, signer.name, signer.seed)
        if pq is not None:
            note = add_pq_signature(note, pq)
        self.conn.execute(
            "INSERT OR IGNORE INTO tlog_checkpoints (size, root, note, issued_at_ms, "
            "directory_root) VALUES (?,?,?,?,?)",
            (size, root, note, at_ms, directory),
        )
        return StoredCheckpoint(size, root, note, at_ms)

    def tlog_directory_checkpoint(self, min_cosignatures: int) -> StoredCheckpoint | None:
        """The newest checkpoint that commits to the current key directory and carries at
        least `min_cosignatures` cosignatures (None: the witnesses have not cosigned one)."""
        directory = keymap.root(self.tlog_directory())
        row = self.conn.execute(
            "SELECT c.size FROM tlog_checkpoints c WHERE c.directory_root=? AND "
            "(SELECT COUNT(*) FROM tlog_cosignatures s WHERE s.size=c.size) >= ? "
            "ORDER BY c.size DESC LIMIT 1",
            (directory, min_cosignatures),
        ).fetchone()
        return None if row is None else self.tlog_checkpoint(int(row[0]))

    def tlog_checkpoint(self, size: int = 0, min_cosignatures: int = 0) -> StoredCheckpoint | None:
        """The checkpoint of `size` (0: the latest), or the latest with enough cosignatures."""
        if size:
            row = self.conn.execute(
                "SELECT size, root, note, issued_at_ms FROM tlog_checkpoints WHERE size=?", (size,)
            ).fetchone()
        elif min_cosignatures:
            row = self.conn.execute(
                "SELECT c.size, c.root, c.note, c.issued_at_ms FROM tlog_checkpoints c "
                "WHERE (SELECT COUNT(*) FROM tlog_cosignatures s WHERE s.size=c.size) >= ? "
                "ORDER BY c.size DESC LIMIT 1",
                (min_cosignatures,),
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT size, root, note, issued_at_ms FROM tlog_checkpoints "
                "ORDER BY size DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        lines = tuple(
            r[0]
            for r in self.conn.execute(
                "SELECT line FROM tlog_cosignatures WHERE size=? ORDER BY witness", (row[0],)
            )
        )
        return StoredCheckpoint(int(row[0]), bytes(row[1]), str(row[2]), int(row[3]), lines)

    def tlog_add_cosignature(
        self, size: int, witness: str, line: str, signed_at: int, at_ms: int
    ) -> int:
        """Keep a witness's (already verified) cosignature; a newer one replaces its older one.

        Returns how many cosignatures the checkpoint now has.
        """
        self.conn.execute(
            "INSERT INTO tlog_cosignatures VALUES (?,?,?,?,?) ON CONFLICT(size, witness) "
            "DO UPDATE SET line=excluded.line, signed_at=excluded.signed_at, "
            "received_at_ms=excluded.received_at_ms "
            "WHERE excluded.signed_at >= tlog_cosignatures.signed_at",
            (size, witness, line, signed_at, at_ms),
        )
        row = self.conn.execute(
            "SELECT COUNT(*) FROM tlog_cosignatures WHERE size=?", (size,)
        ).fetchone()
        return int(row[0])
