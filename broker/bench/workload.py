"""What every pipeline of a bench run sends, and how: the notice, the load shapes, the
latency samples.

Each notice carries a marker (`bench:<tag>:<t0>`) at the start of its case-facts
section: the run tag and the moment it was due to be sent, on CLOCK_MONOTONIC,
which every process of the machine shares. A recipient reads it after verifying and
opening the notice, so latency is measured from the intended send time to verified
delivery (and to the confirmed receipt) across processes, and a paced load that
falls behind counts the time it was late (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.core import envelope as env

MARKER = b"bench:"
# ~2 KB in 3 sections of an INTERPOL Red notice (identity, case facts, judicial).
SECTION_SIZES = {"identity": 420, "case_facts": 1200, "judicial": 428}
KIND, PURPOSE = "interpol.red", "locate_arrest"
_FILLER = (
    b"Subject sought for prosecution: aggravated fraud and laundering of proceeds across "
    b"three member states; last seen at a border crossing; travels under two identities. "
)


def _fill(prefix: bytes, size: int) -> bytes:
    body = prefix + _FILLER * (size // len(_FILLER) + 1)
    return body[: max(size, len(prefix))]


def marker(tag: str, t0: float) -> bytes:
    return MARKER + f"{tag}:{t0:.6f}\n".encode()


# The 'field: value' lines the catalogue's content_fields ask of a Red notice's sections
# (policies/catalogue.toml): the SDK refuses a section without them, and the broker a
# notice whose signed content manifest lacks one (broker/core/content.py).
RED_FIELDS = {
    "identity": b"family_name: DOE\nforename: John\ndate_of_birth: 1970-01-01\nnationality: XX\n",
    "case_facts": b"offence: aggravated fraud\nsummary: proceeds laundered in three states\n",
    "judicial": b"warrant_reference: 2026/0042\nissuing_authority: investigating judge\n"
    b"penalty_threshold: 2 years\n",
}
# What an honest SDK declares for them (benches that seal by hand send it): the names in
# the catalogue's order, as the lines above are written (the broker refuses another order).
RED_MANIFEST = {
    s: tuple(line.split(":", 1)[0] for line in v.decode().splitlines())
    for s, v in RED_FIELDS.items()
}


def red_sections(texts: Mapping[str, bytes]) -> dict[str, bytes]:
    """Red notice sections: the catalogue's field lines, then each section's text."""
    return {name: RED_FIELDS.get(name, b"") + text for name, text in texts.items()}


def section_inputs(sections: Mapping[str, bytes]) -> list[env.SectionInput]:
    """What to seal by hand, in name order, with the content manifest an SDK declares."""
    return [env.SectionInput(n, d, RED_MANIFEST.get(n, ())) for n, d in sorted(sections.items())]


def notice_sections(tag: str, t0: float) -> dict[str, bytes]:
    """The three sections of one bench notice (about 2 KB), marked with tag and t0 (the
    marker first, then the catalogue's fields)."""
    return {
        "identity": _fill(RED_FIELDS["identity"], 420),
        "case_facts": _fill(marker(tag, t0) + RED_FIELDS["case_facts"], 1200),
        "judicial": _fill(RED_FIELDS["judicial"], 428),
    }


def notice_body(tag: str, t0: float) -> bytes:
    """The same ~2 KB as one body, for the peers (which have no sections)."""
    s = notice_sections(tag, t0)
    return s["case_facts"] + s["identity"] + s["judicial"]


def parse_marker(data: bytes) -> tuple[str, float] | None:
    """(tag, t0) from the start of a marked section or body; None if it carries none."""
    if not data.startswith(MARKER):
        return None
    line = data[len(MARKER) : data.find(b"\n")].decode(errors="replace")
    tag, _, t0 = line.rpartition(":")
    try:
        return tag, float(t0)
    except ValueError:
        return None


def now() -> float:
    return time.monotonic()


# --- load shapes --------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One notice to send: its run tag, its sequence number, the moment it was due."""

    tag: str
    seq: int
    t0: float


Send = Callable[[Sequence[Item]], Awaitable[None]]


@dataclass
class Driven:
    """What a publisher did in one mode."""

    published: int = 0
    errors: int = 0
    first_error: str = ""
    started: float = 0.0
    ended: float = 0.0
    late: int = 0  # paced: notices sent more than 10 ms after they were due

    def as_dict(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "errors": self.errors,
            "first_error": self.first_error,
            "started": self.started,
            "ended": self.ended,
            "late": self.late,
        }


async def _guarded(send: Send, items: Sequence[Item], out: Driven) -> None:
    try:
        await send(items)
    except Exception as exc:  # a refused publish is counted and reported, never hidden
        out.errors += len(items)
        out.first_error = out.first_error or f"{type(exc).__name__}: {exc}"
    else:
        out.published += len(items)


async def closed_loop(
    send: Send, tag: str, *, seconds: float, count: int, concurrency: int, batch: int = 1
) -> Driven:
    """Flat out: `concurrency` senders, each sending its next batch as soon as the last
    returned, until `seconds` passed or `count` notices were sent (0: no count limit)."""
    out = Driven(started=now())
    deadline = out.started + seconds
    seq = 0

    async def sender() -> None:
        nonlocal seq
        while now() < deadline and (count == 0 or seq < count):
            n = batch if count == 0 else min(batch, count - seq)
            items = [Item(tag, seq + i, now()) for i in range(n)]
            seq += n
            await _guarded(send, items, out)

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    out.ended = now()
    return out


async def paced(
    send: Send, tag: str, *, rate: float, seconds: float, max_in_flight: int = 256
) -> Driven:
    """Open loop: notice i is due at start + i / rate, sent then whatever the earlier ones
    are doing (at most `max_in_flight` outstanding; beyond that a notice waits, and its
    latency still counts from when it was due)."""
    out = Driven(started=now())
    total = max(1, int(rate * seconds))
    gate = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def one(item: Item) -> None:
        try:
            await _guarded(send, [item], out)
        finally:
            gate.release()

    for i in range(total):
        due = out.started + i / rate
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        if now() - due > 0.010:
            out.late += 1
        task = asyncio.create_task(one(Item(tag, i, due)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    out.ended = now()
    return out


async def drive(send: Send, tag: str, mode: dict[str, Any]) -> Driven:
    """Run one mode described by a dict (kind "closed" or "paced"), as the coordinator
    sends it."""
    if mode["kind"] == "paced":
        return await paced(send, tag, rate=float(mode["rate"]), seconds=float(mode["seconds"]))
    return await closed_loop(
        send,
        tag,
        seconds=float(mode["seconds"]),
        count=int(mode.get("count", 0)),
        concurrency=int(mode["concurrency"]),
        batch=int(mode.get("batch", 1)),
    )


def publisher_commands(
    send: Send, recipients: Sequence[str]
) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
    """The commands every peer publisher answers: a warm-up notice, and a mode's load."""

    async def warmup(args: dict[str, Any]) -> dict[str, list[str]]:
        await send([Item(args["tag"], 0, 0.0)])
        return {r: ["body"] for r in recipients}

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        return (await drive(send, args["tag"], args["mode"])).as_dict()

    return {"warmup": warmup, "run": run}


# --- samples (recipient side) -------------------------------------------------------


@dataclass
class Samples:
    """Latencies seen by one recipient process, per run tag."""

    delivered: dict[str, list[float]] = field(default_factory=dict)
    receipted: dict[str, list[float]] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)  # tag -> last receipt moment
    first: dict[str, float] = field(default_factory=dict)  # tag -> first delivery moment
    pending: dict[Any, tuple[str, float]] = field(default_factory=dict)  # key -> (tag, t0)

    def on_delivered(self, key: Any, data: bytes) -> bool:
        """A notice was verified and opened; False if it carries no marker."""
        found = parse_marker(data)
        if found is None:
            return False
        tag, t0 = found
        t = now()
        self.delivered.setdefault(tag, []).append(t - t0)
        self.first.setdefault(tag, t)
        self.pending[key] = (tag, t0)
        return True

    def on_receipted(self, key: Any) -> bool:
        """The receipt (or acknowledgement) of a delivered notice was confirmed."""
        found = self.pending.pop(key, None)
        if found is None:
            return False
        tag, t0 = found
        t = now()
        self.receipted.setdefault(tag, []).append(t - t0)
        self.last[tag] = max(self.last.get(tag, 0.0), t)
        return True

    def take(self, tag: str) -> dict[str, Any]:
        """The samples of one tag (then forgotten)."""
        return {
            "delivered": self.delivered.pop(tag, []),
            "receipted": self.receipted.pop(tag, []),
            "first": self.first.pop(tag, None),
            "last": self.last.pop(tag, None),
        }
