"""Chains of custody and the envelope rows attachments are checked against (a mixin of
SqlStore).

Table (the evidence migration): ``custody`` holds each accepted link of an attachment's
chain, as signed, with its place in the transparency log. The primary key (notice,
version, section, seq) makes two links at one place impossible on either backend, even
from two replicas at once. The attachments' ciphertexts are files, not rows
(broker/server/attachment_files.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.store.sql import SqlBase

if TYPE_CHECKING:
    from broker.v1 import audit_pb2


@dataclass(frozen=True)
class CustodyRow:
    seq: int
    record: bytes
    signature: bytes
    record_digest: bytes
    log_index: int


class CustodyStoreMixin(SqlBase):
    if TYPE_CHECKING:

        def tlog_append(self, leaves: Sequence[audit_pb2.LogLeaf]) -> list[int]: ...

    def envelope_at(self, notice_id: str, version: int) -> bytes:
        """The stored envelope (without ciphertexts) of one version; b"" when none."""
        row = self.conn.execute(
            "SELECT envelope FROM notices WHERE notice_id=? AND version=?", (notice_id, version)
        ).fetchone()
        return b"" if row is None else bytes(row[0])

    def deliveries_of(self, notice_id: str, version: int) -> list[tuple[str, str, str, int]]:
        """(recipient, sections JSON, state, not_before_ms) of one version's deliveries."""
        rows = self.conn.execute(
            "SELECT recipient, sections, state, not_before_ms FROM deliveries "
            "WHERE notice_id=? AND version=?",
            (notice_id, version),
        ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), int(r[3] or 0)) for r in rows]

    def custody_chain(self, notice_id: str, version: int, section: str) -> list[CustodyRow]:
        """Every stored link of one attachment's chain, by seq."""
        rows = self.conn.execute(
            "SELECT seq, record, signature, record_digest, log_index FROM custody "
            "WHERE notice_id=? AND version=? AND section=? ORDER BY seq",
            (notice_id, version, section),
        ).fetchall()
        return [
            CustodyRow(int(r[0]), bytes(r[1]), bytes(r[2]), bytes(r[3]), int(r[4])) for r in rows
        ]

    def append_custody(
        self,
        notice_id: str,
        version: int,
        section: str,
        seq: int,
        record: bytes,
        signature: bytes,
        record_digest: bytes,
        leaf: audit_pb2.LogLeaf,
    ) -> int:
        """Store one link and log its leaf in the same transaction; its log index."""
        (index,) = self.tlog_append([leaf])
        self.conn.execute(
            "INSERT INTO custody (notice_id, version, section, seq, record, signature, "
            "record_digest, log_index) VALUES (?,?,?,?,?,?,?,?)",
            (notice_id, version, section, seq, record, signature, record_digest, index),
        )
        return index
