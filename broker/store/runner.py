"""Group commit: store threads own the store; asyncio callers await their results.

Callers submit operations; a store thread takes every operation waiting in the
queue (up to `max_batch`), runs them in ONE transaction, each inside its own
savepoint so a failing operation leaves nothing behind and does not disturb the
others, and resolves the callers' futures only after COMMIT has returned. With
SQLite's synchronous=FULL, COMMIT returns after the WAL is fsync'd, so an
acknowledged publish is durable, and N concurrent publishes cost one fsync.

SQLite has one store thread (one connection). PostgreSQL may have several, one
per store handle, each running its own groups on a pooled connection; a
backend whose database aborted a group to break a deadlock raises
`RetryBatch`, and the whole group runs again on a fresh transaction (every
operation must therefore be safe to run again: it only touches the store). A group
undone twice running is run again one operation at a time, so that one operation that
always fails this way (a unique key it always violates) fails alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from broker.errors import Unavailable
from broker.store import failures
from broker.store.api import Transactional

T = TypeVar("T")
S = TypeVar("S", bound=Transactional)
log = logging.getLogger(__name__)
MAX_RETRIES = 8
SPLIT_AFTER = 2  # a group undone this many times running is run again one operation at a time


class RetryBatch(Exception):  # an instruction to the runner, not a failure
    """The database undid the whole transaction (deadlock, serialization failure, or the
    connection broke before COMMIT); running the group again may succeed."""


_Op = tuple[Callable[[Any], Any], "concurrent.futures.Future[Any]"]
_STOP = object()


class StoreRunner(Generic[S]):
    """Runs store operations on dedicated threads with group commit (one per store handle)."""

    def __init__(self, store: S, *more: S, max_batch: int = 256) -> None:
        self.store = store
        self.stores = (store, *more)
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # no operation is queued behind _STOP; counters
        self.batches = 0
        self.operations = 0
        self.retries = 0
        self.splits = 0  # groups run again one operation at a time
        self._threads = [
            threading.Thread(target=self._run, args=(s,), name=f"store-{i}", daemon=True)
            for i, s in enumerate(self.stores)
        ]
        for thread in self._threads:
            thread.start()

    async def call(self, fn: Callable[[S], T]) -> T:
        """Run fn(store) in the next group commit; return its result once durable."""
        return await asyncio.wrap_future(self._submit(fn))

    def call_sync(self, fn: Callable[[S], T]) -> T:
        """Blocking variant for start-up and tools."""
        return self._submit(fn).result()

    def _submit(self, fn: Callable[[S], T]) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise Unavailable("the broker is shutting down; retry")
            self._queue.put((fn, fut))
        return fut

    def close(self) -> None:
        """Finish queued operations, then stop the threads and close the store handles."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()
        for store in self.stores:
            store.close()

    def _run(self, store: S) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Op] = [first]  # type: ignore[list-item]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._run_batch(store, batch)

    def _run_batch(self, store: S, batch: list[_Op]) -> None:
        failure: Exception | None = None
        for attempt in range(MAX_RETRIES + 1):
            try:
                results = self._transaction(store, batch)
            except RetryBatch as exc:
                with contextlib.suppress(Exception):
                    store.rollback()
                log.warning(
                    "store group undone by the database; running it again",
                    extra={"attempt": attempt + 1, "operations": len(batch), "error": str(exc)},
                )
                if attempt >= SPLIT_AFTER - 1 and len(batch) > 1:
                    # Undone twice running: perhaps not a race but one operation that fails
                    # the same way every time (a unique key it always violates). Alone, each
                    # operation stands or falls by itself and the others commit.
                    with self._lock:
                        self.retries += 1
                        self.splits += 1
                    for op in batch:
                        self._run_batch(store, [op])
                    return
                if attempt < MAX_RETRIES:
                    with self._lock:
                        self.retries += 1
                    time.sleep(min(0.002 * 2**attempt, 0.2))
                    continue
                log.exception("store transaction kept being aborted; giving up")
                failure = exc
            except Exception as exc:
                reason = failures.describe(exc, "the data directory")
                if reason is None:
                    log.exception("store transaction failed; nothing in it was stored")
                else:  # a known condition (disk full, database locked ...): one line
                    log.error(f"store transaction failed; nothing in it was stored: {reason}")  # noqa: TRY400
                with contextlib.suppress(Exception):  # the original error is what matters
                    store.rollback()
                failure = exc
            else:
                with self._lock:
                    self.batches += 1
                    self.operations += len(batch)
                for fut, ok, value in results:
                    # A caller that gave up (its RPC was cancelled) cancelled its future; the
                    # operation still ran and committed, like any write whose answer was lost.
                    with contextlib.suppress(concurrent.futures.InvalidStateError):
                        if ok:
                            fut.set_result(value)
                        else:
                            fut.set_exception(value)
                return
            break
        for _fn, fut in batch:
            error = Unavailable("the broker could not store this; nothing was stored: retry")
            error.__cause__ = failure  # what `broker serve` names when it fails to start
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                fut.set_exception(error)

    @staticmethod
    def _transaction(
        store: S, batch: list[_Op]
    ) -> list[tuple[concurrent.futures.Future[Any], bool, Any]]:
        results: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        store.begin()
        for fn, fut in batch:
            store.savepoint()
            try:
                value = fn(store)
            except RetryBatch:
                raise
            except Exception as exc:  # the op's own failure: undo it, keep the others
                store.rollback_savepoint()
                results.append((fut, False, exc))
            else:
                store.release_savepoint()
                results.append((fut, True, value))
        store.commit()
        return results
