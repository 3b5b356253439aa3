"""The report of `broker bench`: one JSON schema, the ratios to the peers, the goals of
issue 8 (met / not met, never asserted anywhere), and a readable table.

Schema "broker-bench/1" (numbers are numbers; a figure that could not be taken is null):

    schema, command, quick, elapsed_s, machine{cpu, cores, kernel, python, load_average},
    config{...}, ed25519_verify_us,
    ours{audience, closed, paced-<rate>..., soak, backlog, capacity},
    peers{nats|rabbitmq: {available, reason | audience, closed, paced-<rate>...,
          server_process, confirms (rabbitmq)}},
    ratios{nats|rabbitmq: {"<mode>.<figure>": ours / peer}},
    goals[{id, goal, value, target, met, detail}], notes[]

A mode's figures (closed, paced-*, soak): notices, errors, late, expected_deliveries,
delivered, deliveries, complete, elapsed_s, notices_per_s, deliveries_per_s,
latency_ms{delivered, receipted}{count, p50, p95, p99, max}, cpu_s / cpu_ms_per_notice
{server, publisher, recipients}, recipient_cpu_ms_per_delivery,
recipient_commits_per_delivery (ours: the inbox's fsync'd commits per delivery; null for the
peers, whose consumers keep nothing), peak_rss_mb{...};
the soak adds rss_mb [[s, MB]...] and trend{...}; the backlog has its own figures, with
recipient_commits_per_delivery over the drain.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from broker.bench.settings import BenchConfig
from broker.bench.stats import ratio, slope_per_minute
from broker.bench.workload import SECTION_SIZES

SCHEMA = "broker-bench/1"
MODE_TAGS_PREFIX = ("closed", "paced-")
# Figures of a mode compared with the peers' (path inside the mode's dict).
RATIO_FIGURES = (
    "notices_per_s",
    "deliveries_per_s",
    *(
        f"latency_ms.{k}.{p}"
        for k in ("delivered", "receipted")
        for p in ("p50", "p95", "p99", "max")
    ),
    "cpu_ms_per_notice.server",
    "cpu_ms_per_notice.publisher",
    "cpu_ms_per_notice.recipients",
    "recipient_cpu_ms_per_delivery",
    "peak_rss_mb.server",
    "peak_rss_mb.publisher",
    "peak_rss_mb.recipients",
)
SOAK_FLAT_MB_PER_MIN = 1.0  # "flat": a least-squares slope at most this
GOAL_QUEUED = 100_000
GOAL_SOAK_S = 600.0


def dig(d: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _mode_tags(results: dict[str, Any]) -> list[str]:
    return [t for t in results if t == "closed" or t.startswith("paced-")]


def ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for tag in _mode_tags(ours):
        if tag not in peer:
            continue
        for fig in RATIO_FIGURES:
            out[f"{tag}.{fig}"] = ratio(dig(ours[tag], fig), dig(peer[tag], fig))
    return out


def soak_trend(soak: dict[str, Any]) -> dict[str, Any]:
    points = [(float(t), float(v)) for t, v in soak.get("rss_mb", [])]
    values = [v for _, v in points]
    slope = slope_per_minute(points)
    return {
        "samples": len(points),
        "seconds": round(points[-1][0], 1) if points else 0.0,
        "rss_start_mb": round(values[0], 1) if values else None,
        "rss_end_mb": round(values[-1], 1) if values else None,
        "rss_max_mb": round(max(values), 1) if values else None,
        "slope_mb_per_min": round(slope, 3) if slope is not None else None,
    }


def _goal(
    gid: str, goal: str, value: float | None, target: str, met: bool | None, detail: str
) -> dict[str, Any]:
    return {"id": gid, "goal": goal, "value": value, "target": target, "met": met, "detail": detail}


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def _peer(peers: dict[str, Any], name: str) -> dict[str, Any]:
    """A peer's results, or {} if it did not run."""
    peer = peers.get(name, {})
    return peer if peer.get("available") else {}


def _vs(ours: dict[str, Any], peer: dict[str, Any], path: str) -> float | None:
    return ratio(dig(ours, path), dig(peer, path))


def goals(
    cfg: BenchConfig, verify_us: float, ours: dict[str, Any], peers: dict[str, Any]
) -> list[dict[str, Any]]:
    """Issue 8 item 3, as measured in this run. `met` is None when the run could not
    decide (a peer skipped, a mode not run, a backlog or soak smaller than the goal's)."""
    nats, rabbit = _peer(peers, "nats"), _peer(peers, "rabbitmq")
    out = []
    v = _vs(ours, nats, "closed.notices_per_s")
    out.append(
        _goal(
            "throughput",
            "end-to-end notices/s (closed loop) vs the NATS pipeline",
            v,
            ">= 1.5",
            _at_least(v, 1.5),
            "ours / NATS: same recipients, payload, processes and concurrency",
        )
    )
    v = _vs(ours, nats, "paced-100.latency_ms.delivered.p99")
    out.append(
        _goal(
            "paced-100-p99",
            "p99 publish-to-verified-delivery at a paced 100 notices/s vs NATS",
            v,
            "<= 1.5",
            _at_most(v, 1.5),
            "ours / NATS (needs 100 in --rates)",
        )
    )
    v = ratio(dig(ours, "capacity.deliveries_per_s"), dig(rabbit, "confirms.confirmed_per_s"))
    out.append(
        _goal(
            "capacity",
            "broker capacity deliveries/s vs RabbitMQ confirmed publishes/s "
            f"({cfg.confirm_in_flight} in flight)",
            v,
            ">= 5",
            _at_least(v, 5.0),
            "receipt-only clients, envelopes sealed ahead",
        )
    )
    cpu = dig(ours, "closed.cpu_ms_per_notice.server")
    v = round(cpu * 1000.0 / verify_us, 2) if cpu is not None and verify_us else None
    out.append(
        _goal(
            "broker-cpu",
            "broker CPU per notice at saturation, in Ed25519 verifies",
            v,
            "<= 3",
            _at_most(v, 3.0),
            f"closed loop; one verify = {verify_us:.1f} us of CPU in this run",
        )
    )
    v = _vs(ours, nats, "closed.recipient_cpu_ms_per_delivery")
    out.append(
        _goal(
            "recipient-cpu",
            "recipients' CPU per delivery vs the NATS consumers'",
            v,
            "<= 2",
            _at_most(v, 2.0),
            "closed loop, ours / NATS",
        )
    )
    v = dig(ours, "closed.recipient_commits_per_delivery")
    out.append(
        _goal(
            "recipient-fsync",
            "recipients: no fsync per delivery (fsync'd inbox commits per delivery)",
            v,
            "< 1",
            None if v is None else v < 1.0,
            "closed loop, ours: SQLite's commit counter of every node's state database",
        )
    )
    queued = dig(ours, "backlog.queued")
    v = dig(ours, "backlog.broker_peak_rss_mb")
    full = queued is not None and queued >= GOAL_QUEUED
    out.append(
        _goal(
            "backlog-rss",
            f"broker peak RSS (MB) with {GOAL_QUEUED:,} deliveries queued",
            v,
            "<= 300",
            _at_most(v, 300.0) if full else None,
            "backlog not run"
            if queued is None
            else f"measured with {queued} queued"
            + ("" if full else " (fewer than the goal's: undecided)"),
        )
    )
    v = (dig(ours, "soak.trend") or {}).get("slope_mb_per_min")
    long_enough = cfg.soak_seconds >= GOAL_SOAK_S
    out.append(
        _goal(
            "soak-flat",
            "broker RSS trend across the soak (least-squares slope, MB/min)",
            v,
            f"<= {SOAK_FLAT_MB_PER_MIN}",
            _at_most(v, SOAK_FLAT_MB_PER_MIN) if long_enough else None,
            "soak not run"
            if "soak" not in ours
            else f"{cfg.soak_seconds:g} s at {cfg.soak_rate:g}/s"
            + ("" if long_enough else " (shorter than the goal's 10 minutes: undecided)"),
        )
    )
    return out


def build(
    cfg: BenchConfig,
    command: str,
    machine: dict[str, Any],
    verify_us: float,
    ours: dict[str, Any],
    peers: dict[str, Any],
    elapsed_s: float,
) -> dict[str, Any]:
    if "soak" in ours:
        ours["soak"]["trend"] = soak_trend(ours["soak"])
    config = {k: v for k, v in asdict(cfg).items() if k not in ("scratch", "notes")}
    config.update(
        {
            "rates": list(cfg.rates),
            "modes": list(cfg.modes),
            "peers": list(cfg.peers),
            "sections": len(SECTION_SIZES),
            "notice_bytes": sum(SECTION_SIZES.values()),
            "durability": "SQLite WAL, synchronous=FULL (fsync per group commit)",
            "policy": True,
            "transparency_log": True,
            "endpoint_crypto": True,
        }
    )
    all_ratios = {name: ratios(ours, peer) for name, peer in peers.items() if peer.get("available")}
    if "rabbitmq" in all_ratios:
        all_ratios["rabbitmq"]["capacity.deliveries_per_s/confirmed_per_s"] = ratio(
            dig(ours, "capacity.deliveries_per_s"),
            dig(peers["rabbitmq"], "confirms.confirmed_per_s"),
        )
    notes = list(cfg.notes)
    notes += [f"{n} skipped: {p['reason']}" for n, p in peers.items() if not p.get("available")]
    return {
        "schema": SCHEMA,
        "command": command,
        "quick": cfg.quick,
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine,
        "config": config,
        "ed25519_verify_us": verify_us,
        "ours": ours,
        "peers": peers,
        "ratios": all_ratios,
        "goals": goals(cfg, verify_us, ours, peers),
        "notes": notes,
    }


# --- the table ----------------------------------------------------------------------


def _f(v: Any, width: int = 8, digits: int = 1) -> str:
    if v is None:
        return "-".rjust(width)
    if isinstance(v, float):
        return f"{v:.{digits}f}".rjust(width)
    return str(v).rjust(width)


def _lat(m: dict[str, Any], kind: str) -> str:
    lat = dig(m, f"latency_ms.{kind}") or {}
    return "/".join(
        "-" if lat.get(p) is None else f"{lat[p]:.0f}" if lat[p] >= 10 else f"{lat[p]:.1f}"
        for p in ("p50", "p95", "p99", "max")
    ).rjust(22)


def _row(name: str, m: dict[str, Any]) -> str:
    cpu = m.get("cpu_ms_per_notice", {})
    return (
        f"  {name:<9}{_f(m.get('notices_per_s'), 10)}{_f(m.get('deliveries_per_s'), 10)}"
        f" {_lat(m, 'delivered')} {_lat(m, 'receipted')}"
        f"{_f(cpu.get('server'), 7, 2)}{_f(cpu.get('publisher'), 7, 2)}"
        f"{_f(cpu.get('recipients'), 7, 2)}{_f(m.get('recipient_cpu_ms_per_delivery'), 8, 3)}"
        f"{_f(dig(m, 'peak_rss_mb.server'), 7, 0)}"
        + ("" if m.get("complete", True) else "  INCOMPLETE")
    )


def text(report: dict[str, Any]) -> str:
    cfg, mach, ours, peers = report["config"], report["machine"], report["ours"], report["peers"]
    lines = [
        f"broker bench: {cfg['recipients']} recipients per notice, ~{cfg['notice_bytes']} B in "
        f"{cfg['sections']} sections, full endpoint crypto ({cfg.get('suite', 'classical')} "
        "suite), fsync, policy and log on",
        f"machine: {mach['cpu']} x{mach['cores']}, Linux {mach['kernel']}, Python {mach['python']},"
        f" load {mach['load_average']} at start; {report['elapsed_s']:.0f} s in all",
        f"publisher concurrency {cfg['concurrency']}, recipients in {cfg['recipient_procs']} "
        f"processes, window {cfg['window']}; "
        f"one Ed25519 verify: {report['ed25519_verify_us']:.1f} us of CPU",
        "",
        f"  {'':<9}{'notices/s':>10}{'deliv/s':>10} {'delivered ms':>22} {'receipted ms':>22}"
        f"{'CPU ms per notice':>21}{'rcp ms':>8}{'server':>7}",
        f"  {'':<9}{'':>10}{'':>10} {'p50/p95/p99/max':>22} {'p50/p95/p99/max':>22}"
        f"{'server':>7}{'pub':>7}{'rcp':>7}{'/deliv':>8}{'RSS MB':>7}",
    ]
    available = {n: p for n, p in peers.items() if p.get("available")}
    for tag in _mode_tags(ours) + (["soak"] if "soak" in ours else []):
        lines.append(f"{tag}")
        lines.append(_row("ours", ours[tag]))
        for name, peer in available.items():
            if tag in peer:
                lines.append(_row(name, peer[tag]))
    commits = [
        f"{tag} {_f(v, 0, 3).strip()}"
        for tag in [*_mode_tags(ours), "soak", "backlog"]
        if (v := dig(ours, f"{tag}.recipient_commits_per_delivery")) is not None
    ]
    if commits:
        lines.append("recipients' fsync'd inbox commits per delivery: " + ", ".join(commits))
    b = ours.get("backlog")
    if b:
        lines += [
            "",
            f"backlog: {b['queued']} deliveries queued for {b['offline_recipient']} (offline) in "
            f"{b['fill_s']:.1f} s ({_f(b['fill_notices_per_s'], 0)}/s); broker RSS "
            f"{b['broker_rss_queued_mb']:.0f} MB queued, peak {b['broker_peak_rss_mb']:.0f} MB; "
            f"drained in {_f(b['drain_s'], 0)} s "
            f"({_f(b['drain_deliveries_per_s'], 0)} deliveries/s)"
            + ("" if b["complete"] else "  INCOMPLETE"),
        ]
    s = dig(ours, "soak.trend")
    if s:
        lines.append(
            f"soak: broker RSS {s['rss_start_mb']} -> {s['rss_end_mb']} MB (max {s['rss_max_mb']}) "
            f"over {s['seconds']} s, slope {s['slope_mb_per_min']} MB/min"
        )
    c = ours.get("capacity")
    if c:
        lines.append(
            f"capacity: {c['deliveries_per_s']:.0f} deliveries/s ({c['notices']} notices sealed "
            f"ahead, receipt-only clients), broker {_f(c['broker_cpu_ms_per_delivery'], 0, 3)} "
            "ms CPU per delivery" + ("" if c["complete"] else "  INCOMPLETE")
        )
    conf = dig(peers, "rabbitmq.confirms")
    if conf:
        lines.append(
            f"rabbitmq: {conf['confirmed_per_s']:.0f} confirmed publishes/s "
            f"({conf['in_flight']} in flight, {conf['message_bytes']} B persistent)"
        )
    for name, rs in report["ratios"].items():
        lines += ["", f"ours / {name}:"]
        for tag in _mode_tags(ours):
            keys = [
                ("notices/s", f"{tag}.notices_per_s"),
                ("p99 delivered", f"{tag}.latency_ms.delivered.p99"),
                ("p99 receipted", f"{tag}.latency_ms.receipted.p99"),
                ("server CPU/notice", f"{tag}.cpu_ms_per_notice.server"),
                ("publisher CPU/notice", f"{tag}.cpu_ms_per_notice.publisher"),
                ("recipient CPU/delivery", f"{tag}.recipient_cpu_ms_per_delivery"),
            ]
            parts = [f"{label} {_f(rs.get(k), 0, 2).strip()}" for label, k in keys if k in rs]
            if parts:
                lines.append(f"  {tag:<10} " + ", ".join(parts))
        extra = rs.get("capacity.deliveries_per_s/confirmed_per_s")
        if extra is not None:
            lines.append(f"  capacity deliveries/s / confirmed publishes/s: {extra:.2f}")
    lines += ["", "goals (issue 8):"]
    for g in report["goals"]:
        met = {True: "met", False: "NOT met", None: "undecided"}[g["met"]]
        value = "-" if g["value"] is None else f"{g['value']:g}"
        lines.append(f"  {met:<10} {g['goal']}: {value} (target {g['target']}; {g['detail']})")
    for n in report["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)
