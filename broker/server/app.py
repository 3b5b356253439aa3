"""The broker process: configuration, registry, policy, store, gRPC server, background work.

Its self-contained helpers live beside it: broker/server/expiry.py (a notice's expiry),
startup.py (the listen-address check, the data-directory lock), registrykey.py (the
registry's digest).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import uuid
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker import pki
from broker.bundles import read_bundle_dir
from broker.config import ServerConfig
from broker.core.activation import bundle_files, bundle_message
from broker.core.decisions import DecisionCache
from broker.core.identity import IdentityError, Party, verify_key_statement
from broker.core.policy import AgencyProfile, Bundle, compile_bundle
from broker.core.relay import RegisteredAgency
from broker.errors import FailedPrecondition, InvalidArgument, Unavailable
from broker.pqlog import pq_log_signer_for
from broker.registry import join_statements, parse_registry
from broker.server import metrics, oplog
from broker.server.admin_service import AdminService
from broker.server.audit_service import AUDIT_SERVICE_NAME, AuditService  # transparency log
from broker.server.checkpoints import Checkpointer  # transparency log
from broker.server.evidence import SERVICE_NAME as EVIDENCE_SERVICE_NAME
from broker.server.evidence import EvidenceService  # + evidence: attachments, custody
from broker.server.expiry import expire_notice
from broker.server.quotas import QuotaGate
from broker.server.registrykey import registry_key
from broker.server.replicas import (
    POLICY,
    REGISTRY,
    RESTRICTIONS,
    SESSION,
    WAKE,
    Message,
    ReplicaBus,
)
from broker.server.revocation import Revocations
from broker.server.service import AgencyService
from broker.server.startup import _lock_data_dir, check_listen_address
from broker.server.wire import now_ms
from broker.store import failures
from broker.store.api import ActivePolicyRow, AgencyRecord, Event, Store
from broker.store.backends import describe, open_stores
from broker.store.runner import StoreRunner
from broker.v1 import admin_pb2, agency_pb2, notice_pb2

log = logging.getLogger("broker.server")
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
SERVICE_NAME = "broker.v1.AgencyService"
ADMIN_SERVICE_NAME = "broker.v1.AdminService"


@dataclass
class Session:
    """One open Subscribe stream of an agency."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    serial: int = 0  # announced to the other replicas (PostgreSQL)
    announced: bool = False  # this replica has heard its own announcement
    displaced: bool = False  # closed by a newer stream of the agency (ends ABORTED)


class BrokerApp:
    """Owns everything the broker process runs. `await start()`, then `await stop()`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.max_window = 1024
        self.poll_interval = 1.0
        # The bootstrap bundle: used until an administrator activates one (issue 3).
        self.bootstrap_files = read_bundle_dir(config.policy_dir)
        self.policy: Bundle = compile_bundle(self.bootstrap_files)
        self.policy_activation: bytes | None = None  # signed activation of the active bundle
        keys = config.keys_dir
        self.ca_cert = pki.load_ca_certificate(keys / "ca" / "ca.pem")
        self.tls = pki.load_party(keys, Party("broker", config.broker_id))
        log_signer = pki.load_log_signer(keys, config.broker_id)  # transparency-log key
        pq_log_signer = pq_log_signer_for(keys, config.broker_id, config.crypto)  # + hybrid
        self.revoked = pki.revoked_parties(keys)
        self.registry: dict[str, RegisteredAgency] = {}
        self.registry_key = ""  # digest of every profile: changes with the registry
        self.decisions = DecisionCache()  # policy outcomes per notice shape (hot path)
        self.restriction_overrides: dict[str, bytes] = {}  # notice id -> restrictions bytes
        # SQLite: one broker per data directory. PostgreSQL: replicas share the database
        # and tell each other what changed (broker/server/replicas.py).
        self._lock = None if config.store else _lock_data_dir(config.data_dir)
        try:
            stores = open_stores(
                config.store,
                config.database,
                pool_min=config.store_pool_min,
                pool_max=config.store_pool_max,
                workers=config.store_workers,
            )
        except Exception as exc:
            if self._lock is not None:
                self._lock.close()
            error = failures.startup_error(exc, config.data_dir)
            if error is None:
                raise
            raise error from exc
        self.runner: StoreRunner[Store] = StoreRunner(*stores)
        self.checkpoints = Checkpointer(self.runner, log_signer, pq_log_signer)  # signed log
        self.revocations = Revocations(self)  # live revocation (broker/server/revocation.py)
        self.sessions: dict[str, Session] = {}
        self.quotas = QuotaGate(config.quotas)  # + fair sharing (broker/server/quotas.py)
        self._serials = itertools.count(1)
        self.replica_id = uuid.uuid4().hex[:12]
        self.replicas: ReplicaBus | None = None
        channel = getattr(stores[0], "channel", None)
        if config.store and isinstance(channel, str):
            self.replicas = ReplicaBus(
                config.store,
                channel,
                self.replica_id,
                self._on_replica_message,
                self._on_replica_connected,
            )
        self.server: grpc.aio.Server | None = None
        self.stopping = False  # stop() began: /readyz answers 503
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.health = health.aio.HealthServicer()

    # -- registry and policy ---------------------------------------------------------
    async def _seed_registry(self) -> None:
        """Add registry.toml agencies the store does not know yet (the store is authoritative:
        administrators change it through AdminService)."""
        known = {r.id for r in await self.runner.call(lambda s: s.agencies())}
        if not self.config.registry.exists():
            if not known:
                raise InvalidArgument(f"registry file {self.config.registry} does not exist")
            return
        profiles = {
            k: v
            for k, v in parse_registry(self.config.registry, self.policy).items()
            if k not in known
        }
        if not profiles:
            return
        statements = pki.read_statements(self.config.keys_dir)
        ca_key = pki.ca_public_key(self.ca_cert)
        fresh = join_statements(profiles, statements, ca_key, now_ms(), self.revoked)
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
                serial=notice_pb2.KeyStatement.FromString(
                    notice_pb2.SignedKeyStatement.FromString(a.statement).statement
                ).serial,
            )
            for a in fresh.values()
        ]

        def seed(store: Store) -> None:
            for r in records:
                store.upsert_agency(r)
                store.record_action(
                    "bootstrap", "agency.register", r.id, {"from": "registry.toml"}, now_ms()
                )

        await self.runner.call(seed)

    async def reload_registry(self, *, announce: bool = True) -> None:
        """Rebuild the in-memory registry from the store, re-verifying every key statement
        (and tell the other replicas to do the same)."""
        records = await self.runner.call(lambda s: s.agencies())
        ca_key = pki.ca_public_key(self.ca_cert)
        now = now_ms()
        registry = {}
        # A signed registry status "revoked" refuses the agency's certificate as the CA's
        # list does (never undone on a running broker).
        self.revoked = self.revoked | {
            Party("agency", r.id).uri() for r in records if r.status == "revoked"
        }
        for r in records:
            statement = notice_pb2.SignedKeyStatement.FromString(r.statement)
            try:
                keys = verify_key_statement(statement, ca_key, now, expected_agency=r.id)
            except IdentityError as exc:
                log.warning(
                    "agency key statement unusable", extra={"agency": r.id, "error": str(exc)}
                )
                continue
            if Party("agency", r.id).uri() in self.revoked:
                continue
            profile = AgencyProfile(
                id=r.id,
                country=r.country,
                roles=frozenset(r.roles),
                groups=frozenset(r.groups),
                purposes=frozenset(r.purposes),
                status=r.status,
            )
            registry[r.id] = RegisteredAgency(
                profile,
                keys.signing_key,
                keys.encryption_key,
                r.statement,
                r.signed_entry,
                pq_signing_key=keys.pq_signing_key,
                pq_encryption_key=keys.pq_encryption_key,
            )
        self.registry = registry
        self.registry_key = registry_key(registry.values())
        if announce and self.replicas is not None:
            self.replicas.send(REGISTRY)

    def restrictions_key(self, notice_id: str) -> str:
        """A digest of the restrictions that replaced a notice's own ("" when none did)."""
        override = self.restriction_overrides.get(notice_id)
        return "" if override is None else hashlib.sha256(override).hexdigest()[:32]

    async def _load_policy(self) -> None:
        """Use the active bundle from the store, or activate the bootstrap directory's bundle
        while no administrator has activated one. Read and activation are one store
        operation, so replicas starting together bootstrap once."""
        version = self.policy.version
        bundle = bundle_message(self.bootstrap_files).SerializeToString(deterministic=True)
        source = str(self.config.policy_dir)

        def load(store: Store) -> ActivePolicyRow | None:
            active = store.active_bundle()
            if active is not None and (
                active.signed_activation is not None or active.version == version
            ):
                return active
            store.put_bundle(version, bundle)
            seq = (active.sequence if active else 0) + 1
            store.activate_bundle(
                version, None, "bootstrap", now_ms(), f"bootstrap from {source}", seq
            )
            store.record_action("bootstrap", "policy.activate", version, {"from": source}, now_ms())
            return None

        active = await self.runner.call(load)
        if active is not None:
            files = bundle_files(admin_pb2.PolicyBundle.FromString(active.bundle))
            self.install_policy(compile_bundle(files), active.signed_activation)
            return
        self.policy_activation = None

    def install_policy(
        self, bundle: Bundle, signed_activation: bytes | None, *, announce: bool = True
    ) -> None:
        """Switch to a bundle atomically: in-flight requests keep the one they started with
        (and tell the other replicas to switch too)."""
        self.policy = bundle
        self.policy_activation = signed_activation
        log.info(
            "policy active",
            extra={"policy_version": bundle.version, "signed": bool(signed_activation)},
        )
        if announce and self.replicas is not None:
            self.replicas.send(POLICY)

    def set_restriction_override(self, notice_id: str, restrictions: bytes) -> None:
        """An originator's newer restrictions (stored); the other replicas reload theirs."""
        self.restriction_overrides[notice_id] = restrictions
        if self.replicas is not None:
            self.replicas.send(RESTRICTIONS, notice_id)

    async def _refresh_policy(self) -> None:
        """Install the store's active bundle if another replica activated another one."""
        active = await self.runner.call(lambda s: s.active_bundle())
        if active is None or (
            active.version == self.policy.version
            and active.signed_activation == self.policy_activation
        ):
            return
        files = bundle_files(admin_pb2.PolicyBundle.FromString(active.bundle))
        self.install_policy(compile_bundle(files), active.signed_activation, announce=False)

    # -- sessions -------------------------------------------------------------------
    def open_session(self, agency: str) -> Session:
        """Register a new Subscribe stream; an older stream of the same agency is closed,
        here or (once the announcement reaches it) on another replica."""
        old = self.sessions.get(agency)
        if old is not None:
            old.displaced = True
            old.closed.set()
            old.wake.set()
        session = Session(serial=next(self._serials))
        self.sessions[agency] = session
        if self.replicas is not None:
            self.replicas.send(SESSION, agency, str(session.serial))
        return session

    def close_session(self, agency: str, session: Session) -> bool:
        """Forget `session`; True if it was the agency's current stream."""
        if self.sessions.get(agency) is session:
            del self.sessions[agency]
            return True
        return False

    def wake(self, agency: str) -> None:
        """Something is queued for `agency`: its stream leases now, on whichever replica."""
        session = self.sessions.get(agency)
        if session is not None:
            session.wake.set()
        if self.replicas is not None:
            self.replicas.wake(agency)

    # -- replicas (PostgreSQL) -------------------------------------------------------------
    async def _on_replica_message(self, message: Message) -> None:
        mine = message.replica == self.replica_id
        if message.kind == SESSION and len(message.args) == 2:
            agency, serial = message.args
            session = self.sessions.get(agency)
            if session is None:
                return
            if mine:
                if str(session.serial) == serial:
                    session.announced = True
            elif session.announced:  # ours was announced first: the other stream is newer
                session.displaced = True
                session.closed.set()
                session.wake.set()
            return
        if mine:
            return
        if message.kind == WAKE:
            for agency in message.args:
                session = self.sessions.get(agency)
                if session is not None:
                    session.wake.set()
        elif message.kind == REGISTRY:
            await self.reload_registry(announce=False)
        elif message.kind == POLICY:
            await self._refresh_policy()
        elif message.kind == RESTRICTIONS:
            self.restriction_overrides = await self.runner.call(
                lambda s: s.all_restriction_overrides()
            )

    async def _on_replica_connected(self) -> None:
        """(Re)connected to the channel: catch up with whatever was missed meanwhile."""
        await self.reload_registry(announce=False)
        await self._refresh_policy()
        self.restriction_overrides = await self.runner.call(lambda s: s.all_restriction_overrides())
        for session in list(self.sessions.values()):
            session.wake.set()

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> int:
        """Seed the registry, load the active policy, start serving; return the bound port.

        Raises FailedPrecondition saying what to fix when the port is taken or the store
        cannot be written (a full disk, a locked database).
        """
        try:
            await self._seed_registry()
            await self.reload_registry()
            await self._load_policy()
            self.restriction_overrides = await self.runner.call(
                lambda s: s.all_restriction_overrides()
            )
        except Unavailable as exc:  # the store failed under the start-up writes
            error = failures.startup_error(exc, self.config.data_dir)
            if error is None:
                raise
            raise error from exc
        check_listen_address(self.config.listen)
        if self.replicas is not None:
            await self._check_log_origin()
            await self.replicas.start()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                # Never share the port with another process (gRPC sets SO_REUSEPORT by default).
                ("grpc.so_reuseport", 0),
            ]
        )
        self.evidence = EvidenceService(self)  # + evidence: attachments and custody
        server.add_generic_rpc_handlers(
            (
                AgencyService(self).handler(),
                AdminService(self).handler(),
                AuditService(self).handler(),  # transparency log
                self.evidence.handler(),  # + evidence: attachments and custody
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [SERVICE_NAME, ADMIN_SERVICE_NAME, AUDIT_SERVICE_NAME, health.SERVICE_NAME]
        names.append(EVIDENCE_SERVICE_NAME)
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
        try:
            self.port = server.add_secure_port(self.config.listen, credentials)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise FailedPrecondition(
                f"cannot listen on {self.config.listen}: choose a free local host:port"
            )
        await server.start()
        self.server = server
        for name in ("", SERVICE_NAME, AUDIT_SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.append(asyncio.create_task(self._expire_loop()))
        if self.quotas.counts_queues:  # + fair sharing: queued deliveries from the store
            await self.quotas.refresh(self.runner)
            self._tasks.append(asyncio.create_task(self.quotas.run(self.runner)))
        loop = asyncio.get_running_loop()
        metrics.TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))
        self._tasks.append(self.checkpoints.start())  # transparency log; cancelled in stop()
        self._tasks.append(self.revocations.start())  # watches the CA's revocation list
        self._tasks.append(asyncio.create_task(self.evidence.sweep_loop()))  # + evidence
        log.info(
            "broker serving",
            extra={
                "listen": self.config.listen,
                "port": self.port,
                "policy_version": self.policy.version,
                "agencies": len(self.registry),
                "store": describe(self.config.store, self.config.database),
                "replica": self.replica_id if self.replicas is not None else "",
            },
        )
        return self.port

    async def _expire_loop(self) -> None:
        limits = self.config.limits
        while True:
            await asyncio.sleep(self.config.expiry_interval_s)
            review_days = {  # how long before expiry to remind: retention minus review point
                name: max(k.retention_days - k.review_days, 0)
                for name, k in self.policy.kinds.items()
            }

            def housekeeping(
                store: Store, review_days: dict[str, int] = review_days
            ) -> list[Event]:
                now = now_ms()
                events = store.expire_leases(now, limits.max_attempts)
                events += store.expire_controls(now, limits.max_attempts)
                events += store.due_reviews(now, review_days)
                events += store.due_request_reminders(now)  # + judicial
                for notice_id in store.due_expiries(now):
                    # Each expiry on its own: one that fails must not hold back the others,
                    # nor the lease expiry above.
                    store.savepoint()
                    try:
                        events += expire_notice(store, notice_id, now)
                    except Exception:
                        store.rollback_savepoint()
                        log.exception("expiry failed", extra={"notice_id": notice_id})
                    else:
                        store.release_savepoint()
                return events

            try:
                events = await self.runner.call(housekeeping)
            except Exception:
                log.exception("lease expiry failed")
                continue
            for ev in events:
                if ev.kind == "dead_lettered":
                    metrics.DEAD_LETTERS.inc()
                    oplog.delivery(oplog.DEAD_LETTERED, ev.notice_id, ev.version, ev.recipient)
                else:
                    log.warning(
                        f"notice {ev.kind}",
                        extra={"notice_id": ev.notice_id, "recipient": ev.recipient},
                    )
                self.wake(ev.agency)
            for session in list(self.sessions.values()):
                session.wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting work, let RPCs finish for `grace` seconds, then close the store."""
        self.stopping = True
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
        if self.replicas is not None:
            await self.replicas.stop()
        self.runner.close()
        if self._lock is not None:
            self._lock.close()

    async def _check_log_origin(self) -> None:
        """Replicas share one log: refuse to sign it under another broker's name."""
        origin = self.checkpoints.origin
        latest = await self.runner.call(lambda s: s.tlog_checkpoint())
        if latest is not None and not latest.note.startswith(origin + "\n"):
            raise FailedPrecondition(
                f"the store's transparency log is signed by another broker than {origin}: "
                "replicas sharing a database must run with the same broker_id and keys"
            )
