"""Geometry of the console's server-rendered SVG pictures (pure).

Functions return plain values (coordinates, path data, labels); the templates
turn them into SVG elements with Jinja2's autoescaping, and the stylesheet
colours them by class. No script, no inline style: the page's
Content-Security-Policy allows neither.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.console.derive import OUTCOME_TEXT, OUTCOMES, Flows


def clock(ms: int) -> str:
    """ISO 8601 UTC to the second, as every console page shows times."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------- checkpoints over time


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    size: int
    at_ms: int
    cosigned: int  # trusted cosignatures
    label: str


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    path: str
    points: tuple[Point, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    left: int
    bottom: int
    right: int
    top: int


def timeline(
    checkpoints: Sequence[tuple[int, int, int]], width: int = 760, height: int = 240
) -> Timeline:
    """Log size over time: one point per (issued_at_ms, size, trusted cosignatures)."""
    left, right, top, bottom = 56, width - 16, 16, height - 36
    pts = sorted(checkpoints)
    if not pts:
        return Timeline(width, height, "", (), (), (), left, bottom, right, top)
    t0, t1 = pts[0][0], pts[-1][0]
    s1 = max(p[1] for p in pts) or 1
    span = (t1 - t0) or 1

    def x(t: int) -> float:
        return round(left + (right - left) * ((t - t0) / span if t1 > t0 else 0.5), 1)

    def y(s: int) -> float:
        return round(bottom - (bottom - top) * s / s1, 1)

    points = tuple(
        Point(
            x(t),
            y(s),
            s,
            t,
            k,
            f"checkpoint {s} at {clock(t)}: {k} trusted cosignature(s)",
        )
        for t, s, k in pts
    )
    path = " ".join(f"{'M' if i == 0 else 'L'} {p.x} {p.y}" for i, p in enumerate(points))
    n = 4
    day = 86_400_000
    cut = slice(11, 19) if t1 - t0 < day else slice(5, 16)  # HH:MM:SS, or MM-DD HH:MM
    x_ticks = tuple(
        Tick(x(t0 + span * i // n), bottom + 18, clock(t0 + span * i // n)[cut])
        for i in range(n + 1)
    )
    y_ticks = tuple(Tick(left - 6, y(s1 * i // n), str(s1 * i // n)) for i in range(n + 1))
    return Timeline(width, height, path, points, x_ticks, y_ticks, left, bottom, right, top)


# ------------------------------------------------------------------------------ flows


@dataclass(frozen=True)
class Node:
    x: float
    y: float
    height: float
    label: str
    total: int
    side: str  # left (kind) or right (recipient)


@dataclass(frozen=True)
class Band:
    d: str
    kind: str
    recipient: str
    outcome: str
    sections: int
    notices: int
    title: str


@dataclass(frozen=True)
class FlowChart:
    width: int
    height: int
    nodes: tuple[Node, ...]
    bands: tuple[Band, ...]
    legend: tuple[tuple[str, str], ...]
    node_width: int


def flow_chart(flows: Flows, width: int = 760, gap: float = 14.0) -> FlowChart:
    """A flow diagram: notice kinds on the left, recipients on the right, one band per
    (kind, recipient, outcome), as thick as the sections it carried."""
    node_w, pad_x, pad_y = 12, 170, 12
    kinds: defaultdict[str, int] = defaultdict(int)
    recips: defaultdict[str, int] = defaultdict(int)
    for c in flows.cells:
        kinds[c.kind] += c.sections
        recips[c.recipient] += c.sections
    total = sum(kinds.values())
    rows = max(len(kinds), len(recips), 1)
    height = max(160, 40 * rows + 2 * pad_y)
    if not total:
        return FlowChart(width, height, (), (), _legend(), node_w)
    scale = (height - 2 * pad_y - gap * (rows - 1)) / total

    def column(sizes: dict[str, int], x: float, side: str) -> dict[str, Node]:
        used = sum(sizes.values()) * scale + gap * (len(sizes) - 1)
        y = pad_y + (height - 2 * pad_y - used) / 2
        out = {}
        for label in sorted(sizes):
            h = sizes[label] * scale
            out[label] = Node(x, round(y, 1), round(h, 1), label, sizes[label], side)
            y += h + gap
        return out

    left = column(kinds, pad_x, "left")
    right = column(recips, width - pad_x - node_w, "right")
    out_at = {k: n.y for k, n in left.items()}
    in_at = {r: n.y for r, n in right.items()}
    x0, x1 = pad_x + node_w, width - pad_x - node_w
    xm = (x0 + x1) / 2
    ordered = sorted(flows.cells, key=lambda c: (c.kind, c.recipient, OUTCOMES.index(c.outcome)))
    bands = []
    for c in ordered:
        h = c.sections * scale
        a0, a1 = out_at[c.kind], out_at[c.kind] + h
        b0, b1 = in_at[c.recipient], in_at[c.recipient] + h
        out_at[c.kind], in_at[c.recipient] = a1, b1
        d = (
            f"M {x0} {a0:.1f} C {xm} {a0:.1f}, {xm} {b0:.1f}, {x1} {b0:.1f} "
            f"L {x1} {b1:.1f} C {xm} {b1:.1f}, {xm} {a1:.1f}, {x0} {a1:.1f} Z"
        )
        title = (
            f"{c.kind} → {c.recipient}: {c.sections} section(s) in {c.notices} notice(s) "
            f"{OUTCOME_TEXT[c.outcome]} ({', '.join(c.names)})"
        )
        bands.append(Band(d, c.kind, c.recipient, c.outcome, c.sections, c.notices, title))
    nodes = (*left.values(), *right.values())
    return FlowChart(width, height, nodes, tuple(bands), _legend(), node_w)


def _legend() -> tuple[tuple[str, str], ...]:
    return tuple((o, OUTCOME_TEXT[o]) for o in OUTCOMES)
