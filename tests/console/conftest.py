"""The console in a real browser, against a real broker with real traffic.

A scene is what a person gets by following `broker demo`'s closing lines: the demo
runs (`broker demo --dir`, real SDK nodes publishing, receipting, acting,
witnessing), then `broker serve` serves its deployment again and `broker console`
runs as the demo's auditor and administrator. The scene adds traffic through the
SDK that the demo leaves out: a delivery nobody has receipted yet, a dead letter
and an overdue request for information. Debian's chromium, driven by Playwright,
is the browser; without it the tests skip and say so.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from broker.cli.main import build_parser
from broker.client import audit as ac
from broker.client.node import AgencyNode, NodeConfig
from broker.core.identity import Party
from broker.sandbox import ADMIN_ID, AUDITOR_ID
from broker.v1 import agency_pb2, agency_pb2_grpc, audit_pb2
from tests.content import sections_for

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RED_SECTIONS = sections_for(  # the catalogue's 'field: value' lines, then text
    "interpol.red",
    identity=b"KOWALSKI, Piotr; born 1979-09-09",
    case_facts=b"Fraud ring, Lyon",
    judicial=b"Warrant 2026/0999",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium under Playwright's sync API, for one module: while it runs, Playwright holds
    this thread's event loop, so it must stop before the suite's asyncio tests run."""
    if not CHROMIUM.exists():
        pytest.skip(
            "the console's browser tests need Debian's chromium at /usr/bin/chromium "
            "(apt-get install chromium; .ci/run installs it)"
        )
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        except Error as exc:
            pytest.skip(f"chromium at {CHROMIUM} does not start under Playwright: {exc}")
        yield b
        b.close()


def _broker(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def _hint(stdout: str) -> list[list[str]]:
    """The commands of the demo's closing lines, as argument lists after `broker`."""
    commands = []
    for line in stdout.splitlines():
        m = re.match(r"^  \.venv/bin/broker (.*?)( &)?$", line)
        if m:
            commands.append(shlex.split(m.group(1)))
    return commands


def _set(toml: Path, replacements: dict[str, str]) -> None:
    text = toml.read_text(encoding="utf-8")
    for key, value in replacements.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        if not n:
            text = text.replace("[server]\n", f"[server]\n{key} = {value}\n")
    toml.write_text(text, encoding="utf-8")


@dataclass
class Scene:
    root: Path
    keys: Path
    target: str
    url: str  # the login URL the console printed
    base: str
    demo_stdout: str
    console_command: list[str]
    red_id: str  # the demo's Red notice (two versions, receipted)
    pending_id: str  # published to DE-BKA, never receipted
    dead_id: str  # EU-HUB took it and never receipted: dead-lettered
    request_id: str  # DE-BKA's request for information, overdue

    def node(self, agency: str) -> AgencyNode:
        return AgencyNode(
            NodeConfig(
                agency_id=agency,
                broker=self.target,
                keys_dir=self.keys,
                state_dir=self.root / "nodes",
            )
        )

    def auditor(self) -> ac.AuditClient:
        return ac.AuditClient(self.target, self.keys, Party("auditor", AUDITOR_ID))


async def _traffic(scene: Scene) -> tuple[str, str, str]:
    """What the demo leaves out: a pending delivery, a dead letter, an overdue request."""
    async with scene.node("FR-NCB") as fr:
        pending = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["DE-BKA"],
        )
        dead = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["EU-HUB"],
        )
    # EU-HUB takes the delivery and never answers: one attempt, then a dead letter.
    import grpc

    from broker import pki

    files = pki.load_party(scene.keys, Party("agency", "EU-HUB"))
    creds = grpc.ssl_channel_credentials(
        root_certificates=files.ca_cert.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
    async with grpc.aio.secure_channel(scene.target, creds) as channel:
        call = agency_pb2_grpc.AgencyServiceStub(channel).Subscribe()
        await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=8)))
        while not (await asyncio.wait_for(call.read(), 10)).deliveries:
            pass
        call.cancel()
    async with scene.node("DE-BKA") as de:
        request = await de.reply(
            "reply.info_request",
            scene.red_id,
            {"request": b"Please send the prints in NIST format"},
            to="FR-NCB",
            respond_within_ms=1,
            purpose="locate_arrest",
        )
    async with scene.auditor() as auditor:
        deadline = time.monotonic() + 20
        while True:
            q = await auditor.stub.GetQueues(audit_pb2.GetQueuesRequest(), timeout=10)
            if any(i.notice_id == dead.notice_id for i in q.dead_letters) and q.overdue_replies:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"no dead letter or overdue reply yet: {q}")
            await asyncio.sleep(0.1)
    return pending.notice_id, dead.notice_id, request.notice_id


def in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run SDK code on its own event loop: Playwright's sync API owns this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Scene]:
    work = tmp_path_factory.mktemp("console")
    demo = _broker("demo", "--dir", "demo", cwd=work)
    assert demo.returncode == 0, demo.stderr
    commands = _hint(demo.stdout)
    serve_args, console_args = commands[-2], commands[-1]
    assert serve_args[0] == "serve" and console_args[0] == "console", commands
    for args in commands:  # every command the demo prints is one the broker takes
        build_parser().parse_args(args)
    root = work / "demo"
    # The printed commands use the default ports; this run takes free ones, a short lease
    # and one attempt (for a dead letter), and no metrics port.
    _set(
        root / "broker.toml",
        {
            "metrics_listen": '""',
            "lease_ms": "300",
            "max_attempts": "1",
            "expiry_interval_s": "0.1",
        },
    )
    logs = work / "logs"
    logs.mkdir()
    port_file = work / "broker.port"
    serve_log = (logs / "serve.log").open("wb")
    console_log = (logs / "console.log").open("w")
    flags = ["--listen", "127.0.0.1:0", "--port-file", str(port_file)]
    serve = subprocess.Popen(
        [sys.executable, "-m", "broker.cli.main", *serve_args, *flags],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=serve_log,
    )
    console: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert serve.poll() is None, (logs / "serve.log").read_text()
            assert time.monotonic() < deadline, "broker serve did not start"
            time.sleep(0.05)
        target = f"127.0.0.1:{port_file.read_text().strip()}"
        red_id = re.search(r"FR-NCB published interpol.red (\S+)", demo.stdout)
        assert red_id is not None
        partial = Scene(
            root,
            root / "keys",
            target,
            "",
            "",
            demo.stdout,
            console_args,
            red_id.group(1),
            "",
            "",
            "",
        )
        partial.pending_id, partial.dead_id, partial.request_id = in_thread(_traffic(partial))
        console = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker.cli.main",
                *console_args,
                "--broker",
                target,
                "--listen",
                "127.0.0.1:0",
            ],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=console_log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert console.stdout is not None
        url = ""
        while not url:
            line = console.stdout.readline()
            assert line, f"broker console exited: {(logs / 'console.log').read_text()}"
            m = re.match(r"^open (http://\S+)$", line.strip())
            url = m.group(1) if m else ""
        partial.url, partial.base = url, url.split("/login")[0]
        yield partial
    finally:
        for proc in (console, serve):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if console is not None and console.stdout is not None:
            console.stdout.close()
        serve_log.close()
        console_log.close()


@pytest.fixture
def page(browser: Any, scene: Scene) -> Iterator[Any]:
    """A signed-in browser page (a fresh context: its own cookies)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(20_000)
    response = p.goto(scene.url)
    assert response is not None and response.ok, response
    yield p
    context.close()


def shot(page: Any, name: str, *, full: bool = True) -> None:
    """Keep a screenshot of what the test sees, when BROKER_CONSOLE_SCREENSHOTS names a
    directory (docs/console/ holds a set taken this way)."""
    where = os.environ.get("BROKER_CONSOLE_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=full)


__all__ = ["ADMIN_ID", "AUDITOR_ID", "Scene", "shot"]
