"""The peers (NATS JetStream, RabbitMQ) in the same run as ours, against the local servers.

They run when BROKER_TEST_PEERS=1 (.ci/run sets it and starts the servers) and then
fail loudly if a server is unreachable; without it they skip and say how to run them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from broker.bench import nats_peer, rabbitmq_peer, run
from broker.bench.settings import BenchConfig

pytestmark = pytest.mark.integration

if os.environ.get("BROKER_TEST_PEERS") != "1":
    pytest.skip(
        "peer tests need the local NATS (JetStream, 127.0.0.1:4222) and RabbitMQ "
        "(127.0.0.1:5672): run with BROKER_TEST_PEERS=1, as .ci/run does",
        allow_module_level=True,
    )


def tiny(tmp_path: Path, **kw: Any) -> BenchConfig:
    base = {
        "recipients": 2,
        "recipient_procs": 1,
        "concurrency": 2,
        "closed_seconds": 0.5,
        "rates": (20.0,),
        "paced_seconds": 0.5,
        "capacity_notices": 6,
        "confirm_seconds": 0.3,
        "confirm_in_flight": 16,
        "drain_timeout_s": 60.0,
        "modes": ("closed", "paced", "capacity"),
        "require_peers": True,
        "scratch": tmp_path,
    }
    base.update(kw)
    return BenchConfig(**base)  # type: ignore[arg-type]


def test_servers_answer() -> None:
    """Loud, specific failures when a server is down (rather than a skipped peer)."""
    assert nats_peer.reachable(nats_peer.DEFAULT_URL) is None
    assert rabbitmq_peer.reachable(rabbitmq_peer.DEFAULT_URL) is None


def test_peers_beside_ours(tmp_path: Path) -> None:
    report = run.run(tiny(tmp_path), "test")
    for name in ("nats", "rabbitmq"):
        peer = report["peers"][name]
        assert peer["available"] is True
        assert sorted(peer["audience"]) == ["DE-POL", "IT-POL"]
        for tag in ("closed", "paced-20"):
            m = peer[tag]
            assert m["errors"] == 0, m["first_error"]
            assert m["complete"] and m["deliveries"] == m["expected_deliveries"] == 2 * m["notices"]
            lat = m["latency_ms"]["delivered"]
            assert lat["count"] == m["deliveries"]
            assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
            assert m["cpu_ms_per_notice"]["publisher"] > 0
            assert m["recipient_cpu_ms_per_delivery"] > 0
        ratios = report["ratios"][name]
        for key in (
            "closed.notices_per_s",
            "paced-20.latency_ms.delivered.p99",
            "closed.recipient_cpu_ms_per_delivery",
            "closed.cpu_ms_per_notice.publisher",
        ):
            assert ratios[key] is not None and ratios[key] > 0, key
        assert ratios["closed.notices_per_s"] == pytest.approx(
            report["ours"]["closed"]["notices_per_s"] / peer["closed"]["notices_per_s"], rel=0.01
        )
    confirms = report["peers"]["rabbitmq"]["confirms"]
    assert confirms["confirmed"] > 0 and confirms["in_flight"] == 16
    assert report["ratios"]["rabbitmq"]["capacity.deliveries_per_s/confirmed_per_s"] > 0
    goals = {g["id"]: g for g in report["goals"]}
    for gid in ("throughput", "capacity", "recipient-cpu", "broker-cpu"):
        assert goals[gid]["value"] is not None and goals[gid]["met"] in (True, False), gid
    assert goals["paced-100-p99"]["met"] is None  # this run paced at 20/s only
    assert goals["soak-flat"]["detail"] == "soak not run"
    assert goals["backlog-rss"]["detail"] == "backlog not run"


def test_unreachable_peer_is_an_error_when_required(tmp_path: Path) -> None:
    from broker.errors import Unavailable

    config = tiny(tmp_path, modes=("closed",), peers=("nats",), nats_url="nats://127.0.0.1:9")
    with pytest.raises(
        Unavailable, match=r"NATS JetStream at nats://127\.0\.0\.1:9 is unreachable"
    ):
        run.run(config, "test")


def test_unreachable_peer_is_skipped_and_said(tmp_path: Path) -> None:
    config = tiny(
        tmp_path,
        modes=("closed",),
        peers=("rabbitmq",),
        rabbitmq_url="amqp://guest:guest@127.0.0.1:9/",
        require_peers=False,
    )
    report = run.run(config, "test")
    assert report["peers"]["rabbitmq"]["available"] is False
    assert "unreachable" in report["peers"]["rabbitmq"]["reason"]
    assert report["ratios"] == {}
    assert any("rabbitmq skipped" in n for n in report["notes"])
