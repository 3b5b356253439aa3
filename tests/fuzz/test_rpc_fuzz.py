"""Every RPC of every service, fuzzed against a real `broker serve` over mutual TLS: requests
drawn from the descriptors (tests/fuzz/strategies.py) and arbitrary bytes. The broker must
answer each with a status that names the problem, never INTERNAL or UNKNOWN, never hang,
never die, and log no unexpected error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings

from broker import pki
from broker.core.identity import Party
from broker.sandbox import ADMIN_ID, DEMO_AGENCIES, Deployment, create_deployment, provision

from .strategies import SERVICES, request_bytes

pytestmark = [pytest.mark.integration]
METHODS = [(s, m) for s in SERVICES for m in s.methods]
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}


class Broker:
    def __init__(self, d: Deployment, log: Path) -> None:
        self.deployment = d
        self.log = log
        port_file = d.root / "port"
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "broker.cli.main",
                    "serve",
                    "--config",
                    str(d.config_file),
                    "--listen",
                    "127.0.0.1:0",
                    "--metrics-listen",
                    "",
                    "--port-file",
                    str(port_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "broker did not start"
            time.sleep(0.05)
        self.target = f"127.0.0.1:{port_file.read_text()}"
        self.channels: dict[str, grpc.Channel] = {}

    def channel(self, party: Party) -> grpc.Channel:
        key = party.uri()
        if key not in self.channels:
            files = pki.load_party(self.deployment.keys_dir, party)
            creds = grpc.ssl_channel_credentials(
                root_certificates=files.ca_cert.read_bytes(),
                private_key=files.key.read_bytes(),
                certificate_chain=files.cert.read_bytes(),
            )
            self.channels[key] = grpc.secure_channel(self.target, creds)
        return self.channels[key]

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("rpc-fuzz")
    deployment = create_deployment(root, DEMO_AGENCIES)
    broker = Broker(deployment, root / "broker.log")
    try:
        asyncio.run(provision(deployment, broker.target))
        yield broker
        assert broker.proc.poll() is None, "the broker died under fuzzing"
    finally:
        broker.close()
    log = broker.log.read_text()
    assert "unexpected error in RPC" not in log, log[-4000:]


def _caller(service: str) -> Party:
    if service == "AdminService":
        return Party("admin", ADMIN_ID)
    return Party("agency", "FR-NCB")


@pytest.mark.parametrize(("service", "method"), METHODS, ids=lambda v: v.name)
def test_rpc_answers_every_input_with_a_clear_status(
    served: Broker, service: object, method: MethodDescriptor
) -> None:
    from google.protobuf.message_factory import GetMessageClass

    cls = GetMessageClass(method.input_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    channel = served.channel(_caller(method.containing_service.name))

    @settings(
        max_examples=15, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    @given(request_bytes(cls))
    def answers(data: bytes) -> None:
        try:
            if method.server_streaming:
                for _ in channel.stream_stream(path)(iter([data]), timeout=30):
                    pass
            else:
                channel.unary_unary(path)(data, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            assert code not in BAD, f"{method.name}: {code} {exc.details()}"  # type: ignore[attr-defined]
            assert len((exc.details() or "").encode()) <= 1024  # type: ignore[attr-defined]

    answers()
