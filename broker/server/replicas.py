"""Several broker replicas on one PostgreSQL schema: what they tell each other.

Replicas share everything durable through the store. What each also holds in
memory, and must hear about when another replica changes it, travels as
PostgreSQL notifications on the schema's channel (LISTEN/NOTIFY), which every
listener receives in the same order, the order their senders committed:

* ``wake`` (agency ids): something is queued for them (a publish, a requeue, an
  event); whichever replica holds the agency's Subscribe stream leases it now,
  rather than at its next poll;
* ``session`` (agency, serial): a replica opened a Subscribe stream for that
  agency. The replica that held the older stream closes it, so an agency is
  streamed by one replica at a time. Which stream is older is read off the
  channel's order: a replica that has already heard its own announcement of a
  stream closes that stream when it hears another replica announce a newer
  one; no clocks are compared;
* ``registry``, ``policy``, ``restrictions``: an administrator or originator
  changed them through one replica; the others reload them from the store.

Notifications are an accelerator, not the record: a replica that loses its
listening connection reconnects, reloads all shared state and wakes all its
streams, and every stream still polls the store once per poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("broker.server")
MAX_PAYLOAD = 7900  # PostgreSQL refuses payloads of 8000 bytes or more
WAKE = "wake"
SESSION = "session"
REGISTRY = "registry"
POLICY = "policy"
RESTRICTIONS = "restrictions"


@dataclass(frozen=True)
class Message:
    replica: str  # who sent it
    kind: str
    args: tuple[str, ...]


def encode(replica: str, kind: str, args: tuple[str, ...]) -> str:
    return json.dumps({"r": replica, "k": kind, "a": list(args)}, separators=(",", ":"))


def decode(payload: str) -> Message | None:
    """The message in a notification's payload; None if it is not one of ours."""
    try:
        doc = json.loads(payload)
        replica, kind, args = doc["r"], doc["k"], doc["a"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(replica, str) and isinstance(kind, str) and isinstance(args, list)):
        return None
    if not all(isinstance(a, str) for a in args):
        return None
    return Message(replica, kind, tuple(args))


def wake_payloads(replica: str, agencies: list[str]) -> list[str]:
    """`wake` messages naming every agency, each under PostgreSQL's payload limit."""
    out: list[str] = []
    batch: list[str] = []
    for agency in agencies:
        if batch and len(encode(replica, WAKE, (*batch, agency))) > MAX_PAYLOAD:
            out.append(encode(replica, WAKE, tuple(batch)))
            batch = []
        batch.append(agency)
    if batch:
        out.append(encode(replica, WAKE, tuple(batch)))
    return out


Handler = Callable[[Message], Awaitable[None]]


class ReplicaBus:
    """The channel between replicas: `send` queues, a task sends, a task listens.

    `on_message` gets every message, the replica's own included (a replica learns
    where its own announcements fall in the channel's order that way);
    `on_connected` runs after every (re)connection of the listener.
    """

    def __init__(
        self,
        dsn: str,
        channel: str,
        replica: str,
        on_message: Handler,
        on_connected: Callable[[], Awaitable[None]],
        *,
        reconnect_max_s: float = 2.0,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.replica = replica
        self._on_message = on_message
        self._on_connected = on_connected
        self._reconnect_max_s = reconnect_max_s
        self._wakes: dict[str, None] = {}
        self._outbox: list[str] = []
        self._pending = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sender: psycopg.AsyncConnection[Any] | None = None
        self.listening = asyncio.Event()  # set while the listener is connected
        self.sent = 0
        self.received = 0
        self.reconnects = 0

    async def start(self) -> None:
        """Start listening; returns once the first LISTEN is in place (or raises)."""
        conn = await self._listen()
        self._tasks.append(asyncio.create_task(self._listener(conn), name="replicas-listen"))
        self._tasks.append(asyncio.create_task(self._flusher(), name="replicas-send"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._sender is not None:
            await self._sender.close()
            self._sender = None

    # -- sending ------------------------------------------------------------------------------
    def wake(self, agency: str) -> None:
        self._wakes[agency] = None
        self._pending.set()

    def send(self, kind: str, *args: str) -> None:
        self._outbox.append(encode(self.replica, kind, args))
        self._pending.set()

    async def _flusher(self) -> None:
        import psycopg  # only replicas on PostgreSQL pay for the import

        while True:
            await self._pending.wait()
            self._pending.clear()
            payloads = self._outbox + wake_payloads(self.replica, list(self._wakes))
            self._outbox, self._wakes = [], {}
            try:
                await self._notify(payloads)
            except (psycopg.Error, OSError) as exc:
                # Lost: the other replicas poll, and reload everything when they reconnect.
                log.warning("replica notification failed", extra={"error": str(exc)})
                if self._sender is not None:
                    with contextlib.suppress(Exception):
                        await self._sender.close()
                    self._sender = None
                await asyncio.sleep(0.1)

    async def _notify(self, payloads: list[str]) -> None:
        import psycopg

        if self._sender is None:
            self._sender = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, application_name=f"broker-{self.replica}-notify"
            )
        for payload in payloads:
            await self._sender.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            self.sent += 1

    # -- listening ----------------------------------------------------------------------------
    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        import psycopg
        from psycopg import sql

        conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name=f"broker-{self.replica}-listen"
        )
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            await conn.close()
            raise
        self.listening.set()
        return conn

    async def _listener(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        import psycopg

        delay = 0.05
        while True:
            try:
                if conn is None:
                    conn = await self._listen()
                    self.reconnects += 1
                    log.info("replica channel reconnected", extra={"channel": self.channel})
                await self._on_connected()
                delay = 0.05
                async for note in conn.notifies():
                    message = decode(note.payload)
                    if message is None:
                        continue
                    self.received += 1
                    try:
                        await self._on_message(message)
                    except Exception:
                        log.exception("replica message failed", extra={"kind": message.kind})
            except (psycopg.Error, OSError) as exc:
                log.warning("replica channel lost; reconnecting", extra={"error": str(exc)})
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                    conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max_s)
