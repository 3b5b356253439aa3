"""Worker processes of a bench run and how the coordinator talks to them.

A worker is a fresh interpreter (multiprocessing "spawn": no state forked from the
coordinator, no gRPC or asyncio loop shared) running one role: the recipients or the
publisher of one pipeline. The coordinator sends commands (a name and a dict) and
reads one reply per command. Two shared counters (deliveries handed to the
application, and receipts or acknowledgements confirmed) let the coordinator see
progress without a message per delivery.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from broker.errors import BrokerError, Unavailable

DELIVERED, RECEIPTED = 0, 1
_CTX = mp.get_context("spawn")

# role name -> "module:function"; the function is `async def main(spec, channel)`.
ROLES = {
    "ours.recipients": "broker.bench.ours_workers:recipients_main",
    "ours.publisher": "broker.bench.ours_workers:publisher_main",
    "nats.consumers": "broker.bench.nats_peer:consumers_main",
    "nats.publisher": "broker.bench.nats_peer:publisher_main",
    "rabbitmq.consumers": "broker.bench.rabbitmq_peer:consumers_main",
    "rabbitmq.publisher": "broker.bench.rabbitmq_peer:publisher_main",
}


class Channel:
    """The worker's end: commands in, replies out, the shared counters."""

    def __init__(self, commands: Any, replies: Any, counters: Any) -> None:
        self._commands = commands
        self._replies = replies
        self.counters = counters

    async def next(self) -> tuple[str, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        name, args = await loop.run_in_executor(None, self._commands.get)
        return str(name), dict(args)

    def reply(self, value: Any) -> None:
        self._replies.put(("ok", value))

    def fail(self, message: str) -> None:
        self._replies.put(("error", message))

    def count(self, which: int, n: int = 1) -> None:
        self.counters[which] += n


Main = Callable[[dict[str, Any], Channel], Coroutine[Any, Any, None]]
Command = Callable[[dict[str, Any]], Awaitable[Any]]


async def serve(channel: Channel, commands: dict[str, Command]) -> None:
    """Answer commands until "quit": a command's return value is its reply; an unknown
    command, or one that raises a BrokerError, gets a failure reply instead."""
    while True:
        name, args = await channel.next()
        if name == "quit":
            return
        command = commands.get(name)
        if command is None:
            channel.fail(f"unknown command {name!r}; known: {sorted(commands)}")
            continue
        try:
            channel.reply(await command(args))
        except BrokerError as exc:
            channel.fail(f"{name}: {exc}")


def _worker_main(
    role: str, spec: dict[str, Any], commands: Any, replies: Any, counters: Any
) -> None:
    module, _, func = ROLES[role].partition(":")
    main: Main = getattr(importlib.import_module(module), func)
    channel = Channel(commands, replies, counters)
    try:
        asyncio.run(main(spec, channel))
    except BaseException as exc:  # report, then exit non-zero: the coordinator says which
        channel.fail(f"{role} worker failed: {exc!r}\n{traceback.format_exc(limit=8)}")
        raise


class Worker:
    """The coordinator's handle on one worker process."""

    def __init__(self, role: str, spec: dict[str, Any]) -> None:
        self.role = role
        self._commands = _CTX.Queue()
        self._replies = _CTX.Queue()
        self._counters = _CTX.Array("q", 2, lock=False)
        self.process = _CTX.Process(
            target=_worker_main,
            args=(role, spec, self._commands, self._replies, self._counters),
            name=f"bench-{role}",
            daemon=True,
        )
        self.process.start()

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None
        return pid

    def counters(self) -> tuple[int, int]:
        return int(self._counters[DELIVERED]), int(self._counters[RECEIPTED])

    def send(self, name: str, **args: Any) -> None:
        self._commands.put((name, args))

    def poll(self, wait: float) -> tuple[bool, Any]:
        """(True, reply) if the reply to the last command came within `wait` seconds,
        else (False, None); raises Unavailable if the worker failed or exited."""
        try:
            status, value = self._replies.get(timeout=wait)
        except queue.Empty:
            if not self.process.is_alive():
                raise Unavailable(f"{self.role} worker exited ({self.process.exitcode})") from None
            return False, None
        if status != "ok":
            raise Unavailable(str(value))
        return True, value

    def result(self, timeout: float) -> Any:
        """The reply to the last command sent; raises Unavailable on error or timeout."""
        deadline = timeout
        while True:
            try:
                status, value = self._replies.get(timeout=min(deadline, 1.0))
                break
            except queue.Empty:
                deadline -= 1.0
                if not self.process.is_alive():
                    raise Unavailable(
                        f"{self.role} worker exited ({self.process.exitcode})"
                    ) from None
                if deadline <= 0:
                    raise Unavailable(
                        f"{self.role} worker did not answer in {timeout:.0f} s"
                    ) from None
        if status != "ok":
            raise Unavailable(str(value))
        return value

    def call(self, name: str, timeout: float = 120.0, **args: Any) -> Any:
        self.send(name, **args)
        return self.result(timeout)

    def stop(self, grace: float = 10.0) -> None:
        """Ask the worker to quit; kill it if it has not within `grace` seconds (a worker
        still busy with a command only reads "quit" when that command is done)."""
        if self.process.is_alive():
            self.send("quit")
            self.process.join(timeout=grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self._commands.close()
        self._replies.close()


def stop_all(workers: list[Worker], grace: float = 10.0) -> None:
    """Stop several workers, `grace` seconds for all of them together."""
    for w in workers:
        if w.process.is_alive():
            w.send("quit")
    deadline = time.monotonic() + grace
    for w in workers:
        w.stop(max(0.0, deadline - time.monotonic()))
