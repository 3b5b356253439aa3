"""Failures that name their cause: the real `broker` command as a subprocess against a
real broker (or none), each failure one line saying what to do, well within the
subprocess's time bound (gRPC alone retried for ~12 s and ended in core text)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker import pki
from broker.core.identity import Party
from broker.sandbox import ADMIN_ID, AUDITOR_ID, Deployment, create_deployment

from .certs import resign
from .test_crash import free_port, start_serve

pytestmark = pytest.mark.integration

BOUND_S = 8  # the subprocess's bound: the checks themselves give up after ~2 s


def run(*args: str, keys: Path, target: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "BROKER_"))}
    env.update(BROKER_KEYS=str(keys), BROKER_TARGET=target)
    return subprocess.run(
        [sys.executable, "-m", "broker.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=BOUND_S,
        check=False,
        env=env,
    )


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    """The failure's single stderr line (gRPC core says nothing of its own)."""
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("broker: error: "), lines
    return lines[0]


@pytest.fixture
def served(deployment: Deployment, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = start_serve(deployment, port, tmp_path / "broker.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def publish_args(agency: str = "FR-NCB") -> list[str]:
    return [
        "node", "publish", "--agency", agency, "--kind", "interpol.black",
        "--purpose", "identification", "--section", "case_facts=found",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        [
            "node",
            "publish",
            "--agency",
            "FR-NCB",
            "--kind",
            "k",
            "--purpose",
            "p",
            "--section",
            "x=y",
        ],
        ["admin", "agency", "list", "--admin", ADMIN_ID],
        ["audit", "checkpoint", "--as", f"auditor:{AUDITOR_ID}"],
    ],
    ids=["node", "admin", "audit"],
)
def test_no_broker_listening(deployment: Deployment, argv: list[str]) -> None:
    target = f"127.0.0.1:{free_port()}"
    line = one_line(run(*argv, keys=deployment.keys_dir, target=target))
    assert f"no broker is listening at {target} (connection refused)" in line
    assert "broker serve" in line and "BROKER_TARGET" in line


def test_status_and_listen_without_a_broker(deployment: Deployment) -> None:
    target = f"127.0.0.1:{free_port()}"
    r = run("status", "--as", "agency:FR-NCB", keys=deployment.keys_dir, target=target)
    assert r.returncode == 1, r.stderr
    assert f"FAIL broker    no broker is listening at {target}" in r.stdout, r.stdout
    r = run(
        "node", "listen", "--agency", "FR-NCB", "--timeout", "0.5",
        keys=deployment.keys_dir, target=target,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr  # a listener waits for its broker, and says so
    assert f"waiting for a broker at {target}" in r.stderr and "broker serve" in r.stderr


def test_an_expired_certificate_is_named_before_dialling(
    deployment: Deployment, served: str
) -> None:
    now = datetime.now(UTC)
    cert = resign(
        deployment.keys_dir, Party("agency", "FR-NCB"), now - timedelta(days=30), now - timedelta(1)
    )
    line = one_line(run(*publish_args(), keys=deployment.keys_dir, target=served))
    assert f"the certificate of agency FR-NCB ({cert}) expired at " in line
    assert "broker keys issue agency FR-NCB" in line


def test_a_certificate_not_yet_valid(deployment: Deployment, served: str) -> None:
    later = datetime.now(UTC) + timedelta(days=10)
    resign(deployment.keys_dir, Party("agency", "DE-BKA"), later, later + timedelta(days=10))
    r = run("node", "listen", "--agency", "DE-BKA", keys=deployment.keys_dir, target=served)
    line = one_line(r)
    assert "the certificate of agency DE-BKA" in line and "is not valid before" in line
    assert "check this machine's clock" in line


def test_a_certificate_from_another_ca(deployment: Deployment, served: str, tmp_path: Path) -> None:
    other = create_deployment(tmp_path / "other", deployment.agencies[:1])
    # All of another deployment's keys: its CA does not know this broker's certificate.
    r = run(*publish_args(), keys=other.keys_dir, target=served)
    line = one_line(r)
    assert f"the broker at {served} presents a certificate not issued by the CA in" in line
    assert "another deployment" in line and "BROKER_KEYS" in line
    # This deployment's keys, with FR-NCB's certificate and key from the other CA.
    mine = pki.party_directory(deployment.keys_dir, Party("agency", "FR-NCB"))
    theirs = pki.party_directory(other.keys_dir, Party("agency", "FR-NCB"))
    for name in ("tls.pem", "tls.key"):
        (mine / name).write_bytes((theirs / name).read_bytes())
    line = one_line(run(*publish_args(), keys=deployment.keys_dir, target=served))
    assert "the certificate of agency FR-NCB" in line and "was not issued by the CA in" in line


def test_a_wrong_broker_name(deployment: Deployment, tmp_path: Path) -> None:
    # The broker's certificate names only broker.example; the client dials 127.0.0.1.
    pki.issue_certificate(
        deployment.keys_dir, Party("broker", "broker"), dns_names=["broker.example"]
    )
    port = free_port()
    proc = start_serve(deployment, port, tmp_path / "broker.log")
    try:
        r = run(*publish_args(), keys=deployment.keys_dir, target=f"127.0.0.1:{port}")
        line = one_line(r)
        assert "wrong broker name" in line
        assert "is for broker.example, not '127.0.0.1'" in line and "--dns" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_a_port_that_is_not_a_broker(deployment: Deployment) -> None:
    import socket

    with socket.socket() as s:  # accepts connections, never speaks TLS
        s.bind(("127.0.0.1", 0))
        s.listen()
        target = f"127.0.0.1:{s.getsockname()[1]}"
        line = one_line(run(*publish_args(), keys=deployment.keys_dir, target=target))
    assert "did not complete a TLS handshake" in line and "gRPC port" in line


def test_listen_says_when_it_waits_and_when_it_connects(
    deployment: Deployment, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "BROKER_"))}
    env.update(BROKER_KEYS=str(deployment.keys_dir), BROKER_TARGET=f"127.0.0.1:{port}")
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker.cli.main",
            "node",
            "listen",
            "--agency",
            "DE-BKA",
            "--state-dir",
            str(tmp_path / "nodes"),
            "--timeout",
            "40",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc = None
    try:
        assert listener.stderr is not None
        first = listener.stderr.readline()
        assert f"waiting for a broker at 127.0.0.1:{port}" in first, first
        proc = start_serve(deployment, port, tmp_path / "broker.log")
        second = listener.stderr.readline()
        assert f"connected to 127.0.0.1:{port}" in second, second
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.communicate(timeout=30)
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_serve_refuses_a_data_directory_that_holds_no_store(
    deployment: Deployment, tmp_path: Path
) -> None:
    port = free_port()
    proc = start_serve(deployment, port, tmp_path / "broker.log")  # its store: root/broker
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    serve = [
        sys.executable, "-m", "broker.cli.main", "serve", "--config", str(deployment.config_file),
        "--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", str(deployment.root),
    ]  # fmt: skip
    r = subprocess.run(serve, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"broker: error: data directory {deployment.root} holds no broker store")
    assert f"(expected {deployment.root / 'broker.sqlite3'})" in line
    assert f"did you mean --data-dir {deployment.root / 'broker'}?" in line and "--init" in line
    assert not (deployment.root / "broker.sqlite3").exists()  # nothing was created
    port_file = tmp_path / "port"
    started = subprocess.Popen(
        [*serve, "--init", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            if port_file.exists() or started.poll() is not None:
                break
            time.sleep(0.05)
        assert port_file.exists(), "broker serve --init did not start"
        assert (deployment.root / "broker.sqlite3").exists()
    finally:
        started.send_signal(signal.SIGTERM)
        started.wait(30)


def test_a_monitor_names_a_replaced_log(deployment: Deployment, tmp_path: Path) -> None:
    state = tmp_path / "monitor.json"
    port = free_port()
    target = f"127.0.0.1:{port}"
    proc = start_serve(deployment, port, tmp_path / "broker.log")
    try:
        admin = ["--admin", ADMIN_ID]
        r = run("admin", "agency", "sign-registry", *admin, keys=deployment.keys_dir, target=target)
        assert r.returncode == 0, r.stderr
        monitor = ["audit", "monitor", "--as", f"auditor:{AUDITOR_ID}", "--state", str(state)]
        monitor += ["--require-cosignatures", "0"]  # no witness runs here
        r = run(*monitor, keys=deployment.keys_dir, target=target)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    shutil.rmtree(deployment.root / "broker")  # a new, empty data directory: a new log
    proc = start_serve(deployment, port, tmp_path / "broker.log")
    try:
        r = run(*monitor, keys=deployment.keys_dir, target=target)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "the broker's log was rolled back or replaced" in r.stdout + r.stderr
        assert f"move {state} away" in r.stdout + r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_serve_with_the_defaults_refuses_a_directory_without_a_deployment(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "serve", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert f"the default data directory data/broker (under {tmp_path}) does not exist" in line
    assert "--config broker.toml or --data-dir DIR, or --init" in line
    assert not (tmp_path / "data").exists()  # nothing was created


def test_replicas_one_answering_is_enough(deployment: Deployment, served: str) -> None:
    down = f"127.0.0.1:{free_port()}"
    r = run("status", "--as", "agency:FR-NCB", keys=deployment.keys_dir, target=f"{down},{served}")
    assert "ok   broker" in r.stdout, r.stdout + r.stderr
    assert "ok   log" in r.stdout  # the calls went through the replica that answers
    assert "UNSIGNED bootstrap bundle" in r.stdout and r.returncode == 1  # not provisioned
    line = one_line(run(*publish_args(), keys=deployment.keys_dir, target=f"{down},{down}"))
    assert "none of the 2 broker replicas answered; the first: no broker is listening" in line


def test_the_broker_refusing_our_certificate(
    deployment: Deployment, served: str, tmp_path: Path
) -> None:
    # FR-NCB holds another deployment's certificate and trusts both CAs: the handshake
    # verifies the broker, and the broker, which trusts only its own CA, hangs up.
    other = create_deployment(tmp_path / "other", deployment.agencies[:1])
    keys = tmp_path / "mixed"
    agency = Party("agency", "FR-NCB")
    shutil.copytree(pki.party_directory(other.keys_dir, agency), pki.party_directory(keys, agency))
    ours = (deployment.keys_dir / "ca" / "ca.pem").read_bytes()
    ca = pki.party_directory(keys, agency) / "ca.pem"
    ca.write_bytes(ca.read_bytes() + ours)
    line = one_line(run(*publish_args(), keys=keys, target=served))
    assert f"the broker at {served} closed the connection after the handshake" in line
    assert "does not accept the certificate of agency FR-NCB" in line
