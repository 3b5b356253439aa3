"""Publishing from an agency node: audiences resolved locally, many notices per RPC.

The node holds the administrator-signed policy bundle (GetActivePolicy) and the
signed directory of agencies (GetDirectory), each verified once and kept
(broker/client/signedview.py, broker/client/directory.py). For every draft it
decides the audience itself, by the policy's compiled masks, once per notice shape
(broker/core/decisions.py), seals one key wrap per recipient to the key the CA bound
to it, signs, and sends many envelopes in one Publish. The broker still re-checks
every wrap against its own policy and registry, so a node whose view is stale is
refused (nothing stored) and re-seals after refreshing its view; and the broker
cannot widen an audience, because the node never asks it who may read what.

Mixed into AgencyNode (broker/client/node.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker import pki
from broker.client import plain
from broker.client.directory import Verified, View
from broker.client.retry import rate_limited, retry_delay_ms
from broker.client.sent import Act, ActLog, Sent, SentLog
from broker.client.signedview import SignedView
from broker.client.suite_choice import choose_suite
from broker.client.types import Draft, NodeConfig, PublishedNotice, now_ms
from broker.core import content, intake, lifecycle, lookup, relay
from broker.core import envelope as env
from broker.core.decisions import DecisionCache
from broker.core.policy import Bundle, PolicyError
from broker.core.relay import TLP_NAMES
from broker.errors import (
    INTERNAL_TEXT,
    InvalidArgument,
    PermissionDenied,
    PolicyRefused,
    Refusal,
)
from broker.v1 import agency_pb2, evidence_pb2, notice_pb2

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


class NodePublisher(SignedView):
    """Publishing, audience resolution and delivery status of an AgencyNode."""

    me: str
    config: NodeConfig
    credentials: pki.AgencyCredentials
    ca_key: EllipticCurvePublicKey
    _sent_purposes: dict[str, str]

    sent: SentLog
    acts: ActLog
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
