"""Group commit: one thread owns the store; asyncio callers await their results.

Callers submit operations; the thread takes every operation waiting in the
queue (up to `max_batch`), runs them in ONE transaction, each inside its own
savepoint so a failing operation leaves nothing behind and does not disturb the
others, and resolves the callers' futures only after COMMIT has returned. With
SQLite's synchronous=FULL, COMMIT returns after the WAL is fsync'd, so an
acknowledged publish is durable, and N concurrent publishes cost one fsync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from broker.errors import Unavailable
from broker.store import failures

T = TypeVar("T")
log = logging.getLogger(__name__)


class Transactional(Protocol):
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def savepoint(self) -> None: ...
    def release_savepoint(self) -> None: ...
    def rollback_savepoint(self) -> None: ...
    def close(self) -> None: ...


_Op = tuple[Callable[[Any], Any], "concurrent.futures.Future[Any]"]
_STOP = object()


class StoreRunner:
    """Runs store operations on a dedicated thread with group commit."""

    def __init__(self, store: Transactional, *, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store", daemon=True)
        self._closed = False
        self._lock = threading.Lock()  # no operation is queued behind _STOP
        self.batches = 0
        self.operations = 0
        self._thread.start()

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run fn(store) in the next group commit; return its result once durable."""
        return await asyncio.wrap_future(self._submit(fn))

    def call_sync(self, fn: Callable[[Any], T]) -> T:
        """Blocking variant for start-up and tools."""
        return self._submit(fn).result()

    def _submit(self, fn: Callable[[Any], T]) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise Unavailable("the broker is shutting down; retry")
            self._queue.put((fn, fut))
        return fut

    def close(self) -> None:
        """Finish queued operations, then stop the thread and close the store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        self.store.close()

    def _run(self) -> None:
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
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Op]) -> None:
        results: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        try:
            self.store.begin()
            for fn, fut in batch:
                self.store.savepoint()
                try:
                    value = fn(self.store)
                except Exception as exc:  # the op's own failure: undo it, keep the others
                    self.store.rollback_savepoint()
                    results.append((fut, False, exc))
                else:
                    self.store.release_savepoint()
                    results.append((fut, True, value))
            self.store.commit()
        except Exception as exc:
            reason = failures.describe(exc, "the data directory")
            if reason is None:
                log.exception("store transaction failed; nothing in it was stored")
            else:  # a known condition (disk full, database locked ...): one line, no traceback
                log.error(f"store transaction failed; nothing in it was stored: {reason}")  # noqa: TRY400
            with contextlib.suppress(Exception):  # the original error is what matters
                self.store.rollback()
            for _fn, fut in batch:
                error = Unavailable("the broker could not store this; nothing was stored: retry")
                error.__cause__ = exc  # what `broker serve` names when it fails to start
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    fut.set_exception(error)
            return
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
