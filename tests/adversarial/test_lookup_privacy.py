"""The broker never receives a selector in clear.

Runs the whole demo (three indexed notices, two border checks, the lifecycle and the
audit) with every request that reaches a gRPC server of this process recorded (the
broker's and the lookup-key service's), every log record kept, and then searches the
recordings, the logs and every byte of the broker's and the key service's data
directories (SQLite files with their WAL) for the demo's selectors: as written, in
every canonical form, and as OPRF inputs. None may be found.

Positive controls keep the test honest: the recordings hold the Lookup requests and
their tokens, and the database holds the tokens, so the search looks where they are.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker import demo, demo_lookup
from broker.core.selectors import canonical_forms, oprf_input, parse_selector
from broker.sandbox import Deployment

pytestmark = pytest.mark.integration


class Recorder(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Keeps the bytes of every request message a server receives."""

    def __init__(self, sink: list[tuple[str, bytes]]) -> None:
        self.sink = sink

    def _keep(self, method: str, request: Any) -> None:
        data = request if isinstance(request, bytes) else request.SerializeToString()
        self.sink.append((method, data))

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        method = details.method
        if handler is None:
            return None
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                self._keep(method, request)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            inner_stream = handler.stream_stream

            async def stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
                async def recorded() -> AsyncIterator[Any]:
                    async for r in requests:
                        self._keep(method, r)
                        yield r

                async for response in inner_stream(recorded(), context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.__dict__}")


def needles() -> set[bytes]:
    """Every spelling of every demo selector the broker must never see."""
    texts = [*(t for ts in demo_lookup.INDEXED.values() for t in ts)]
    texts += [t for _label, ts in demo_lookup.TRAVELLERS for t in ts]
    out: set[bytes] = set()
    for text in texts:
        selector = parse_selector(text)
        for _name, value in selector.fields:
            if len(value) >= 6:  # shorter fields (a country code) are not selectors
                out |= {value.encode(), value.upper().encode(), value.lower().encode()}
        for form in canonical_forms(selector):
            out |= {form.encode(), form.split(":", 1)[1].encode(), oprf_input(form)}
            out.add(form.rsplit(":", 1)[1].encode())  # a number, a date alone
    # the names and numbers on their own
    out |= {b"DUPONT", b"Dupont", b"dupont", b"MUELLER", b"Mueller", b"BIANCHI", b"ROSSI"}
    out |= {b"19FR23456", b"YA7654321", b"L01X00T47", b"GE123XY", b"GE 123 XY"}
    out |= {b"1981-03-14", b"14.03.1981", b"1988-06-02", b"02.06.1988", b"1975-05-30"}
    return {n for n in out if len(n) >= 6}


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def test_no_demo_selector_reaches_the_broker(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[tuple[str, bytes]] = []
    real_server = grpc.aio.server

    def recording_server(*args: Any, **kwargs: Any) -> Any:
        kwargs["interceptors"] = [*kwargs.get("interceptors", ()), Recorder(received)]
        return real_server(*args, **kwargs)

    monkeypatch.setattr(grpc.aio, "server", recording_server)
    keep = Keep()
    root_logger = logging.getLogger()
    root_logger.addHandler(keep)
    level = root_logger.level
    root_logger.setLevel(logging.DEBUG)
    try:
        summary = await demo.run_demo(deployment, say=lambda _line: None)
    finally:
        root_logger.removeHandler(keep)
        root_logger.setLevel(level)

    checks = summary["border_checks"]
    assert checks["notified"] == "FR-NCB"  # type: ignore[index]
    stored = files_under(deployment.root / "broker") | files_under(deployment.root / "lookup")
    assert any(p.endswith("broker.sqlite3") for p in stored)
    logs = "\n".join(keep.lines).encode()

    # Positive controls: the Lookup requests were recorded, and their tokens are in there.
    lookups = [data for method, data in received if method.endswith("/Lookup")]
    evaluations = [data for method, data in received if method.endswith("/Evaluate")]
    assert len(lookups) >= 2 and len(evaluations) >= 2
    from broker.v1 import lookup_pb2

    token = lookup_pb2.LookupRequest.FromString(lookups[0]).tokens[0]
    db = b"".join(stored.values())
    assert token in db  # traveller 1's passport token: in the index (it hit)
    assert b"FR-NCB" in db and b"border_control" in db  # the search reads real content

    found = []
    searched = needles()
    assert len(searched) > 40
    for needle in sorted(searched):
        for method, data in received:
            if needle in data:
                found.append((needle, method))
        for path, data in stored.items():
            if needle in data:
                found.append((needle, path))
        if needle in logs:
            found.append((needle, "logs"))
    assert found == []
