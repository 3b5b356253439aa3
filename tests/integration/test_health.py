"""gRPC health and reflection on the broker, over the same mutual TLS."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from broker.core.identity import Party

from .conftest import Running

pytestmark = pytest.mark.integration


async def test_health_reports_serving(broker: Running) -> None:
    stub = health_pb2_grpc.HealthStub(broker.channel(Party("agency", "FR-NCB")))
    for service in ("", "broker.v1.AgencyService"):
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_services(broker: Running) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(broker.channel(Party("agency", "FR-NCB")))
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    resp = await call.read()
    await call.done_writing()
    names = {s.name for s in resp.list_services_response.service}
    assert {"broker.v1.AgencyService", "broker.v1.AdminService", "grpc.health.v1.Health"} <= names
    call.cancel()
