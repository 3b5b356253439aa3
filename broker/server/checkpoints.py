"""Signed checkpoints of the transparency log, issued while the log grows.

A background task asks the store, every `interval_s` (half a second by
default, so at least once a second), to catch the log up with events,
policy activations and registry changes and, if the log grew since the last
checkpoint, to sign one with the broker's log key (C2SP tlog-checkpoint,
Ed25519 signed note; and its ML-DSA-65 key too where the deployment runs the
hybrid suite, broker/core/pqnote.py) and keep it. Signing happens on the store's thread, in
the same transaction that reads the size and root, so a checkpoint can never
describe a tree that was not committed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter, Gauge

from broker.core.checkpoint import Signer, Verifier
from broker.core.pqnote import PQSigner
from broker.store.api import Store, StoredCheckpoint
from broker.store.runner import StoreRunner

log = logging.getLogger("broker.server")

CHECKPOINTS = Counter("broker_tlog_checkpoints_total", "Transparency-log checkpoints signed")
TREE_SIZE = Gauge("broker_tlog_size", "Entries in the transparency log at the latest checkpoint")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Checkpointer:
    """Issues checkpoints for one broker's log; `start()` runs the periodic task."""

    def __init__(
        self,
        runner: StoreRunner[Store],
        signer: Signer,
        pq_signer: PQSigner | None = None,
        *,
        interval_s: float = 0.5,
    ) -> None:
        self.runner = runner
        self.signer = signer
        self.pq_signer = pq_signer  # the hybrid log key's ML-DSA-65 half, if the broker has it
        self.interval_s = interval_s
        self._last_size = -1

    @property
    def origin(self) -> str:
        """The checkpoint origin, also the log key's name."""
        return self.signer.name

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier

    async def issue(self) -> StoredCheckpoint:
        """Catch up and sign a checkpoint now if the log grew; return the latest one."""
        signer, pq = self.signer, self.pq_signer

        def op(store: Store) -> StoredCheckpoint:
            return store.tlog_issue_checkpoint(signer, _now_ms(), pq)

        cp: StoredCheckpoint = await self.runner.call(op)
        if cp.size != self._last_size:
            self._last_size = cp.size
            CHECKPOINTS.inc()
            TREE_SIZE.set(cp.size)
        return cp

    async def covering(self, size: int) -> StoredCheckpoint:
        """The latest checkpoint if it covers `size` entries, else a fresh one."""

        def op(store: Store) -> StoredCheckpoint | None:
            return store.tlog_checkpoint()

        latest: StoredCheckpoint | None = await self.runner.call(op)
        if latest is not None and latest.size >= size:
            return latest
        return await self.issue()

    async def run(self) -> None:
        while True:
            try:
                await self.issue()
            except Exception:
                log.exception("checkpoint failed")
            await asyncio.sleep(self.interval_s)

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.run(), name="checkpoints")
