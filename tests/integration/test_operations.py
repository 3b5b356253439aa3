"""What operators see of a real broker: its log lines (ids and digests, never content, in
both formats) and its operator port (/metrics with the store's gauges, /healthz, /readyz,
404 elsewhere)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker import pki
from broker.bundles import read_bundle_dir
from broker.client.node import ReceivedNotice
from broker.core.identity import Party
from broker.logs import JsonFormatter, TextFormatter
from broker.sandbox import REPO_POLICIES, Deployment
from broker.server.opsport import OpsPort

from .conftest import Running, StartBroker
from .helpers import RED_SECTIONS
from .test_admin import admin

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read().decode()


async def fetch(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(get, f"http://127.0.0.1:{port}{path}")


def ops_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "broker.ops"]


async def wait_for_line(
    caplog: pytest.LogCaptureFixture, match: Callable[[logging.LogRecord], bool]
) -> logging.LogRecord:
    for _ in range(200):
        found = [r for r in ops_records(caplog) if match(r)]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no such line; saw {[r.getMessage() for r in ops_records(caplog)]}")


def event(name: str, **fields: object) -> Callable[[logging.LogRecord], bool]:
    return lambda r: (
        getattr(r, "event", None) == name
        and all(getattr(r, k, None) == v for k, v in fields.items())
    )


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def test_every_step_logs_a_line_with_ids_and_never_content(
    broker: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker.ops")
    async with broker.node("FR-NCB") as fr:
        sent = await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
    published = await wait_for_line(caplog, event("notice.published", notice_id=sent.notice_id))
    assert published.originator == "FR-NCB"  # type: ignore[attr-defined]
    assert published.kind == "interpol.red"  # type: ignore[attr-defined]
    assert published.header_digest == sent.header_digest.hex()[:32]  # type: ignore[attr-defined]
    assert "DE-BKA" in published.to  # type: ignore[attr-defined]
    assert published.withheld >= 1  # type: ignore[attr-defined] # IT-BORDER: no biometrics

    stop = asyncio.Event()
    got: list[ReceivedNotice] = []

    async def handler(notice: ReceivedNotice) -> None:
        got.append(notice)

    async with broker.node("DE-BKA") as de:
        listening = asyncio.create_task(de.listen(handler, stop=stop))
        item = f"{sent.notice_id}/v1"
        delivered = await wait_for_line(
            caplog,
            lambda r: (
                event("delivery.delivered", recipient="DE-BKA")(r)
                and item in getattr(r, "deliveries", ())
            ),
        )
        stop.set()
        await listening
    assert [n.notice_id for n in got] == [sent.notice_id]
    assert delivered.count == len(delivered.deliveries)  # type: ignore[attr-defined]
    sent_line = await wait_for_line(caplog, event("delivery.sent", recipient="DE-BKA"))
    assert item in sent_line.deliveries  # type: ignore[attr-defined]
    assert sent_line.attempts[sent_line.deliveries.index(item)] == 1  # type: ignore[attr-defined]
    assert "deliveries=" in TextFormatter().format(sent_line)

    async with admin(broker) as a:
        await a.set_status("IT-BORDER", "suspended", "audit")
        await a.activate(read_bundle_dir(REPO_POLICIES), "go")
    suspended = await wait_for_line(caplog, event("agency.suspended", agency="IT-BORDER"))
    assert suspended.admin == "alice" and suspended.status == "suspended"  # type: ignore[attr-defined]
    activated = await wait_for_line(caplog, event("policy.activate"))
    assert activated.admin == "alice"  # type: ignore[attr-defined]

    # No line carries a section's content, in either format; the text format keeps the fields.
    secrets = [v.decode() for v in RED_SECTIONS.values()]
    text, js = TextFormatter(), JsonFormatter()
    for record in ops_records(caplog):
        for line in (text.format(record), js.format(record)):
            assert not any(s in line for s in secrets), line
    line = text.format(published)
    assert f"event=notice.published notice_id={sent.notice_id} version=1" in line
    assert "originator=FR-NCB kind=interpol.red" in line
    assert json.loads(js.format(published))["notice_id"] == sent.notice_id


async def test_a_revoked_certificate_is_refused_with_a_line(
    deployment: Deployment, start_broker: StartBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker.ops")
    mallory = Party("admin", "mallory")
    pki.issue_certificate(deployment.keys_dir, mallory)
    pki.revoke(deployment.keys_dir, mallory)
    running: Running = await start_broker(provisioned=False, witness=False)
    from broker.v1 import admin_pb2, admin_pb2_grpc

    async with running.channel(mallory) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListAgencies(admin_pb2.ListAgenciesRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    line = await wait_for_line(caplog, event("handshake.refused"))
    assert line.party == mallory.uri()  # type: ignore[attr-defined]
    assert "revoked" in line.why  # type: ignore[attr-defined]
    assert line.peer.startswith("ipv4:127.0.0.1:")  # type: ignore[attr-defined]


async def test_operator_port_answers_health_readiness_and_gauges(broker: Running) -> None:
    ops = await OpsPort.bind("127.0.0.1:0")
    try:
        assert await fetch(ops.port, "/healthz") == (200, "ok\n")
        assert await fetch(ops.port, "/readyz") == (503, "not ready: starting\n")
        ops.attach(broker.app)
        assert await fetch(ops.port, "/readyz") == (200, "ready\n")
        for path in ("/", "/metrics/x", "/admin", "/healthz/../metrics"):
            status, body = await fetch(ops.port, path)
            assert status == 404 and "/metrics" in body, path
        before = (await fetch(ops.port, "/metrics"))[1]
        async with broker.node("FR-NCB") as fr:
            await fr.publish(kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS)
        status, text = await fetch(ops.port, "/metrics")
        assert status == 200
        # Counters are the process's: compare with the scrape before the publish.
        for name in ("broker_deliveries_withheld_total", "broker_notices_published_total"):
            assert metric(text, name) >= metric(before, name) + 1, name
        assert metric(before, "broker_deliveries_pending") == 0
        # DE-BKA and IT-BORDER (and EU-HUB) wait for it; IT-BORDER was refused biometrics.
        assert metric(text, "broker_deliveries_pending") >= 2
        assert metric(text, "broker_deliveries_dead") == 0
        assert metric(text, "broker_log_size") >= 1
        assert metric(text, "broker_log_head_age_seconds") >= 0
        assert metric(text, "broker_ready") == 1
        # The sandbox issues the broker's certificate for 825 days.
        expiry = metric(text, "broker_certificate_expiry_seconds")
        assert 800 * 86400 < expiry <= 826 * 86400
        # Stopping: /readyz says so while the process still answers /healthz.
        broker.app.stopping = True
        assert await fetch(ops.port, "/readyz") == (503, "not ready: stopping\n")
        assert (await fetch(ops.port, "/healthz"))[0] == 200
        broker.app.stopping = False
        # The gRPC health service is untouched by all this.
        stub = health_pb2_grpc.HealthStub(broker.channel(Party("agency", "FR-NCB")))
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await ops.close()


async def test_a_taken_metrics_port_is_one_clear_error() -> None:
    first = await OpsPort.bind("127.0.0.1:0")
    try:
        from broker.errors import FailedPrecondition

        with pytest.raises(FailedPrecondition, match=r"cannot serve metrics on 127\.0\.0\.1:"):
            await OpsPort.bind(f"127.0.0.1:{first.port}")
    finally:
        await first.close()


async def test_a_broker_process_logs_text_lines_with_their_fields_and_serves_its_port(
    deployment: Deployment, tmp_path: Path
) -> None:
    from broker.client.witness import run_witness
    from broker.sandbox import WITNESS_ID, provision

    from .test_crash import free_port, node, start_serve

    text = deployment.config_file.read_text()
    deployment.config_file.write_text(
        text.replace("[server]\n", '[server]\nlog_format = "text"\n', 1)
    )
    port, mport = free_port(), free_port()
    log = tmp_path / "broker.log"
    proc = start_serve(deployment, port, log, metrics=f"127.0.0.1:{mport}")
    try:
        assert await fetch(mport, "/readyz") == (200, "ready\n")
        await provision(deployment, f"127.0.0.1:{port}")
        witness_stop = asyncio.Event()
        witness = asyncio.create_task(
            run_witness(
                deployment.keys_dir,
                WITNESS_ID,
                f"127.0.0.1:{port}",
                deployment.root / "witness.json",
                stop=witness_stop,
                interval_s=0.1,
            )
        )
        try:
            async with node(deployment, "FR-NCB", port) as fr:
                sent = await fr.publish(
                    kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS
                )
        finally:
            witness_stop.set()
            await witness
        status, metrics_text = await fetch(mport, "/metrics")
        assert status == 200 and metric(metrics_text, "broker_deliveries_pending") >= 1
        assert (await fetch(mport, "/nothing"))[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = log.read_text().splitlines()
    published = [line for line in lines if "event=notice.published" in line]
    assert len(published) == 1, lines
    line = published[0]
    assert " INFO broker.ops: notice published " in line
    for field in (
        f"notice_id={sent.notice_id}",
        "version=1",
        "originator=FR-NCB",
        "kind=interpol.red",
        f"header_digest={sent.header_digest.hex()[:32]}",
    ):
        assert field in line, line
    assert any("event=policy.activate" in x and "admin=registrar" in x for x in lines)
    assert any("event=agency.sign" in x for x in lines)  # provision signs the registry
    assert not any(v.decode() in "\n".join(lines) for v in RED_SECTIONS.values())
    assert not any(x.lstrip().startswith("{") for x in lines)  # text, not JSON
