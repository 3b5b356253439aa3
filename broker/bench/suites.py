"""`broker bench suites`: the classical and the hybrid suite side by side, in one run.

Two parts, both suites measured in the same process, interleaved so that load on the
machine falls on both alike:

1. envelope layer (in process, no I/O): sizes of an envelope, of one recipient's
   delivery, of a key statement and a receipt batch signature; time to seal (with
   `recipients` wraps), to check (the broker's Publish check), to open (a recipient);
2. end to end: a throwaway deployment whose agencies all hold PQ keys, a real broker on
   127.0.0.1 with mutual TLS, one publisher node and `recipients` recipient nodes on the
   SDK; `notices` notices per suite, one at a time, alternating suites; the latency from
   publish until every recipient opened it, and notices per second.

Ratios are hybrid / classical (sizes, times) and classical / hybrid (throughput), so a
ratio above 1 is what the hybrid suite costs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.bench.workload import red_sections, section_inputs
from broker.core import envelope as env
from broker.core import hybrid as hy
from broker.core import receipts as rcp
from broker.core.envelope_suite import ed25519_public_key
from broker.v1 import notice_pb2

SUITES = {"classical": env.SUITE, "hybrid": env.SUITE_HYBRID}
SECTIONS = red_sections(  # about the bench's notice: ~2 KB in four sections
    {
        "identity": b"DOE, John; born 1970-01-01; FR passport 12AB34567; " * 4,
        "case_facts": b"Armed robbery, Lyon, 2026-03-02; vehicle seen leaving eastbound. " * 12,
        "judicial": b"warrant 2026/LY/0042, tribunal judiciaire de Lyon " * 4,
        "biometrics": os.urandom(512),
    }
)


@dataclass(frozen=True)
class _Party:
    ed_seed: bytes
    pq_seed: bytes
    x_public: bytes
    x_private: bytes
    kem_public: bytes
    kem_private: bytes

    @property
    def hybrid_key(self) -> bytes:
        return self.ed_seed + self.pq_seed

    @property
    def verify_key(self) -> bytes:
        return ed25519_public_key(self.ed_seed) + hy.mldsa_public_key(self.pq_seed)


def _party() -> _Party:
    from cryptography.hazmat.primitives.asymmetric import x25519

    x = x25519.X25519PrivateKey.generate()
    kem = os.urandom(hy.MLKEM_SEED_SIZE) + x25519.X25519PrivateKey.generate().private_bytes_raw()
    return _Party(
        os.urandom(32),
        os.urandom(32),
        x.public_key().public_bytes_raw(),
        x.private_bytes_raw(),
        hy.kem_public_key_bytes(kem),
        kem,
    )


def _header(n: int) -> notice_pb2.NoticeHeader:
    now = int(time.time() * 1000)
    return notice_pb2.NoticeHeader(
        notice_id=f"00000000-0000-4000-8000-{n:012d}",
        version=1,
        originator="FR-NCB",
        kind="interpol.red",
        purpose="locate_arrest",
        data_subject=notice_pb2.DATA_SUBJECT_SUSPECT,
        tlp=notice_pb2.TLP_AMBER,
        created_at_ms=now,
        expires_at_ms=now + 86_400_000,
    )


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": statistics.median(ordered) * 1000,
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


def envelope_layer(recipients: int, rounds: int) -> dict[str, Any]:
    """Sizes and seal / check / open times of both suites (see the module docstring)."""
    origin = _party()
    parties = {f"R{i:03d}": _party() for i in range(recipients)}
    sections = section_inputs(SECTIONS)
    inputs = [
        env.RecipientInput(a, p.x_public, frozenset(SECTIONS), p.kem_public)
        for a, p in parties.items()
    ]
    keys = {"classical": origin.ed_seed, "hybrid": origin.hybrid_key}
    verify = {"classical": ed25519_public_key(origin.ed_seed), "hybrid": origin.verify_key}
    times: dict[str, dict[str, list[float]]] = {
        s: {"seal": [], "check": [], "open": []} for s in SUITES
    }
    sizes: dict[str, dict[str, int]] = {}
    first = next(iter(parties))
    for i in range(rounds):
        for name, suite in SUITES.items():  # interleaved
            t0 = time.perf_counter()
            envelope = env.seal(
                _header(i),
                notice_pb2.OriginatorRestrictions(),
                sections,
                inputs,
                keys[name],
                os.urandom,
                suite=suite,
            )
            t1 = time.perf_counter()
            env.check_envelope(envelope, verify[name])
            t2 = time.perf_counter()
            delivery = env.delivery_for(envelope, first, SECTIONS)
            p = parties[first]
            t3 = time.perf_counter()
            env.open_delivery(delivery, first, p.x_private, verify[name], p.x_public, p.kem_private)
            t4 = time.perf_counter()
            times[name]["seal"].append(t1 - t0)
            times[name]["check"].append(t2 - t1)
            times[name]["open"].append(t4 - t3)
            if i == 0:
                wrap = notice_pb2.WrapLeaf.FromString(envelope.wraps[0].leaf)
                sizes[name] = {
                    "envelope_bytes": envelope.ByteSize(),
                    "delivery_bytes": delivery.ByteSize(),
                    "wrap_bytes": len(wrap.sealed),
                    "header_signature_bytes": len(envelope.header.signature),
                    "receipt_signature_bytes": len(_receipt_signature(keys[name])),
                    "verify_key_bytes": len(verify[name]),
                    "encryption_public_key_bytes": hy.KEM_PUBLIC_SIZE if name == "hybrid" else 32,
                }
    out: dict[str, Any] = {"recipients": recipients, "rounds": rounds, "sizes": sizes}
    out["times_ms"] = {s: {k: _ms(v) for k, v in t.items()} for s, t in times.items()}
    out["ratios"] = {
        **{
            k: sizes["hybrid"][k] / sizes["classical"][k]
            for k in ("envelope_bytes", "delivery_bytes")
        },
        **{
            f"{k}_p50": out["times_ms"]["hybrid"][k]["p50"] / out["times_ms"]["classical"][k]["p50"]
            for k in ("seal", "check", "open")
        },
    }
    return out


def _receipt_signature(key: bytes) -> bytes:
    receipt = notice_pb2.Receipt(
        notice_id="00000000-0000-4000-8000-000000000000",
        version=1,
        recipient="R000",
        header_digest=bytes(32),
    )
    return bytes(rcp.sign_receipts("R000", [receipt], key).signature)


# --- end to end --------------------------------------------------------------------------


async def _end_to_end(root: Path, recipients: int, notices: int) -> dict[str, Any]:
    from broker.client.node import AgencyNode, NodeConfig, ReceivedNotice
    from broker.client.witness import run_witness
    from broker.sandbox import DEMO_AGENCIES, WITNESS_ID, AgencySpec, create_deployment, provision
    from broker.server.app import BrokerApp

    police = DEMO_AGENCIES[1]  # DE-BKA's profile, under other ids
    extra = tuple(
        AgencySpec(f"D{i:02d}-BKA", "DE", police.roles, "bench recipient", purposes=police.purposes)
        for i in range(recipients)
    )
    agencies = (DEMO_AGENCIES[0], *extra, *(a for a in DEMO_AGENCIES if a.id == WITNESS_ID))
    d = create_deployment(root / "deployment", agencies, pq=True)
    app = BrokerApp(d.server_config(expiry_interval_s=0.5))
    port = await app.start()
    target = f"127.0.0.1:{port}"
    stop = asyncio.Event()
    witness = None
    nodes: list[AgencyNode] = []
    try:
        await provision(d, target)
        witness = asyncio.create_task(
            run_witness(d.keys_dir, WITNESS_ID, target, root / "w.json", stop=stop, interval_s=0.1)
        )

        def node(agency: str) -> AgencyNode:
            n = AgencyNode(NodeConfig(agency, target, d.keys_dir, root / "nodes"))
            nodes.append(n)
            return n

        fr = node("FR-NCB")
        ids = [a.id for a in extra]
        opened: dict[str, set[str]] = {}
        done: dict[str, asyncio.Event] = {}

        def handler_for(agency: str) -> Callable[[ReceivedNotice], Any]:
            async def handle(notice: ReceivedNotice) -> None:
                seen = opened.setdefault(notice.notice_id, set())
                seen.add(agency)
                if len(seen) == len(ids) and notice.notice_id in done:
                    done[notice.notice_id].set()

            return handle

        listeners = []
        for agency in ids:
            n = node(agency)
            listeners.append(asyncio.create_task(n.listen(handler_for(agency), stop=stop)))
        latencies: dict[str, list[float]] = {s: [] for s in SUITES}
        busy: dict[str, float] = dict.fromkeys(SUITES, 0.0)
        for i in range(notices + 2):  # two warm-up notices per suite, not counted
            for name in SUITES:
                t0 = time.perf_counter()
                sent = await fr.publish(
                    kind="interpol.red",
                    purpose="locate_arrest",
                    sections=SECTIONS,
                    recipients=ids,
                    suite=name,
                )
                event = done.setdefault(sent.notice_id, asyncio.Event())
                if len(opened.get(sent.notice_id, ())) == len(ids):
                    event.set()
                await asyncio.wait_for(event.wait(), 60)
                elapsed = time.perf_counter() - t0
                if i >= 2:
                    latencies[name].append(elapsed)
                    busy[name] += elapsed
        stop.set()
        await asyncio.gather(*listeners)
    finally:
        stop.set()
        for n in nodes:
            await n.close()
        if witness is not None:
            await witness
        await app.stop(grace=0.5)
    out: dict[str, Any] = {"recipients": recipients, "notices_per_suite": notices}
    out["latency_ms"] = {s: _ms(v) for s, v in latencies.items()}
    out["notices_per_s"] = {s: notices / busy[s] for s in SUITES}
    out["ratios"] = {
        "latency_p50": out["latency_ms"]["hybrid"]["p50"] / out["latency_ms"]["classical"]["p50"],
        "throughput": out["notices_per_s"]["classical"] / out["notices_per_s"]["hybrid"],
    }
    return out


def run(
    recipients: int,
    rounds: int,
    notices: int,
    scratch: Path | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Run both parts; returns the report (schema broker-bench-suites/1)."""
    progress(f"envelope layer: {rounds} rounds x 2 suites, {recipients} recipients")
    layer = envelope_layer(recipients, rounds)
    root = Path(tempfile.mkdtemp(prefix="bench-suites-", dir=scratch))
    try:
        progress(f"end to end: {notices} notices x 2 suites to {recipients} recipients")
        e2e = asyncio.run(_end_to_end(root, recipients, notices)) if notices > 0 else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"schema": "broker-bench-suites/1", "envelope": layer, "end_to_end": e2e}


def text(report: dict[str, Any]) -> str:
    """The report as a table."""
    layer = report["envelope"]
    s, t, r = layer["sizes"], layer["times_ms"], layer["ratios"]
    lines = [
        f"broker bench suites: classical ({env.SUITE}) vs hybrid ({env.SUITE_HYBRID})",
        f"envelope layer, {layer['recipients']} recipients, ~2 KB in 4 sections, "
        f"{layer['rounds']} rounds",
        f"  {'':<30}{'classical':>12}{'hybrid':>12}{'ratio':>8}",
    ]
    for key in s["classical"]:
        c, h = s["classical"][key], s["hybrid"][key]
        lines.append(f"  {key:<30}{c:>12,}{h:>12,}{h / c:>8.2f}")
    for key in ("seal", "check", "open"):
        c, h = t["classical"][key]["p50"], t["hybrid"][key]["p50"]
        lines.append(f"  {key + ' p50 ms':<30}{c:>12.2f}{h:>12.2f}{r[key + '_p50']:>8.2f}")
    e2e = report.get("end_to_end")
    if e2e:
        lat, tput = e2e["latency_ms"], e2e["notices_per_s"]
        lines += [
            f"end to end (real broker, mTLS, {e2e['recipients']} recipients, "
            f"{e2e['notices_per_suite']} notices per suite, one at a time)",
            f"  {'publish to all opened p50 ms':<30}{lat['classical']['p50']:>12.1f}"
            f"{lat['hybrid']['p50']:>12.1f}{e2e['ratios']['latency_p50']:>8.2f}",
            f"  {'publish to all opened p95 ms':<30}{lat['classical']['p95']:>12.1f}"
            f"{lat['hybrid']['p95']:>12.1f}"
            f"{lat['hybrid']['p95'] / lat['classical']['p95']:>8.2f}",
            f"  {'notices/s (sequential)':<30}{tput['classical']:>12.1f}{tput['hybrid']:>12.1f}"
            f"{e2e['ratios']['throughput']:>8.2f}  (classical / hybrid)",
        ]
    return "\n".join(lines)
