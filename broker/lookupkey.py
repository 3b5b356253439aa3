"""The lookup-key service (``broker lookup-key serve``): its own process, role and key.

It holds the OPRF secret key of the deployment's lookups and does one thing with
it: BlindEvaluate (RFC 9497 VOPRF) batches of blinded elements for agencies,
each batch with a DLEQ proof against the CA-signed public key. It never sees a
selector or a token, and the broker cannot call it: only callers whose mutual-TLS
certificate names ``urn:broker:agency:<id>`` (and who are not revoked) may
evaluate, so a compromised broker cannot run a dictionary through the OPRF.

Every agency is rate-limited (a token bucket of elements per second, with a
burst), and the service counts evaluations per agency and day in its own SQLite
file, logging each batch as a JSON line: the counts are what an auditor compares
with the lookups the broker logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc

from broker import lookup_keys, pki
from broker.core import oprf
from broker.core.identity import Party
from broker.core.lookup import MAX_EVALUATE
from broker.errors import InvalidArgument, PermissionDenied, ResourceExhausted
from broker.server.peer import caller
from broker.server.status import unary_handler
from broker.server.wire import parse
from broker.v1 import lookup_pb2

log = logging.getLogger("broker.lookupkey")
SERVICE_NAME: Final = "broker.v1.LookupKeyService"
DAY_S: Final = 86_400


@dataclass
class RateLimiter:
    """A token bucket per agency: ``rate`` elements per second, at most ``burst`` at once.

    ``clock`` returns seconds (monotonic); tests pass their own.
    """

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, agency: str, n: int) -> None:
        """Spend ``n`` elements of ``agency``'s budget, or raise ResourceExhausted."""
        now = self.clock()
        level, at = self._buckets.get(agency, (self.burst, now))
        level = min(self.burst, level + (now - at) * self.rate)
        if n > level:
            self._buckets[agency] = (level, now)
            raise ResourceExhausted(
                f"lookup rate limit: {agency} may evaluate {self.rate:g} elements per second "
                f"(bursts of {self.burst:g}); retry later"
            )
        self._buckets[agency] = (level - n, now)


class Counts:
    """Evaluations per agency and UTC day, in ``<data_dir>/lookup-counts.sqlite3``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # Committed per batch without an fsync each: a crash of the process loses nothing,
        # a power cut at most the last moments' counts (each batch is also a log line).
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS evaluations (agency TEXT NOT NULL, day INTEGER NOT NULL, "
            "batches INTEGER NOT NULL, elements INTEGER NOT NULL, PRIMARY KEY (agency, day))"
        )

    def add(self, agency: str, elements: int, now_s: float) -> int:
        """Count one batch; return the agency's elements so far today."""
        day = int(now_s // DAY_S)
        self.conn.execute(
            "INSERT INTO evaluations VALUES (?,?,1,?) ON CONFLICT (agency, day) DO UPDATE SET "
            "batches=batches+1, elements=elements+excluded.elements",
            (agency, day, elements),
        )
        row = self.conn.execute(
            "SELECT elements FROM evaluations WHERE agency=? AND day=?", (agency, day)
        ).fetchone()
        return int(row[0])

    def all(self) -> list[tuple[str, int, int, int]]:
        """(agency, day since epoch, batches, elements), by day then agency."""
        rows = self.conn.execute(
            "SELECT agency, day, batches, elements FROM evaluations ORDER BY day, agency"
        ).fetchall()
        return [(str(a), int(d), int(b), int(e)) for a, d, b, e in rows]

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class KeyServiceConfig:
    service_id: str
    keys_dir: Path
    data_dir: Path
    listen: str = "127.0.0.1:7444"
    rate: float = 5000.0  # elements per second per agency
    burst: float = 10000.0


class LookupKeyService:
    """The gRPC service: GetKey and Evaluate."""

    def __init__(self, config: KeyServiceConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.party = Party("lookup", config.service_id)
        self.secret = lookup_keys.load_secret(config.keys_dir, config.service_id)
        self.signed = lookup_keys.load_signed(config.keys_dir, config.service_id)
        statement = lookup_pb2.LookupKey.FromString(self.signed.key)
        if statement.public_key != oprf.public_key(self.secret):
            raise InvalidArgument(
                f"the lookup key statement of {self.party.uri()} does not match its OPRF key; "
                f"re-issue it with `broker keys issue lookup {config.service_id}`"
            )
        self.public = statement.public_key
        self.serial = statement.serial
        self.revoked = pki.revoked_parties(config.keys_dir)
        self.limiter = RateLimiter(config.rate, config.burst, clock)
        self.counts = Counts(config.data_dir / "lookup-counts.sqlite3")

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "GetKey": unary_handler("LookupKey.GetKey", self.get_key),
                "Evaluate": unary_handler("LookupKey.Evaluate", self.evaluate),
            },
        )

    def _agency(self, context: Any) -> str:
        party = caller(context, self.revoked)
        if party.kind != "agency":
            raise PermissionDenied(
                f"{party.uri()} is not an agency: only agencies may evaluate lookups"
            )
        return party.id

    async def get_key(self, data: bytes, context: Any) -> lookup_pb2.SignedLookupKey:
        caller(context, self.revoked)  # any authenticated party may read the public key
        parse(lookup_pb2.GetLookupKeyRequest, data)
        return self.signed

    async def evaluate(self, data: bytes, context: Any) -> lookup_pb2.EvaluateResponse:
        agency = self._agency(context)
        req = parse(lookup_pb2.EvaluateRequest, data)
        n = len(req.blinded_elements)
        if n == 0:
            raise InvalidArgument("EvaluateRequest carries no blinded elements")
        if n > MAX_EVALUATE:
            raise ResourceExhausted(f"at most {MAX_EVALUATE} blinded elements per request")
        blinded = [
            oprf.check_element(b, f"blinded element {i}")
            for i, b in enumerate(req.blinded_elements)
        ]
        self.limiter.take(agency, n)
        r = oprf.random_scalar(os.urandom)
        # libsodium runs without the GIL: concurrent batches use every core.
        evaluated, proof = await asyncio.to_thread(
            oprf.blind_evaluate_verifiable, self.secret, self.public, blinded, r
        )
        total = self.counts.add(agency, n, time.time())
        log.info("evaluated", extra={"agency": agency, "elements": n, "today": total})
        return lookup_pb2.EvaluateResponse(
            evaluated_elements=evaluated, proof=proof, key_serial=self.serial
        )


class KeyServer:
    """The process: TLS with client certificates required, the service, graceful stop."""

    def __init__(self, config: KeyServiceConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.service = LookupKeyService(config, clock)
        self.server: Any = None
        self.port = 0

    async def start(self) -> int:
        tls = pki.load_party(self.config.keys_dir, self.service.party)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((self.service.handler(),))
        credentials = grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=tls.ca_cert.read_bytes(),
            require_client_auth=True,
        )
        self.port = server.add_secure_port(self.config.listen, credentials)
        if self.port == 0:
            raise InvalidArgument(f"cannot listen on {self.config.listen}")
        await server.start()
        self.server = server
        log.info(
            "lookup-key service serving",
            extra={"service": self.service.party.uri(), "port": self.port},
        )
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
        self.service.counts.close()


async def serve(config: KeyServiceConfig, port_file: Path | None = None) -> int:
    """Run until SIGTERM or SIGINT."""
    server = KeyServer(config)
    port = await server.start()
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0
