"""Transparency-log benchmark: append rate, and proof time at a large size (default 1M).

Appends go through the real path: a SqliteStore (WAL, synchronous=FULL, so
every commit is fsync'd) behind a StoreRunner, one batch of leaves per group
commit, the leaves shaped like a broker's (per notice: NoticePublished,
PolicyDecision with three planned deliveries, three DeliveryReceipt). Proofs
are then timed on a second connection, as AuditService would serve them:
inclusion proofs for random leaves and consistency proofs between random
sizes, at the full size; a sample is verified against the root.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from broker.core import logleaf
from broker.core.merkle import leaf_hash, verify_consistency, verify_inclusion
from broker.store.runner import StoreRunner
from broker.store.sqlite import SqliteStore
from broker.v1 import audit_pb2, notice_pb2

RECIPIENTS = ("DE-BKA", "IT-BORDER", "EU-HUB")
SECTIONS = ("case_facts", "identity", "photos")


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def synthetic_leaves(start: int, count: int, at_ms: int) -> list[audit_pb2.LogLeaf]:
    """`count` leaves as a busy broker would log them, deterministic in their position."""
    out: list[audit_pb2.LogLeaf] = []
    i = start
    while len(out) < count:
        notice, slot = divmod(i, 5)
        notice_id = f"{notice:08x}-0000-4000-8000-000000000000"
        if slot == 0:
            leaf = logleaf.notice_published(
                notice_id=notice_id,
                version=1,
                originator="FR-NCB",
                kind="interpol.red",
                header_digest=_digest("h", notice),
                envelope_digest=_digest("e", notice),
                created_at_ms=at_ms,
                expires_at_ms=at_ms + 86_400_000,
                accepted_at_ms=at_ms,
                logged_at_ms=at_ms,
            )
        elif slot == 1:
            leaf = logleaf.policy_decision(
                notice_id=notice_id,
                version=1,
                originator="FR-NCB",
                policy_version=_digest("policy").hex(),
                decision_record=f'{{"notice": {notice}}}',
                planned=[(r, SECTIONS) for r in RECIPIENTS],
                logged_at_ms=at_ms,
            )
        else:
            recipient = RECIPIENTS[slot - 2]
            receipt = notice_pb2.Receipt(
                notice_id=notice_id,
                version=1,
                recipient=recipient,
                header_digest=_digest("h", notice),
                sections=SECTIONS,
                received_at_ms=at_ms,
            )
            proven = notice_pb2.ProvenReceipt(
                receipt=receipt.SerializeToString(deterministic=True),
                batch_root=_digest("b", notice, recipient),
                signer=recipient,
            )
            leaf = logleaf.delivery_receipt(proven, "FR-NCB", at_ms)
        out.append(leaf)
        i += 1
    return out


def _append(leaves: list[audit_pb2.LogLeaf], store: SqliteStore) -> list[int]:
    return store.tlog_append(leaves)


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean_us": statistics.fmean(ordered) * 1e6,
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
        "max_us": ordered[-1] * 1e6,
    }


@dataclass
class TlogReport:
    leaves: int
    batch: int
    commits: int
    append_seconds: float  # time inside the store (group commits), leaf building excluded
    wall_seconds: float
    append_per_second: float
    root_us: float
    inclusion: dict[str, float]
    consistency: dict[str, float]
    proof_hashes: float  # mean inclusion proof length
    samples: int
    verified: int
    database_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        inc, con = self.inclusion, self.consistency
        mb = self.database_bytes / 1e6
        return "\n".join(
            [
                f"transparency log: {self.leaves:,} leaves appended in batches of {self.batch} "
                f"({self.commits:,} group commits, fsync'd)",
                f"  append: {self.append_per_second:,.0f} leaves/s "
                f"({self.append_seconds:.1f} s in the store, {self.wall_seconds:.1f} s wall)",
                f"  proofs at {self.leaves:,} leaves, {self.samples} random samples each:",
                f"    inclusion   mean {inc['mean_us']:.0f} µs  p50 {inc['p50_us']:.0f} µs  "
                f"p99 {inc['p99_us']:.0f} µs  ({self.proof_hashes:.1f} hashes)",
                f"    consistency mean {con['mean_us']:.0f} µs  p50 {con['p50_us']:.0f} µs  "
                f"p99 {con['p99_us']:.0f} µs",
                f"    root        {self.root_us:.0f} µs",
                f"  {self.verified} proofs verified against the root; database {mb:,.0f} MB",
            ]
        )


def run(
    leaves: int = 1_000_000,
    batch: int = 256,
    samples: int = 2000,
    directory: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> TlogReport:
    """Append `leaves` in batches of `batch`, then time `samples` proofs of each kind."""
    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="broker-bench-tlog-", dir=directory) as tmp:
        path = Path(tmp) / "bench.sqlite3"
        runner = StoreRunner(SqliteStore.open(path))
        at_ms = time.time_ns() // 1_000_000
        in_store = 0.0
        commits = 0
        wall = time.perf_counter()
        step = max(leaves // 10, 1)
        try:
            for start in range(0, leaves, batch):
                chunk = synthetic_leaves(start, min(batch, leaves - start), at_ms)
                t0 = time.perf_counter()
                runner.call_sync(partial(_append, chunk))
                in_store += time.perf_counter() - t0
                commits += 1
                done = start + len(chunk)
                if done // step != start // step:
                    say(f"  appended {done:,} of {leaves:,}")
        finally:
            runner.close()
        wall = time.perf_counter() - wall

        store = SqliteStore.open(path)
        try:
            rng = random.Random(9162)
            size = store.tlog_size()
            t0 = time.perf_counter()
            root = store.tlog_root(size)
            root_us = (time.perf_counter() - t0) * 1e6
            inclusion: list[float] = []
            lengths = 0
            verified = 0
            for n in range(samples):
                index = rng.randrange(size)
                t0 = time.perf_counter()
                proof = store.tlog_inclusion(index, size)
                inclusion.append(time.perf_counter() - t0)
                lengths += len(proof)
                if n < 200:
                    leaf = store.tlog_entry(index, None)
                    verify_inclusion(index, size, leaf_hash(leaf), proof, root)
                    verified += 1
            consistency: list[float] = []
            for n in range(samples):
                old = rng.randrange(1, size + 1)
                t0 = time.perf_counter()
                proof = store.tlog_consistency(old, size)
                consistency.append(time.perf_counter() - t0)
                if n < 200:
                    verify_consistency(old, size, store.tlog_root(old), root, proof)
                    verified += 1
        finally:
            store.close()
        db_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir())
    return TlogReport(
        leaves=leaves,
        batch=batch,
        commits=commits,
        append_seconds=in_store,
        wall_seconds=wall,
        append_per_second=leaves / in_store if in_store else 0.0,
        root_us=root_us,
        inclusion=_stats(inclusion),
        consistency=_stats(consistency),
        proof_hashes=lengths / max(samples, 1),
        samples=samples,
        verified=verified,
        database_bytes=db_bytes,
    )
