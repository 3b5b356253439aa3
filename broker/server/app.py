"""The broker process: configuration, registry, policy, store, gRPC server, background work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker import pki
from broker.config import ServerConfig
from broker.core.identity import Party
from broker.core.policy import Bundle, compile_bundle
from broker.core.relay import RegisteredAgency
from broker.errors import InvalidArgument
from broker.registry import join_statements, parse_registry
from broker.server import metrics
from broker.server.service import AgencyService, now_ms
from broker.store.api import AgencyRecord
from broker.store.runner import StoreRunner
from broker.store.sqlite import SqliteStore
from broker.v1 import agency_pb2

log = logging.getLogger("broker.server")
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
SERVICE_NAME = "broker.v1.AgencyService"


def read_policy_dir(directory: Path) -> dict[str, bytes]:
    """Read a policy bundle directory into {relative path: bytes} (TOML files only)."""
    if not directory.is_dir():
        raise InvalidArgument(f"policy directory {directory} does not exist")
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*.toml"))
    }


@dataclass
class Session:
    """One open Subscribe stream of an agency."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class BrokerApp:
    """Owns everything the broker process runs. `await start()`, then `await stop()`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.max_window = 1024
        self.poll_interval = 1.0
        self.policy: Bundle = compile_bundle(read_policy_dir(config.policy_dir))
        keys = config.keys_dir
        self.ca_cert = pki.load_ca_certificate(keys / "ca" / "ca.pem")
        self.tls = pki.load_party(keys, Party("broker", config.broker_id))
        self.revoked = pki.revoked_parties(keys)
        self.registry: dict[str, RegisteredAgency] = self._load_registry()
        self.runner = StoreRunner(SqliteStore.open(config.database))
        self.sessions: dict[str, Session] = {}
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.health = health.aio.HealthServicer()

    def _load_registry(self) -> dict[str, RegisteredAgency]:
        profiles = parse_registry(self.config.registry)
        statements = pki.read_statements(self.config.keys_dir)
        ca_key = pki.ca_public_key(self.ca_cert)
        return join_statements(profiles, statements, ca_key, now_ms(), self.revoked)

    # -- sessions -------------------------------------------------------------------
    def open_session(self, agency: str) -> Session:
        """Register a new Subscribe stream; an older stream of the same agency is closed."""
        old = self.sessions.get(agency)
        if old is not None:
            old.closed.set()
            old.wake.set()
        session = Session()
        self.sessions[agency] = session
        return session

    def close_session(self, agency: str, session: Session) -> bool:
        """Forget `session`; True if it was the agency's current stream."""
        if self.sessions.get(agency) is session:
            del self.sessions[agency]
            return True
        return False

    def wake(self, agency: str) -> None:
        session = self.sessions.get(agency)
        if session is not None:
            session.wake.set()

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> int:
        """Seed the registry into the store, start serving; return the bound port."""
        records = [
            AgencyRecord(
                id=a.profile.id,
                country=a.profile.country,
                roles=tuple(sorted(a.profile.roles)),
                groups=tuple(sorted(a.profile.groups)),
                purposes=tuple(sorted(a.profile.purposes)),
                status=a.profile.status,
                statement=a.statement,
                signing_key=a.signing_key,
                encryption_key=a.encryption_key,
                serial=0,
            )
            for a in self.registry.values()
        ]

        def seed(store: SqliteStore) -> None:
            for r in records:
                store.upsert_agency(r)

        await self.runner.call(seed)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        server.add_generic_rpc_handlers((AgencyService(self).handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [SERVICE_NAME, health.SERVICE_NAME]
        if self.config.reflection:
            names.append(reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
        # Reflection needs the descriptors registered in the default pool.
        _ = agency_pb2.DESCRIPTOR
        credentials = grpc.ssl_server_credentials(
            [(self.tls.key.read_bytes(), self.tls.cert.read_bytes())],
            root_certificates=self.tls.ca_cert.read_bytes(),
            require_client_auth=True,
        )
        self.port = server.add_secure_port(self.config.listen, credentials)
        if self.port == 0:
            raise InvalidArgument(f"cannot listen on {self.config.listen}")
        await server.start()
        self.server = server
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.append(asyncio.create_task(self._expire_loop()))
        log.info(
            "broker serving",
            extra={
                "listen": self.config.listen,
                "port": self.port,
                "policy_version": self.policy.version,
                "agencies": len(self.registry),
            },
        )
        return self.port

    async def _expire_loop(self) -> None:
        limits = self.config.limits
        while True:
            await asyncio.sleep(self.config.expiry_interval_s)
            try:
                events = await self.runner.call(
                    lambda s: s.expire_leases(now_ms(), limits.max_attempts)
                )
            except Exception:
                log.exception("lease expiry failed")
                continue
            for ev in events:
                metrics.DEAD_LETTERS.inc()
                log.warning(
                    "delivery dead-lettered",
                    extra={"notice_id": ev.notice_id, "recipient": ev.recipient},
                )
                self.wake(ev.agency)
            for session in list(self.sessions.values()):
                session.wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting work, let RPCs finish for `grace` seconds, then close the store."""
        await self.health.enter_graceful_shutdown()
        for session in self.sessions.values():
            session.closed.set()
            session.wake.set()
        if self.server is not None:
            await self.server.stop(grace)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.runner.close()


def monotonic() -> float:
    return time.monotonic()
