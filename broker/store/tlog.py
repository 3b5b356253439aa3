"""The transparency log's storage: a mixin of the SQL stores (migration 3).

Runs inside the StoreRunner's transaction like every store method, so a leaf
is appended in the same group commit as the state change it records, and a
failing operation leaves neither behind.

Tables:

* ``tlog_leaves(idx, leaf, kind, notice_id, version, originator, reader, logged_at_ms)``:
  the leaf bytes, plus the ids AuditService's authorization reads (derived
  from the leaf itself by :func:`broker.core.logleaf.index_of`), indexed by
  originator, by reader and by notice.
* ``tlog_nodes(id, hash)``: the hash of every complete subtree, keyed
  ``level << 56 | index`` (level 0: leaf hashes). Appending n leaves writes
  about 2n rows and reads only the frontier; an inclusion or consistency
  proof for any leaf reads O(log n) rows by primary key, in one query
  (see :mod:`broker.core.tlog`).
* ``tlog_checkpoints(size, root, note, issued_at_ms)`` and
  ``tlog_cosignatures(size, witness, line, ...)`` (broker/store/tlog_checkpoints.py).
* ``tlog_cursors`` and ``tlog_registry``: how far the log has caught up with
  the ``events`` table (dead letters, withholdings at forwarding time), with
  ``policy_activations``, and with the agency registry. Those tables are
  written by other store methods; :meth:`TransparencyLogMixin.tlog_sync`
  turns what is new in them into leaves, durably and exactly once, before
  every checkpoint (and activations before every published decision).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from broker.core import keymap, logleaf
from broker.core import tlog as tree
from broker.core.merkle import leaf_hash
from broker.errors import InvalidArgument, NotFound
from broker.store.api import DecisionRow, PodMaterial, StoredCheckpoint
from broker.store.sql import SqlBase
from broker.store.tlog_checkpoints import CheckpointMixin
from broker.v1 import audit_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.store.api import (
        DeliveryPlan,
        NoticeRecord,
        PublishOutcome,
        ReceiptOutcome,
        ReceiptRecord,
    )

MAX_LEVEL = 63
_LEVEL_SHIFT = 56
SYSTEM_ACTOR = "broker"
_CURSOR_EVENTS = "events"
_CURSOR_ACTIVATIONS = "policy_activations"
EVENT_WITHHELD = "withheld"  # events.kind of a delivery withheld at forwarding time
__all__ = ["DecisionRow", "PodMaterial", "StoredCheckpoint", "TransparencyLogMixin", "node_id"]


def node_id(level: int, index: int) -> int:
    """The tlog_nodes key of a complete subtree."""
    if not 0 <= level <= MAX_LEVEL or not 0 <= index < 1 << _LEVEL_SHIFT:
        raise ValueError(f"node ({level}, {index}) outside the addressable tree")
    return level << _LEVEL_SHIFT | index


class TransparencyLogMixin(CheckpointMixin, SqlBase):
    """Log methods of the store. Agency-scoped reads take `agency`; None means an auditor."""

    if TYPE_CHECKING:  # provided by SqlStore (broker/store/sqlite.py)

        def publish(
            self, items: Sequence[tuple[NoticeRecord, Sequence[DeliveryPlan]]]
        ) -> list[PublishOutcome]: ...

        def record_receipts(self, receipts: Sequence[ReceiptRecord]) -> list[tuple[str, int]]: ...

        def receive_receipts(self, receipts: Sequence[ReceiptRecord]) -> list[ReceiptOutcome]: ...

    # -- the tree ----------------------------------------------------------------------
    def tlog_size(self) -> int:
        row = self.conn.execute("SELECT MAX(idx) FROM tlog_leaves").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def _tlog_nodes(self, nodes: Iterable[tree.Node]) -> dict[tree.Node, bytes]:
        wanted = {node_id(level, index): (level, index) for level, index in nodes}
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = self.conn.execute(
            f"SELECT id, hash FROM tlog_nodes WHERE id IN ({marks})", tuple(wanted)
        ).fetchall()
        found = {wanted[r[0]]: bytes(r[1]) for r in rows}
        if len(found) != len(wanted):
            missing = sorted(set(wanted.values()) - set(found))
            raise InvalidArgument(f"the log's node table lacks {missing[:3]}: storage is damaged")
        return found

    def tlog_append(self, leaves: Sequence[audit_pb2.LogLeaf]) -> list[int]:
        """Append leaves in order; return their indexes."""
        if not leaves:
            return []
        size = self.tlog_size()
        data = [logleaf.serialize(leaf) for leaf in leaves]
        created = tree.append(
            size, [leaf_hash(d) for d in data], self._tlog_nodes(tree.frontier(size))
        )
        rows = []
        for i, (leaf, d) in enumerate(zip(leaves, data, strict=True)):
            ix = logleaf.index_of(leaf)
            rows.append(
                (
                    size + i,
                    d,
                    ix.kind,
                    ix.notice_id,
                    ix.version,
                    ix.originator,
                    ix.reader,
                    leaf.logged_at_ms,
                )
            )
        self.conn.executemany("INSERT INTO tlog_leaves VALUES (?,?,?,?,?,?,?,?)", rows)
        self.conn.executemany(
            "INSERT INTO tlog_nodes VALUES (?,?)",
            [(node_id(level, index), h) for (level, index), h in created.items()],
        )
        return list(range(size, size + len(leaves)))

    def _check_size(self, size: int) -> None:
        current = self.tlog_size()
        if not 0 <= size <= current:
            raise InvalidArgument(f"tree size {size} is beyond the log's {current} entries")

    def tlog_root(self, size: int) -> bytes:
        self._check_size(size)
        return tree.root(size, self._tlog_nodes(tree.frontier(size)))

    def tlog_inclusion(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves."""
        self._check_size(size)
        if not 0 <= index < size:
            raise InvalidArgument(f"log entry {index} is not in a tree of {size} entries")
        ranges = tree.inclusion_ranges(index, size)
        return tree.hash_ranges(ranges, self._tlog_nodes(tree.nodes_for(ranges)))

    def tlog_consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof from `old_size` to `new_size` (0 < old <= new)."""
        self._check_size(new_size)
        if not 0 < old_size <= new_size:
            raise InvalidArgument(
                f"a consistency proof needs 0 < old_size <= new_size, not {old_size}, {new_size}"
            )
        ranges = tree.consistency_ranges(old_size, new_size)
        return tree.hash_ranges(ranges, self._tlog_nodes(tree.nodes_for(ranges)))

    # -- reading entries -----------------------------------------------------------------
    def tlog_entry(self, index: int, agency: str | None) -> bytes:
        """One leaf; NotFound when absent or not visible to `agency`."""
        row = self.conn.execute(
            "SELECT leaf, originator, reader FROM tlog_leaves WHERE idx=?", (index,)
        ).fetchone()
        if row is None or (agency is not None and agency not in (row[1], row[2])):
            raise NotFound(f"no log entry {index} you may see")
        return bytes(row[0])

    def tlog_entries(
        self, start: int, end: int, limit: int, agency: str | None
    ) -> tuple[list[tuple[int, bytes]], int]:
        """Leaves in [start, end) visible to `agency`, at most `limit`; and where to go on."""
        if agency is None:
            rows = self.conn.execute(
                "SELECT idx, leaf FROM tlog_leaves WHERE idx>=? AND idx<? ORDER BY idx LIMIT ?",
                (start, end, limit),
            ).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT idx, leaf FROM tlog_leaves WHERE originator=? AND idx>=? AND idx<? "
                "UNION ALL "
                "SELECT idx, leaf FROM tlog_leaves WHERE reader=? AND originator<>? "
                "AND idx>=? AND idx<? ORDER BY idx LIMIT ?",
                (agency, start, end, agency, agency, start, end, limit),
            ).fetchall()
        entries = [(int(r[0]), bytes(r[1])) for r in rows]
        nxt = entries[-1][0] + 1 if len(entries) == limit else end
        return entries, nxt

    # -- the relay's writes, logged in the same transaction ---------------------------------
    def publish_logged(
        self, items: Sequence[tuple[NoticeRecord, Sequence[DeliveryPlan]]], at_ms: int
    ) -> list[PublishOutcome]:
        """store.publish, then leaves for every notice newly stored (not for duplicates):
        NoticePublished, PolicyDecision and SectionsWithheld. Policy activations not yet
        logged go first, so the log shows a bundle in force before any decision under it."""
        self._sync_activations(at_ms)
        outcomes = self.publish(items)
        leaves: list[audit_pb2.LogLeaf] = []
        firsts: list[int] = []  # per outcome: its NoticePublished leaf's place in `leaves`
        for (n, plans), outcome in zip(items, outcomes, strict=True):
            firsts.append(-1 if outcome.duplicate else len(leaves))
            if outcome.duplicate:
                continue
            leaves += logleaf.publication(
                notice_id=n.notice_id,
                version=n.version,
                originator=n.originator,
                kind=n.kind,
                header_digest=n.header_digest,
                envelope_digest=n.envelope_digest,
                created_at_ms=n.created_at_ms,
                expires_at_ms=n.expires_at_ms,
                accepted_at_ms=n.accepted_at_ms,
                policy_version=n.policy_version,
                decision_record=n.decisions,
                planned=[(p.recipient, p.sections) for p in plans],
                logged_at_ms=at_ms,
                sections=n.sections,
                refused=n.refused,
            )
        indexes = self.tlog_append(leaves)
        return [
            o if first < 0 else replace(o, log_index=indexes[first])
            for o, first in zip(outcomes, firsts, strict=True)
        ]

    def record_receipts_logged(
        self, receipts: Sequence[ReceiptRecord], at_ms: int
    ) -> list[tuple[str, int]]:
        """store.record_receipts, then one DeliveryReceipt leaf per delivery receipted for
        the first time: the receipt stored (the first one), however often it is resent.
        Raises for the first receipt refused (and stores none)."""
        outcomes = self.receive_receipts_logged(receipts, at_ms)
        for o in outcomes:
            if o.error is not None:
                raise o.error
        return [(o.notice_id, o.version) for o in outcomes]

    def receive_receipts_logged(
        self, receipts: Sequence[ReceiptRecord], at_ms: int
    ) -> list[ReceiptOutcome]:
        """store.receive_receipts (refusing receipts one by one), then the leaves of those
        that delivered their notice just now, in the same transaction."""
        outcomes = self.receive_receipts(receipts)
        leaves = []
        for r, o in zip(receipts, outcomes, strict=True):
            if not o.first:
                continue
            if r.receipt_digest:
                leaves.append(
                    logleaf.receipt_leaf(
                        notice_id=r.notice_id,
                        version=r.version,
                        originator=o.originator,
                        recipient=r.recipient,
                        header_digest=r.header_digest,
                        sections=r.sections,
                        received_at_ms=r.claimed_at_ms,
                        receipt_digest=r.receipt_digest,
                        batch_root=r.batch_root,
                        logged_at_ms=at_ms,
                    )
                )
            else:  # a caller that did not say what the receipt holds: read it
                proven = notice_pb2.ProvenReceipt.FromString(r.proven)
                leaves.append(logleaf.delivery_receipt(proven, o.originator, at_ms))
        self.tlog_append(leaves)
        return outcomes

    # -- catching up with events, activations and the registry ----------------------------
    def _cursor(self, source: str) -> int:
        row = self.conn.execute(
            "SELECT position FROM tlog_cursors WHERE source=?", (source,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _set_cursor(self, source: str, position: int) -> None:
        self.conn.execute(
            "INSERT INTO tlog_cursors VALUES (?, ?) ON CONFLICT(source) DO UPDATE "
            "SET position=excluded.position",
            (source, position),
        )

    def _sync_activations(self, at_ms: int) -> int:
        after = self._cursor(_CURSOR_ACTIVATIONS)
        rows = self.conn.execute(
            "SELECT a.seq, a.version, a.activated_by, a.activated_at_ms, a.reason, "
            "b.signed_activation FROM policy_activations a "
            "LEFT JOIN policy_bundles b ON b.version=a.version WHERE a.seq>? ORDER BY a.seq",
            (after,),
        ).fetchall()
        if not rows:
            return 0
        self.tlog_append(
            [
                logleaf.policy_activated(
                    version=r[1],
                    activated_by=r[2],
                    activated_at_ms=r[3],
                    reason=r[4],
                    sequence=r[0],
                    signed_activation=None if r[5] is None else bytes(r[5]),
                    logged_at_ms=at_ms,
                )
                for r in rows
            ]
        )
        self._set_cursor(_CURSOR_ACTIVATIONS, int(rows[-1][0]))
        return len(rows)

    def _sync_events(self, at_ms: int) -> int:
        after = self._cursor(_CURSOR_EVENTS)
        rows = self.conn.execute(
            "SELECT e.seq, e.agency, e.kind, e.notice_id, e.version, e.recipient, e.detail, "
            "n.originator, d.sections FROM events e "
            "LEFT JOIN notices n ON n.notice_id=e.notice_id AND n.version=e.version "
            "LEFT JOIN deliveries d ON d.notice_id=e.notice_id AND d.version=e.version "
            "AND d.recipient=e.recipient WHERE e.seq>? ORDER BY e.seq",
            (after,),
        ).fetchall()
        if not rows:
            return 0
        leaves = []
        for _seq, agency, kind, notice_id, version, recipient, detail, originator, sections in rows:
            owner = originator or agency
            if kind == EVENT_WITHHELD:  # withheld at forwarding time: the whole delivery
                leaves.append(
                    audit_pb2.LogLeaf(
                        format=logleaf.LEAF_FORMAT,
                        logged_at_ms=at_ms,
                        withheld=audit_pb2.SectionsWithheld(
                            notice_id=notice_id,
                            version=version,
                            originator=owner,
                            recipient=recipient,
                            sections=json.loads(sections) if sections else [],
                            reason=detail,
                        ),
                    )
                )
            else:
                leaves.append(
                    logleaf.lifecycle(
                        kind=kind,
                        notice_id=notice_id,
                        version=version,
                        originator=owner,
                        recipient=recipient,
                        detail=detail,
                        logged_at_ms=at_ms,
                    )
                )
        self.tlog_append(leaves)
        self._set_cursor(_CURSOR_EVENTS, int(rows[-1][0]))
        return len(rows)

    def _sync_registry(self, at_ms: int) -> int:
        rows = self.conn.execute(
            "SELECT id, country, roles, groups_, purposes, status, statement, signed_entry "
            "FROM agencies ORDER BY id"
        ).fetchall()
        logged = {
            r[0]: bytes(r[1])
            for r in self.conn.execute("SELECT agency_id, digest FROM tlog_registry").fetchall()
        }
        leaves = []
        current: set[str] = set()
        for agency_id, country, roles, groups, purposes, status, statement, entry in rows:
            current.add(agency_id)
            signed_entry = b"" if entry is None else bytes(entry)
            digest = hashlib.sha256(
                json.dumps(
                    [
                        agency_id,
                        country,
                        roles,
                        groups,
                        purposes,
                        status,
                        bytes(statement).hex(),
                        signed_entry.hex(),
                    ]
                ).encode()
            ).digest()
            before = logged.get(agency_id)
            if before == digest:
                continue
            value = keymap.map_value(signed_entry, bytes(statement))
            leaves.append(
                logleaf.registry_change(
                    agency_id=agency_id,
                    change="added" if before is None else "updated",
                    country=country,
                    roles=json.loads(roles),
                    groups=json.loads(groups),
                    purposes=json.loads(purposes),
                    status=status,
                    statement=bytes(statement),
                    actor=self._registry_actor(agency_id),
                    logged_at_ms=at_ms,
                    signed_entry=signed_entry,
                    directory_value=value,
                )
            )
            self.conn.execute(
                "INSERT INTO tlog_registry (agency_id, digest, value) VALUES (?, ?, ?) "
                "ON CONFLICT(agency_id) DO UPDATE SET digest=excluded.digest, "
                "value=excluded.value",
                (agency_id, digest, value),
            )
        for agency_id in sorted(set(logged) - current):
            leaves.append(
                logleaf.registry_change(
                    agency_id=agency_id,
                    change="removed",
                    country="",
                    roles=(),
                    groups=(),
                    purposes=(),
                    status="",
                    statement=b"",
                    actor=self._registry_actor(agency_id),
                    logged_at_ms=at_ms,
                )
            )
            self.conn.execute("DELETE FROM tlog_registry WHERE agency_id=?", (agency_id,))
        self.tlog_append(leaves)
        return len(leaves)

    def directory_entries(self) -> list[tuple[str, bytes, bytes]]:
        """(agency id, signed entry or b"", key statement) of every registered agency."""
        return [
            (str(r[0]), b"" if r[1] is None else bytes(r[1]), bytes(r[2]))
            for r in self.conn.execute(
                "SELECT id, signed_entry, statement FROM agencies ORDER BY id"
            )
        ]

    def tlog_directory(self) -> dict[str, bytes]:
        """The key directory as logged: agency id -> value (broker/core/keymap.py)."""
        return {
            str(r[0]): bytes(r[1])
            for r in self.conn.execute(
                "SELECT agency_id, value FROM tlog_registry WHERE length(value) > 0"
            )
        }

    def _registry_actor(self, agency_id: str) -> str:
        row = self.conn.execute(
            "SELECT actor FROM admin_actions WHERE target=? ORDER BY seq DESC LIMIT 1",
            (agency_id,),
        ).fetchone()
        return SYSTEM_ACTOR if row is None else str(row[0])

    def tlog_sync(self, at_ms: int) -> int:
        """Log what is new in policy_activations, the registry and events; return how many."""
        return self._sync_activations(at_ms) + self._sync_registry(at_ms) + self._sync_events(at_ms)

    # -- what auditors and originators fetch -------------------------------------------------
    def _owned_notice(self, notice_id: str, version: int, agency: str | None) -> tuple[int, str]:
        """(version, originator) of a notice the caller may audit; NotFound otherwise."""
        row = self.conn.execute(
            "SELECT version, originator FROM notices WHERE notice_id=? AND (?=0 OR version=?) "
            "AND (CAST(? AS TEXT) IS NULL OR originator=?) ORDER BY version DESC LIMIT 1",
            (notice_id, version, version, agency, agency),
        ).fetchone()
        if row is None:
            whose = "" if agency is None else "you published "
            what = f"version {version} of " if version else ""
            raise NotFound(f"{whose}no {what}notice {notice_id} is in the log")
        return int(row[0]), str(row[1])

    def tlog_pod_material(self, notice_id: str, version: int, agency: str | None) -> PodMaterial:
        """The leaves and receipts of one notice version (the newest for version 0)."""
        version, originator = self._owned_notice(notice_id, version, agency)
        entries = tuple(
            (int(r[0]), bytes(r[1]), str(r[2]))
            for r in self.conn.execute(
                "SELECT idx, leaf, kind FROM tlog_leaves WHERE notice_id=? AND version=? "
                "AND originator=? ORDER BY idx",
                (notice_id, version, originator),
            )
        )
        receipts = {
            str(r[0]): bytes(r[1])
            for r in self.conn.execute(
                "SELECT recipient, proven FROM receipts WHERE notice_id=? AND version=?",
                (notice_id, version),
            )
        }
        marks = ",".join("?" * len(receipts))
        statements = {
            str(r[0]): bytes(r[1])
            for r in (
                self.conn.execute(
                    f"SELECT id, statement FROM agencies WHERE id IN ({marks})", tuple(receipts)
                )
                if receipts  # IN () is not SQL everywhere
                else ()
            )
        }
        return PodMaterial(notice_id, version, originator, entries, receipts, statements)

    def tlog_decision_records(
        self, refs: Sequence[tuple[str, int]], agency: str | None
    ) -> list[DecisionRow]:
        out = []
        for notice_id, wanted in refs:
            version, originator = self._owned_notice(notice_id, wanted, agency)
            row = self.conn.execute(
                "SELECT policy_version, decisions FROM notices WHERE notice_id=? AND version=?",
                (notice_id, version),
            ).fetchone()
            out.append(DecisionRow(notice_id, version, originator, str(row[0]), str(row[1])))
        return out
