"""Publishing from an agency node: audiences resolved locally, many notices per RPC.

The node holds the administrator-signed policy bundle (GetActivePolicy) and the
signed directory of agencies (GetDirectory), each verified once and kept
(broker/client/directory.py). For every draft it decides the audience itself,
by the policy's compiled masks, once per notice shape (broker/core/decisions.py),
seals one key wrap per recipient to the key the CA bound to it, signs, and
sends many envelopes in one Publish. The broker still re-checks every wrap
against its own policy and registry, so a node whose view is stale is refused
(nothing stored) and re-seals after refreshing its view; and the broker
cannot widen an audience, because the node never asks it who may read what.

Mixed into AgencyNode (broker/client/node.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from google.protobuf.message import DecodeError

from broker import pki
from broker.client import plain
from broker.client.directory import Member, Verified, View, profile_of
from broker.client.logview import LogView
from broker.client.memory import KEY_SERIAL, POLICY, REVISION, TrustMemory
from broker.client.retry import rate_limited, retry_delay_ms
from broker.client.sent import Act, ActLog, Sent, SentLog
from broker.client.statedb import transaction
from broker.client.suite_choice import choose_suite
from broker.client.types import Draft, NodeConfig, PublishedNotice, now_ms
from broker.core import activation as act
from broker.core import content, intake, keymap, lifecycle, lookup, relay
from broker.core import envelope as env
from broker.core.decisions import DecisionCache
from broker.core.identity import IdentityError, Party
from broker.core.policy import AgencyProfile, Bundle, PolicyError, compile_bundle
from broker.core.relay import TLP_NAMES
from broker.errors import (
    INTERNAL_TEXT,
    InvalidArgument,
    PermissionDenied,
    PolicyRefused,
    Refusal,
    Unavailable,
)
from broker.trustconfig import TrustConfig
from broker.v1 import admin_pb2, agency_pb2, evidence_pb2, notice_pb2

log = logging.getLogger("broker.client")
TLP_VALUES = {name: value for value, name in TLP_NAMES.items()}
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
DAY_MS = 86_400_000
PUBLISH_BATCH = 64  # envelopes per Publish (the broker's default max_publish_batch)
PUBLISH_BYTES = 6 * 1024 * 1024  # and bytes per Publish, under the 8 MiB message limit


def transient(exc: grpc.aio.AioRpcError) -> bool:
    """Worth retrying: the broker is unreachable, slow, or the connection broke under the
    call (gRPC reports a write on a dropped connection as INTERNAL from its core; the
    broker's own INTERNAL answers carry its fixed text and are not retried)."""
    if exc.code() in RETRYABLE:
        return True
    return exc.code() == grpc.StatusCode.INTERNAL and (exc.details() or "") != INTERNAL_TEXT


def _stale(exc: grpc.aio.AioRpcError) -> bool:
    """The broker refused a wrap that the node's view allowed: its policy or registry
    moved on since the node last looked."""
    return exc.code() == grpc.StatusCode.PERMISSION_DENIED and "does not allow" in (
        exc.details() or ""
    )


class NodePublisher:
    """Publishing, audience resolution and delivery status of an AgencyNode."""

    me: str
    config: NodeConfig
    credentials: pki.AgencyCredentials
    ca_cert: x509.Certificate
    ca_key: EllipticCurvePublicKey
    revoked: frozenset[str]
    stub: Any
    _sent_purposes: dict[str, str]

    memory: TrustMemory
    sent: SentLog
    acts: ActLog
    log_view: LogView
    trust_config: TrustConfig
    audit_stub: Any

    def _init_publisher(self) -> None:
        self.verified = Verified(self.ca_cert, self.ca_key)
        self._policies: dict[str, tuple[Bundle, int]] = {}  # version -> (bundle, activation)
        self._view: View | None = None
        self._view_stale = True
        self._view_at = 0.0  # time.monotonic() when the view was last fetched
        self._view_lock = asyncio.Lock()
        self._decisions = DecisionCache()

    async def _retry(self, method: Any, request: Any) -> Any:
        delay = 0.1
        waits = 0  # + fair sharing: retries after the broker's RetryInfo delay
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(request, timeout=self.config.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                asked = retry_delay_ms(exc)
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and asked is not None:
                    if (
                        waits >= self.config.quota_retries
                        or asked > self.config.quota_wait_max_s * 1000
                    ):
                        raise rate_limited(exc, waits, asked) from exc
                    waits += 1
                    attempt -= 1  # a quota wait is not a failed attempt
                    log.info("over quota, waiting as the broker asks", extra={"wait_ms": asked})
                    await asyncio.sleep(asked / 1000)
                    continue
                if not transient(exc) or attempt >= self.config.publish_attempts:
                    raise
                log.info("broker unavailable, retrying", extra={"attempt": attempt})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)

    # -- the signed policy and directory -------------------------------------------------
    async def signed_policy(self, version: str) -> Bundle:
        """The active bundle, verified against its administrator-signed activation.

        The node remembers the highest activation sequence it has seen and refuses an
        older activation: a broker cannot roll it back to a once-valid, laxer bundle.
        """
        cached = self._policies.get(version)
        if cached is not None and cached[1] == self.memory.newest(POLICY):
            return cached[0]
        active = await self._retry(self.stub.GetActivePolicy, agency_pb2.GetActivePolicyRequest())
        if active.version != version:
            raise Unavailable("the broker's policy changed while resolving the audience; retry")
        if not active.activation.activation:
            raise PermissionDenied(
                "the broker runs an unsigned bootstrap policy: an administrator must activate a "
                "signed bundle (broker admin policy activate) before audiences can be checked"
            )
        verified = act.verify_activation(
            active.activation, self.ca_cert, now_ms(), expected_version=version
        )
        sequence = verified.activation.sequence
        self.memory.check(POLICY, "", sequence)  # durable: no rollback across restarts either
        bundle = cached[0] if cached else compile_bundle(act.bundle_files(active.bundle))
        if bundle.version != version:
            raise PermissionDenied("the broker served a bundle that is not the activated version")
        self.memory.accept(POLICY, "", sequence)
        self._policies[version] = (bundle, sequence)
        return bundle

    async def directory(self, *, refresh: bool = False) -> View:
        """The verified key directory and the signed policy it is decided under; fetched
        again when the broker reported another one (or `refresh`).

        Every entry must come with a proof that it is the agency's current value in the
        key directory whose root a checkpoint commits to, that checkpoint verified by
        the node's LogView (log key, k witness cosignatures, consistent with the last one
        the node verified). Revisions and key serials never go back (durable memory).
        """
        async with self._view_lock:
            view = self._view
            if view is not None and not (refresh or self._view_stale):
                return view
            known = view.digest if view is not None else ""
            got: agency_pb2.Directory = await self._retry(
                self.stub.GetDirectory,
                agency_pb2.GetDirectoryRequest(
                    known_digest=known,
                    known_size=self.log_view.head[0],
                    min_cosignatures=self.trust_config.min_cosignatures,
                ),
            )
            policy = await self.signed_policy(got.policy_version)
            if got.unchanged and view is not None:
                view = View(view.digest, policy, view.members, view.profiles, view.excluded)
            else:
                with transaction(self.memory.conn):  # what it accepts, remembered at once
                    view = self._verify_directory(got, policy)
            self._view = view
            self._view_stale = False
            self._view_at = time.monotonic()
            return view

    def _verify_directory(self, directory: agency_pb2.Directory, policy: Bundle) -> View:
        checkpoint = self.log_view.accept(directory.checkpoint.note, directory.consistency)
        root = keymap.root_from_extensions(checkpoint.checkpoint.extensions)
        if root is None:
            raise PermissionDenied(
                f"checkpoint {checkpoint.checkpoint.size} commits to no key directory: "
                "refusing every key the broker serves"
            )
        now = now_ms()
        members: dict[str, Member] = {}
        excluded: dict[str, str] = {}
        for item in directory.agencies:
            member, why = self._verify_member(item, root, now)
            if member is not None:
                members[member.entry.id] = member
            elif why is not None:
                excluded[why[0]] = why[1]
        profiles = tuple(m.profile for _id, m in sorted(members.items()))
        return View(directory.digest, policy, members, profiles, excluded)

    def _verify_member(
        self, item: agency_pb2.DirectoryEntry, root: bytes, now: int
    ) -> tuple[Member | None, tuple[str, str] | None]:
        """(member, None), or (None, (agency, why this node leaves it out)), or (None, None)
        for an entry no administrator signed (as if the broker never sent it)."""
        try:
            signed = admin_pb2.SignedAgencyEntry.FromString(item.signed_entry)
            statement = notice_pb2.SignedKeyStatement.FromString(item.key_statement)
            entry = self.verified.entry(signed, now).entry
        except (act.ActivationError, DecodeError) as exc:
            log.warning("directory entry refused", extra={"error": str(exc)})
            return None, None
        agency = entry.id
        try:
            keymap.verify(
                agency,
                keymap.map_value(item.signed_entry, item.key_statement),
                item.map_proof,
                root,
            )
        except keymap.MapProofError as exc:
            return None, (agency, str(exc))
        if not entry.not_after_ms or now > entry.not_after_ms:
            return None, (
                agency,
                f"{agency}'s signed registry entry has expired (or was signed to never "
                "expire): an administrator must renew it (broker admin agency sign-registry "
                "--renew)",
            )
        try:
            keys = self.verified.statement(statement, now, agency)
        except IdentityError as exc:
            return None, (agency, f"no usable CA-signed key ({exc})")
        if entry.key_serial != keys.serial:
            return None, (
                agency,
                f"the broker's registry entry for {agency} names key serial "
                f"{entry.key_serial}, its key statement serial {keys.serial}",
            )
        if Party("agency", agency).uri() in self.revoked:
            return None, (agency, f"{agency} is revoked (revoked.txt)")
        try:
            self.memory.accept(REVISION, agency, entry.revision)
            self.memory.accept(KEY_SERIAL, agency, keys.serial)
        except PermissionDenied as exc:
            return None, (agency, str(exc))
        return Member(profile_of(entry), keys, entry, statement, signed), None

    # -- publishing ------------------------------------------------------------------------
    async def publish(
        self,
        *,
        kind: str,
        purpose: str,
        sections: Mapping[str, bytes | str],
        tlp: str = "AMBER",
        data_subject: str | int = "suspect",
        handling_codes: Collection[str] = (),
        evaluation: tuple[str, str] | None = None,
        restrictions: notice_pb2.OriginatorRestrictions | None = None,
        recipients: Collection[str] | None = None,
        expires_in_days: int = 365,
        expires_in_ms: int | None = None,
        notice_id: str | None = None,
        version: int = 1,
        in_reply_to: str = "",
        respond_by_ms: int = 0,
        index_tokens: Collection[bytes] = (),
        suite: str | None = None,
        priority: int = notice_pb2.PRIORITY_NORMAL,
        attachments: Collection[evidence_pb2.AttachmentDescriptor] = (),
    ) -> PublishedNotice:
        """Seal and publish one notice to everyone the policy allows (or the named subset).

        ``index_tokens`` are lookup tokens of the notice's selectors (use
        :class:`broker.client.lookup.Lookups` to make them from selectors); the signed
        header commits to them, salted. ``suite`` ("classical", "hybrid" or "auto";
        default NodeConfig.suite) picks the envelope suite (broker/client/suite_choice.py).

        Raises InvalidArgument when nobody may receive it, PermissionDenied when the
        signed policy does not allow a named recipient or the broker offers a key the CA
        did not sign, and grpc.aio.AioRpcError for a refusal by the broker (its status
        says what to fix).
        """
        draft = Draft(
            kind=kind,
            purpose=purpose,
            sections=sections,
            tlp=tlp,
            data_subject=data_subject,
            handling_codes=tuple(handling_codes),
            evaluation=evaluation,
            restrictions=restrictions,
            recipients=None if recipients is None else tuple(recipients),
            expires_in_days=expires_in_days,
            expires_in_ms=expires_in_ms,
            notice_id=notice_id,
            version=version,
            in_reply_to=in_reply_to,
            respond_by_ms=respond_by_ms,
            index_tokens=tuple(index_tokens),
            suite=suite,
            priority=priority,
            attachments=tuple(attachments),
        )
        return (await self.publish_many([draft]))[0]

    async def publish_many(self, drafts: Sequence[Draft]) -> list[PublishedNotice]:
        """Seal every draft and publish them in as few Publish calls as fit (64 envelopes
        and 6 MiB each). Each call is atomic: all of its envelopes are stored, or none.

        Raises as :meth:`publish` does, before anything is sent when a draft is invalid.
        """
        if not drafts:
            return []
        for d in drafts:  # TypeError now, before anything is fetched, sealed or sent
            plain.sections_bytes(d.sections)
            plain.data_subject(d.data_subject)
        out: list[PublishedNotice] = []
        for chunk in _chunks(drafts):
            out.extend(await self._publish_chunk(chunk))
        return out

    async def _publish_chunk(self, drafts: Sequence[Draft]) -> list[PublishedNotice]:
        created = now_ms()
        headers = [self._header(d, created) for d in drafts]
        # + lookups: the header commits to the notice's index tokens (a salted digest)
        indexes = [lookup.seal_index(d.index_tokens, os.urandom) for d in drafts]
        for header, (_salt, _tokens, digest) in zip(headers, indexes, strict=True):
            header.lookup_digest = digest
        for attempt in (1, 2):
            view = await self.directory()
            size, root = self.log_view.head  # this node's view of the log, signed in
            for header in headers:  # (broker/client/gossip.py)
                header.checkpoint_size, header.checkpoint_root = size, root
            sealed = [self._seal(d, h, view) for d, h in zip(drafts, headers, strict=True)]
            for (envelope, _a, _w), (salt, tokens, _digest) in zip(sealed, indexes, strict=True):
                envelope.lookup_tokens.extend(tokens)
                envelope.lookup_salt = salt
            try:
                response = await self.publish_envelopes([e for e, _a, _w in sealed])
            except grpc.aio.AioRpcError as exc:
                if attempt == 1 and _stale(exc):
                    self._view_stale = True  # the broker's view moved on: refresh, re-seal
                    continue
                raise
            if response.directory_digest != view.digest or any(
                r.policy_version != view.policy.version for r in response.results
            ):
                self._view_stale = True
            out = []
            sent = []
            for result, (envelope, audience, withheld), d, header in zip(
                response.results, sealed, drafts, headers, strict=True
            ):
                self._sent_purposes[result.notice_id] = d.purpose
                # What this node signed, not what the broker says it stored.
                digest = hashlib.sha256(envelope.header.header_bytes).digest()
                log_index = -1 if result.duplicate else int(result.log_index)
                out.append(
                    PublishedNotice(
                        notice_id=header.notice_id,
                        version=header.version,
                        header_digest=digest,
                        duplicate=result.duplicate,
                        policy_version=result.policy_version,
                        audience=audience,
                        withheld=withheld,
                        log_index=log_index,
                    )
                )
                sent.append(
                    Sent(
                        header.notice_id,
                        header.version,
                        header.kind,
                        digest,
                        audience,
                        created,
                        header.expires_at_ms,
                        # A duplicate was logged when first published: look it up by proof.
                        max(log_index, 0),
                    )
                )
            # The audience sealed for, remembered: delivery status is checked against it.
            self.sent.record(sent)
            return out
        raise AssertionError("unreachable")

    def _header(self, d: Draft, created: int) -> notice_pb2.NoticeHeader:
        if d.tlp not in TLP_VALUES:
            raise InvalidArgument(f"unknown TLP {d.tlp!r}; use one of {sorted(TLP_VALUES)}")
        header = notice_pb2.NoticeHeader(
            notice_id=d.notice_id or str(uuid.uuid4()),
            version=d.version,
            originator=self.me,
            kind=d.kind,
            purpose=d.purpose,
            data_subject=plain.data_subject(d.data_subject),
            tlp=TLP_VALUES[d.tlp],
            handling_codes=list(d.handling_codes),
            created_at_ms=created,
            expires_at_ms=created
            + (d.expires_in_ms if d.expires_in_ms is not None else d.expires_in_days * DAY_MS),
            in_reply_to=d.in_reply_to,
            respond_by_ms=d.respond_by_ms,
            priority=d.priority,  # type: ignore[arg-type]
        )
        if d.evaluation is not None:
            header.evaluation.source, header.evaluation.information = d.evaluation
        header.attachments.extend(d.attachments)  # + evidence: signed with the header
        if d.restrictions is not None:  # signed, so that recipients can hold it themselves
            header.embargo_until_ms = d.restrictions.embargo_until_ms
        return header

    def _seal(
        self, d: Draft, header: notice_pb2.NoticeHeader, view: View
    ) -> tuple[notice_pb2.Envelope, dict[str, tuple[str, ...]], tuple[agency_pb2.Withholding, ...]]:
        """Decide the audience under the signed policy and seal; (envelope, audience,
        withholdings)."""
        restrictions = d.restrictions or notice_pb2.OriginatorRestrictions()
        facts = relay.facts_of(header, restrictions, sorted(d.sections))
        try:
            spec = view.policy.check_notice(facts)
            plaintexts = plain.sections_bytes(d.sections)
            if self.config.check_content:  # the catalogue's content_fields (core/content.py)
                content.check_content(spec, plaintexts)
        except (PolicyError, content.ContentError) as exc:
            raise InvalidArgument(str(exc)) from exc
        # Declared, signed, whatever check_content says: the broker checks the names, the
        # recipients the claim (core/content.py).
        manifest = content.manifest_of(spec, plaintexts)
        now = now_ms()
        shape = self._decisions.outcome(view.policy, view.digest, view.profiles, facts, now)
        allowed: dict[str, frozenset[str]] = {}
        withheld: list[agency_pb2.Withholding] = []
        for agency_id in sorted(view.members):
            if agency_id == self.me:
                continue
            mine = shape.allowed(agency_id)
            if mine:
                allowed[agency_id] = mine
            if mine != frozenset(facts.sections):
                withheld += relay.withholdings(shape.decision(agency_id).decisions)
        for agency_id, why in sorted(view.excluded.items()):
            withheld.append(agency_pb2.Withholding(agency_id=agency_id, reason=why))
        if d.recipients is not None:
            missing = sorted(set(d.recipients) - set(allowed))
            refused = [a for a in missing if a in view.excluded]
            if refused:  # the node itself will not seal for them: say why
                raise PermissionDenied(
                    "this node will not seal for "
                    + "; ".join(f"{a}: {view.excluded[a]}" for a in refused)
                )
            if missing:
                raise PolicyRefused(
                    f"the policy does not allow {', '.join(missing)} to receive this notice",
                    tuple(
                        Refusal(x.recipient, x.section, x.rules, x.reason)
                        for agency_id in missing
                        if agency_id in view.members
                        for x in shape.decision(agency_id).decisions
                        if not x.allowed
                    ),
                )
            allowed = {a: s for a, s in allowed.items() if a in set(d.recipients)}
        if not allowed:
            raise InvalidArgument("the policy allows nobody to receive this notice")
        suite = choose_suite(
            d.suite or self.config.suite,
            self.me,
            self.credentials.hybrid,
            {a: view.members[a].keys for a in allowed},
            header.kind,
            spec.suites,  # + post-quantum: what the signed policy requires of the kind
        )
        inputs = [
            env.RecipientInput(
                agency_id=agency_id,
                encryption_key=view.members[agency_id].keys.encryption_key,
                sections=sections,
                pq_encryption_key=view.members[agency_id].keys.pq_encryption_key,
            )
            for agency_id, sections in allowed.items()
        ]
        envelope = env.seal(
            header,
            restrictions,
            [
                env.SectionInput(name, data, manifest.get(name, ()))
                for name, data in sorted(plaintexts.items())
            ],
            inputs,
            self.credentials.signing_key
            if suite == env.SUITE_HYBRID
            else self.credentials.signing_seed,
            os.urandom,
            suite=suite,
        )
        audience = {i.agency_id: tuple(sorted(i.sections)) for i in inputs}
        return envelope, audience, tuple(withheld)

    async def publish_envelopes(
        self, envelopes: list[notice_pb2.Envelope]
    ) -> agency_pb2.PublishResponse:
        """Publish sealed envelopes in one batch, retrying safely on transient failures."""
        req = agency_pb2.PublishRequest(envelopes=envelopes)
        response: agency_pb2.PublishResponse = await self._retry(self.stub.Publish, req)
        return response

    # -- asking the broker (explanations; not used to seal) --------------------------------
    async def resolve_audience(
        self,
        draft: notice_pb2.NoticeHeader,
        restrictions: notice_pb2.OriginatorRestrictions,
        sections: Collection[str],
    ) -> agency_pb2.ResolveAudienceResponse:
        """Ask the broker who may read which sections of a draft."""
        req = agency_pb2.ResolveAudienceRequest(
            draft=draft, restrictions=restrictions, sections=sorted(sections)
        )
        response: agency_pb2.ResolveAudienceResponse = await self._retry(
            self.stub.ResolveAudience, req
        )
        return response

    async def check_audience(
        self,
        header: notice_pb2.NoticeHeader,
        restrictions: notice_pb2.OriginatorRestrictions,
        sections: Collection[str],
        audience: agency_pb2.ResolveAudienceResponse,
    ) -> None:
        """Re-evaluate a ResolveAudience answer under the signed policy and registry.

        Raises PermissionDenied if the broker offered any recipient a section that the
        administrator-signed policy, applied to the administrator-signed registry entry,
        does not allow.
        """
        policy = await self.signed_policy(audience.policy_version)
        facts = relay.facts_of(header, restrictions, sorted(sections))
        now = now_ms()
        for m in audience.members:
            if not m.entry.entry:
                raise PermissionDenied(
                    f"the broker offered {m.agency_id} without an administrator-signed registry "
                    "entry (broker admin agency sign-registry)"
                )
            entry = self.verified.entry(m.entry, now).entry
            serial = notice_pb2.KeyStatement.FromString(m.key_statement.statement).serial
            if entry.id != m.agency_id or entry.key_serial != serial:
                raise PermissionDenied(
                    f"the broker's registry entry for {m.agency_id} does not match its keys"
                )
            profile: AgencyProfile = profile_of(entry)
            allowed = policy.decide(facts, profile, now_ms=now).allowed_sections
            extra = sorted(set(m.sections) - allowed)
            if extra:
                raise PermissionDenied(
                    f"the broker offered {m.agency_id} section(s) {', '.join(extra)} that the "
                    f"signed policy {policy.version[:12]} does not allow; nothing was sealed"
                )

    # -- after publishing -----------------------------------------------------------------
    async def delivery_status(
        self, notice_id: str, version: int = 0
    ) -> agency_pb2.DeliveryStatusResponse:
        req = agency_pb2.DeliveryStatusRequest(notice_id=notice_id, version=version)
        response: agency_pb2.DeliveryStatusResponse = await self._retry(
            self.stub.GetDeliveryStatus, req
        )
        return response

    async def update_restrictions(
        self,
        notice_id: str,
        restrictions: notice_pb2.OriginatorRestrictions,
        sequence: int,
    ) -> int:
        """Replace a published notice's restrictions (signed); return how many queued
        deliveries the broker withheld because of the change."""
        update = agency_pb2.RestrictionUpdate(
            notice_id=notice_id, restrictions=restrictions, sequence=sequence, at_ms=now_ms()
        ).SerializeToString(deterministic=True)
        signature = relay.sign_restriction_update(update, self.credentials.signing_key)
        request = agency_pb2.UpdateRestrictionsRequest(update=update, signature=signature)
        response: agency_pb2.UpdateRestrictionsResponse = await self._retry(
            self.stub.UpdateRestrictions, request
        )
        # Who the update leaves out, of those sealed for: each must acknowledge erasing
        # its copy (or the broker must show that copy was never sent); verify_delivery checks.
        view = await self.directory()
        sealed = self.sent.get(notice_id)
        audience = tuple(
            sorted(
                r
                for r in (sealed[-1].audience if sealed else {})
                if r in view.members
                and intake.excluded(restrictions, view.members[r].profile, view.policy)
            )
        )
        self.acts.record(
            Act(
                lifecycle.restricted_action_id(notice_id, sequence),
                notice_id,
                "restricted",
                hashlib.sha256(update).digest(),
                audience,
                now_ms(),
            )
        )
        return response.withheld


def _chunks(drafts: Sequence[Draft]) -> list[Sequence[Draft]]:
    """Split drafts into Publish calls of at most PUBLISH_BATCH envelopes and about
    PUBLISH_BYTES of section content."""
    out: list[Sequence[Draft]] = []
    start, size = 0, 0
    for i, d in enumerate(drafts):
        n = sum(len(v) for v in d.sections.values())
        if i > start and (i - start >= PUBLISH_BATCH or size + n > PUBLISH_BYTES):
            out.append(drafts[start:i])
            start, size = i, 0
        size += n
    out.append(drafts[start:])
    return out
