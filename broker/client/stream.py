"""Received notices as an async iterator (mixed into AgencyNode):

    async with AgencyNode(config) as node:
        async for notice in node.notices():
            handle(notice)

Built on `listen`: the node verifies and opens each delivery, keeps it in its inbox, and
signs the receipt once the notice is handled. A notice counts as handled when the loop
asks for the next one, or leaves normally (``break``, ``return``, `stop` set): the stream
then stops listening once the receipt is sent. When the loop ends by an exception (seen
by ``async with node.notices() as notices`` or ``async with AgencyNode(...)``), the
notice it was on stays unhandled and is handed again at the next start, with any that
reached the node in the same batch (at least once, never lost: an application that must
not act twice keeps the (notice_id, version) pairs it acted on).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from broker.client.types import Handler, ListenStats, ReceivedNotice


class _Listener(Protocol):
    async def listen(self, handler: Handler, *, stop: asyncio.Event) -> ListenStats: ...


class _Closed(Exception):
    """Raised in the listener's handler once the stream is closed: what it was handing
    stays unhandled in the inbox (handed again at the next start)."""


CLOSE_WAIT_S = 10.0  # how long a closing stream lets the listener send its receipts


class NoticeStream:
    """An async iterator (and async context manager) over the notices a node receives."""

    def __init__(self, node: _Listener, stop: asyncio.Event | None, on_close: Any) -> None:
        self._node = node
        self._stop = stop or asyncio.Event()
        self._on_close = on_close
        self._handed: asyncio.Queue[tuple[ReceivedNotice, asyncio.Future[None]]] = asyncio.Queue(1)
        self._current: asyncio.Future[None] | None = None
        self._listening: asyncio.Task[ListenStats] | None = None
        self._closed = False

    async def _handler(self, notice: ReceivedNotice) -> None:
        if self._closed:
            raise _Closed
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._handed.put((notice, done))
        await done  # the loop asked for the next one: handled, receipt it

    def __aiter__(self) -> NoticeStream:
        return self

    async def __anext__(self) -> ReceivedNotice:
        if self._current is not None:
            self._current.set_result(None)
            self._current = None
        if self._closed:
            raise StopAsyncIteration
        if self._listening is None:
            self._listening = asyncio.create_task(self._node.listen(self._handler, stop=self._stop))
        listening = self._listening
        taking = asyncio.create_task(self._handed.get())
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({taking, listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not taking.done():
                taking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await taking
        if taking.cancelled():
            await self.aclose()
            if listening.done() and not listening.cancelled():
                error = listening.exception()
                if error is not None and not isinstance(error, _Closed):
                    raise error  # what ended the listener (a revoked certificate ...)
            raise StopAsyncIteration
        notice, self._current = taking.result()
        return notice

    async def aclose(self, *, handled: bool = True) -> None:
        """Stop listening. The notice the loop is on counts as handled (and is receipted)
        unless `handled` is False (the loop failed on it)."""
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        current, self._current = self._current, None
        if current is not None:
            if handled:
                current.set_result(None)
            else:
                current.set_exception(_Closed())
        while not self._handed.empty():  # handed but never taken: not handled
            _notice, done = self._handed.get_nowait()
            done.set_exception(_Closed())
        self._stop.set()
        task, self._listening = self._listening, None
        if task is None:
            return
        await asyncio.wait({task}, timeout=CLOSE_WAIT_S)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved; __anext__ reports one that matters

    async def __aenter__(self) -> NoticeStream:
        return self

    async def __aexit__(self, kind: object, *exc: object) -> None:
        await self.aclose(handled=kind is None)


class NodeStream:
    """`notices()`: an async iterator over what the node receives."""

    def _notice_streams(self) -> set[NoticeStream]:
        streams: set[NoticeStream] = self.__dict__.setdefault("_open_notice_streams", set())
        return streams

    def notices(self, *, stop: asyncio.Event | None = None) -> NoticeStream:
        """Each notice received, in order, until `stop` is set or the stream is closed.

        Iterating raises what `listen` raises: typed errors (broker.client.errors) for
        refusals that retrying cannot fix, such as a revoked certificate.
        """
        streams = self._notice_streams()
        stream = NoticeStream(self, stop, streams.discard)  # type: ignore[arg-type]
        streams.add(stream)
        return stream

    async def close_notice_streams(self, *, handled: bool = True) -> None:
        """Close every stream still open (the node's close calls it; `handled` False when
        the node's ``async with`` ends by an exception)."""
        for stream in list(self._notice_streams()):
            await stream.aclose(handled=handled)
