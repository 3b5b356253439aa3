"""The operator's port (``metrics_listen``): ``/metrics`` for Prometheus, ``/healthz`` and
``/readyz`` for orchestrators, nothing else (404). Unauthenticated and plain HTTP, so bind
it to a local or management address only.

- ``/healthz``: 200 while the process's event loop answers (liveness).
- ``/readyz``: 200 once the broker serves gRPC and its store answers a read within
  READY_TIMEOUT_S; 503 with the reason otherwise (starting, stopping, store unavailable).
- ``/metrics``: the counters, and gauges read from the store at scrape time (pending
  deliveries, dead letters, log size and head age, certificate expiry).

A small HTTP/1.1 responder on asyncio (one request per connection, GET and HEAD), so it
shares the broker's loop and reads the store through its runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker.errors import FailedPrecondition
from broker.server import metrics
from broker.store.api import DEAD, IN_FLIGHT, PENDING, Store

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

log = logging.getLogger("broker.server")
READY_TIMEOUT_S = 2.0
MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass(frozen=True)
class StoreGauges:
    pending: int
    embargoed: int
    dead: int
    oldest_waiting_ms: int
    overdue: int
    log_size: int
    head_issued_ms: int
    head_cosignatures: int


def read_gauges(store: Store, now_ms: int) -> StoreGauges:
    """One store read for every gauge of the store (a store operation)."""
    snapshot = store.queue_snapshot(now_ms, 1)
    rows = snapshot.recipients
    waiting = [r.oldest_waiting_ms for r in rows if r.oldest_waiting_ms]
    head = store.tlog_checkpoint()
    return StoreGauges(
        pending=sum(r.states.get(PENDING, 0) + r.states.get(IN_FLIGHT, 0) for r in rows),
        embargoed=sum(r.embargoed for r in rows),
        dead=sum(r.states.get(DEAD, 0) + r.controls_dead for r in rows),
        oldest_waiting_ms=min(waiting) if waiting else 0,
        overdue=len(snapshot.overdue),
        log_size=store.tlog_size(),
        head_issued_ms=head.issued_at_ms if head is not None else 0,
        head_cosignatures=len(head.cosignatures) if head is not None else 0,
    )


def certificate_expiry(pem: bytes) -> float:
    """The POSIX time at which the certificate in `pem` expires."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


class OpsPort:
    """The HTTP endpoint. `await OpsPort.bind(listen)` binds (raising FailedPrecondition
    for a port in use); `attach(app)` once the broker app exists; `close()` at the end."""

    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.app: BrokerApp | None = None
        self.cert_expires_at = 0.0
        self.port: int = server.sockets[0].getsockname()[1]

    @classmethod
    async def bind(cls, listen: str) -> OpsPort:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        holder: list[OpsPort] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await holder[0]._handle(reader, writer)

        try:
            server = await asyncio.start_server(handle, host, int(port))
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(
                f"cannot serve metrics on {listen} ({getattr(exc, 'strerror', None) or exc}); "
                "set metrics_listen to a free host:port, or '' to disable"
            ) from exc
        holder.append(cls(server))
        return holder[0]

    def attach(self, app: BrokerApp) -> None:
        """Serve `app`'s readiness and gauges."""
        self.app = app
        self.cert_expires_at = certificate_expiry(app.tls.cert.read_bytes())

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    # -- HTTP ------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=READ_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(head) > MAX_REQUEST_BYTES:
                return
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                return
            method, target = parts[0], parts[1]
            path = target.split("?", 1)[0]
            status, ctype, body = await self._answer(method, path)
            writer.write(
                (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                    f"Content-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    "Cache-Control: no-store\r\n"
                    "Connection: close\r\n\r\n"
                ).encode("latin-1")
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if path not in ("/metrics", "/healthz", "/readyz"):
            return 404, text, b"not found: try /metrics, /healthz or /readyz\n"
        if method not in ("GET", "HEAD"):
            return 405, text, b"use GET\n"
        if path == "/healthz":
            return 200, text, b"ok\n"
        if path == "/readyz":
            why = await self.not_ready()
            metrics.READY.set(0 if why else 1)
            return (503, text, f"not ready: {why}\n".encode()) if why else (200, text, b"ready\n")
        await self.refresh()
        return 200, CONTENT_TYPE_LATEST, generate_latest()

    async def not_ready(self) -> str:
        """Why the broker is not ready ("" when it is)."""
        app = self.app
        if app is None or app.server is None:
            return "starting"
        if app.stopping:
            return "stopping"
        try:
            await asyncio.wait_for(app.runner.call(lambda s: s.tlog_size()), READY_TIMEOUT_S)
        except Exception as exc:  # the store's own error stays in the broker's log
            log.warning("readiness check: store unavailable", extra={"error": type(exc).__name__})
            return "the store does not answer"
        return ""

    async def refresh(self) -> None:
        """Set the gauges from the store (left as they were if the store fails)."""
        app = self.app
        if app is None:
            return
        now = time.time()
        metrics.CERT_EXPIRY.set(self.cert_expires_at - now)
        if app.server is None or app.stopping:
            metrics.READY.set(0)
            return
        try:
            g = await asyncio.wait_for(
                app.runner.call(lambda s: read_gauges(s, int(now * 1000))), READY_TIMEOUT_S
            )
        except Exception as exc:
            metrics.READY.set(0)
            log.warning("metrics: store unavailable", extra={"error": type(exc).__name__})
            return
        metrics.READY.set(1)
        metrics.PENDING.set(g.pending)
        metrics.EMBARGOED.set(g.embargoed)
        metrics.DEAD.set(g.dead)
        metrics.OLDEST_WAITING.set(now - g.oldest_waiting_ms / 1000 if g.oldest_waiting_ms else 0)
        metrics.OVERDUE_REPLIES.set(g.overdue)
        metrics.LOG_SIZE.set(g.log_size)
        metrics.LOG_HEAD_AGE.set(now - g.head_issued_ms / 1000 if g.head_issued_ms else 0)
        metrics.LOG_COSIGNED.set(g.head_cosignatures)
