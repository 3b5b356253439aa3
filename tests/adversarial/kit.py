"""What the adversarial tests share: listening nodes that record what they see and find,
publishing, and editing the broker's database under it (the attacker's hands)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from broker.client.findings import Finding
from broker.client.node import AgencyNode, LifecycleNotice, ReceivedNotice
from broker.store.api import Store
from broker.v1 import agency_pb2
from tests.integration.conftest import Running
from tests.integration.helpers import RED_SECTIONS

SECTIONS = {k: v for k, v in RED_SECTIONS.items() if k != "biometrics"}


@dataclass
class Listener:
    node: AgencyNode
    notices: list[ReceivedNotice] = field(default_factory=list)
    actions: list[LifecycleNotice] = field(default_factory=list)
    events: list[agency_pb2.StatusEvent] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[object] | None = None

    async def start(self) -> None:
        async def on_notice(n: ReceivedNotice) -> None:
            self.notices.append(n)

        async def on_action(a: LifecycleNotice) -> None:
            self.actions.append(a)

        async def on_event(e: agency_pb2.StatusEvent) -> None:
            self.events.append(e)

        async def on_finding(f: Finding) -> None:
            self.findings.append(f)

        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            self.node.listen(
                on_notice,
                stop=self.stop,
                on_event=on_event,
                on_lifecycle=on_action,
                on_finding=on_finding,
            )
        )

    async def halt(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)

    def found(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def versions(self, notice_id: str) -> list[int]:
        return [n.version for n in self.notices if n.notice_id == notice_id]


async def until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(loop(), timeout)


@contextlib.asynccontextmanager
async def agencies(b: Running, *ids: str) -> AsyncIterator[dict[str, Listener]]:
    listeners = {i: Listener(b.node(i)) for i in ids}
    for listener in listeners.values():
        await listener.start()
    try:
        yield listeners
    finally:
        for listener in listeners.values():
            await listener.halt()
            await listener.node.close()


async def publish(node: AgencyNode, to: list[str], **kw: Any) -> str:
    kw.setdefault("kind", "interpol.red")
    kw.setdefault("purpose", "locate_arrest")
    kw.setdefault("sections", SECTIONS)
    result = await node.publish(recipients=to, **kw)
    return result.notice_id


async def tamper(b: Running, sql: str, *args: Any) -> int:
    """Edit the broker's database under it (the operator as attacker): rows changed."""

    def run(store: Store) -> int:
        conn = store.conn  # type: ignore[attr-defined]
        return int(conn.execute(sql, args).rowcount)

    return int(await b.app.runner.call(run))


Copy = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


async def keep_copy(b: Running, notice_id: str) -> Copy:
    """What a broker that does not erase keeps: a notice's stored rows and ciphertexts."""

    def read(store: Store) -> Copy:
        conn = store.conn  # type: ignore[attr-defined]
        notices = conn.execute(
            "SELECT notice_id, version, envelope, head FROM notices WHERE notice_id=?",
            (notice_id,),
        ).fetchall()
        sections = conn.execute(
            "SELECT * FROM notice_sections WHERE notice_id=?", (notice_id,)
        ).fetchall()
        cuts = conn.execute(
            "SELECT seq, cut, wrap, obligations FROM deliveries WHERE notice_id=?", (notice_id,)
        ).fetchall()
        return [tuple(r) for r in notices], [tuple(r) for r in sections], [tuple(r) for r in cuts]

    copy: Copy = await b.app.runner.call(read)
    return copy


async def restore_copy(b: Running, copy: Copy) -> None:
    notices, sections, cuts = copy

    def write(store: Store) -> None:
        conn = store.conn  # type: ignore[attr-defined]
        for nid, version, envelope, head in notices:
            conn.execute(
                "UPDATE notices SET envelope=?, head=? WHERE notice_id=? AND version=?",
                (envelope, head, nid, version),
            )
        for row in sections:
            marks = ",".join("?" * len(row))
            conn.execute(f"INSERT OR REPLACE INTO notice_sections VALUES ({marks})", row)
        for seq, cut, wrap, obligations in cuts:
            conn.execute(
                "UPDATE deliveries SET cut=?, wrap=?, obligations=? WHERE seq=?",
                (cut, wrap, obligations, seq),
            )

    await b.app.runner.call(write)


async def settled(node: AgencyNode, notice_id: str, timeout: float = 15) -> Any:
    """verify_delivery once the log has caught up (a checkpoint covering the receipts is
    cosigned by the witness): retried while any receipt awaits a cosigned checkpoint."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        report = await node.verify_delivery(notice_id)
        waiting = [r for r in report.recipients if "awaiting" in r.detail]
        if not waiting or loop.time() > end:
            return report
        await asyncio.sleep(0.1)


def stored_bytes(b: Running, must_hold: bytes) -> bytes:
    """Every byte of the broker's SQLite store (the file and its write-ahead log). It must
    hold `must_hold` (something the broker is known to store, such as a notice id), so a
    search for what it must not hold never runs on an empty haystack."""
    from pathlib import Path

    database = Path(b.app.config.database)
    stored = b"".join(
        p.read_bytes() for p in database.parent.iterdir() if p.name.startswith(database.name)
    )
    assert must_hold in stored, "the search does not look where the broker stores"
    return stored
