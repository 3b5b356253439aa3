"""Lifecycle actions an agency node takes: suspend, resume, withdraw, cancel, extend,
flag, ask for a flag to be lifted, lift it; and replies (hit reports, requests for
information, corrections). Mixed into AgencyNode."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from broker import pki
from broker.client import plain
from broker.client.directory import View
from broker.client.logview import LogView
from broker.client.reasons import seal_reason
from broker.client.sent import Act, ActLog
from broker.client.types import PublishedNotice, ReceivedNotice, now_ms
from broker.core import lifecycle
from broker.errors import InvalidArgument
from broker.v1 import agency_pb2, notice_pb2


class _Node(Protocol):
    """What the lifecycle methods use of the node (AgencyNode provides it)."""

    me: str
    credentials: pki.AgencyCredentials
    _encryption_public_key: bytes
    stub: Any
    _sent_purposes: dict[str, str]

    @property
    def _retry(self) -> Callable[..., Awaitable[Any]]: ...

    @property
    def act(self) -> Callable[..., Awaitable[agency_pb2.ActResponse]]: ...

    @property
    def publish(self) -> Callable[..., Awaitable[PublishedNotice]]: ...

    @property
    def _purpose_of(self) -> Callable[[str], str]: ...

    @property
    def _remember_act(self) -> Callable[..., None]: ...

    @property
    def expected_audience(self) -> Callable[[str], tuple[str, ...]]: ...

    @property
    def directory(self) -> Callable[..., Awaitable[View]]: ...

    @property
    def _originator_of(self) -> Callable[[str], str]: ...

    @property
    def _reason_keys(self) -> Callable[[str], Awaitable[dict[str, bytes]]]: ...

    acts: ActLog
    log_view: LogView


class NodeLifecycle:
    """Lifecycle actions and replies of an AgencyNode."""

    # -- lifecycle ------------------------------------------------------------------------
    async def act(
        self: _Node,
        kind: str | int,
        notice_id: str,
        *,
        reason: str = "",
        until_ms: int = 0,
        target: str = "",
        action_id: str | None = None,
    ) -> agency_pb2.ActResponse:
        """Sign and send a lifecycle action ("suspend", "withdraw" ... or its protobuf
        number); safe to retry (the action id is its key).

        The reason is sealed to the agencies it is for (broker/client/reasons.py): the
        broker sees and keeps only its digest."""
        kind_value = plain.lifecycle_kind(kind)
        digest, sealed = seal_reason(reason, await self._reason_keys(notice_id))
        action = notice_pb2.LifecycleAction(
            action_id=action_id or str(uuid.uuid4()),
            notice_id=notice_id,
            actor=self.me,
            kind=kind_value,
            reason=digest,
            until_ms=until_ms,
            at_ms=now_ms(),
            target=target,
            sealed_reason=sealed,
            checkpoint_size=self.log_view.head[0],  # this node's view of the log, signed in
            checkpoint_root=self.log_view.head[1],
        ).SerializeToString(deterministic=True)
        signed = notice_pb2.SignedLifecycleAction(
            action=action, signature=lifecycle.sign_action(action, self.credentials.signing_key)
        )
        response: agency_pb2.ActResponse = await self._retry(self.stub.Act, signed)
        self._remember_act(kind_value, notice_id, signed, response)
        return response

    async def _reason_keys(self: _Node, notice_id: str) -> dict[str, bytes]:
        """The X25519 keys of the agencies a reason about `notice_id` is sealed for: this
        node, and the sealed audience (its own notice) or the originator (another's)."""
        view = await self.directory()
        wanted = set(self.expected_audience(notice_id)) or {self._originator_of(notice_id)}
        keys = {a: view.members[a].keys.encryption_key for a in wanted if a in view.members}
        keys[self.me] = self._encryption_public_key
        return keys

    def _remember_act(
        self: _Node,
        kind: notice_pb2.LifecycleKind.ValueType,
        notice_id: str,
        signed: notice_pb2.SignedLifecycleAction,
        response: agency_pb2.ActResponse,
    ) -> None:
        """Remember what this node signed and who must acknowledge it. A withdrawal or a
        cancellation of its own notice must reach everyone the newest version was sealed
        for (the signed audience), whatever the broker's rows say; verify_delivery checks
        that each was told and acknowledged."""
        told = tuple(sorted(response.told))
        audience = told
        if kind in (notice_pb2.LIFECYCLE_WITHDRAW, notice_pb2.LIFECYCLE_CANCEL):
            audience = tuple(sorted(set(self.expected_audience(notice_id)) | set(told)))
        self.acts.record(
            Act(
                lifecycle.peek_action(signed).action_id,
                notice_id,
                lifecycle.NAMES.get(kind, "unknown"),
                hashlib.sha256(signed.action).digest(),
                audience,
                now_ms(),
            )
        )

    async def suspend(
        self: _Node, notice_id: str, until_ms: int, reason: str = ""
    ) -> agency_pb2.ActResponse:
        return await self.act(
            notice_pb2.LIFECYCLE_SUSPEND, notice_id, until_ms=until_ms, reason=reason
        )

    async def resume(self: _Node, notice_id: str, reason: str = "") -> agency_pb2.ActResponse:
        return await self.act(notice_pb2.LIFECYCLE_RESUME, notice_id, reason=reason)

    async def withdraw(self: _Node, notice_id: str, reason: str) -> agency_pb2.ActResponse:
        return await self.act(notice_pb2.LIFECYCLE_WITHDRAW, notice_id, reason=reason)

    async def cancel(self: _Node, notice_id: str, reason: str) -> agency_pb2.ActResponse:
        return await self.act(notice_pb2.LIFECYCLE_CANCEL, notice_id, reason=reason)

    async def extend(
        self: _Node, notice_id: str, until_ms: int, justification: str
    ) -> agency_pb2.ActResponse:
        return await self.act(
            notice_pb2.LIFECYCLE_EXTEND, notice_id, until_ms=until_ms, reason=justification
        )

    async def flag(self: _Node, notice_id: str, reason: str) -> agency_pb2.ActResponse:
        return await self.act(notice_pb2.LIFECYCLE_FLAG, notice_id, reason=reason)

    async def request_flag_lift(
        self: _Node, notice_id: str, agency: str, reason: str = ""
    ) -> agency_pb2.ActResponse:
        return await self.act(
            notice_pb2.LIFECYCLE_REQUEST_FLAG_LIFT, notice_id, target=agency, reason=reason
        )

    async def lift_flag(self: _Node, notice_id: str, reason: str = "") -> agency_pb2.ActResponse:
        return await self.act(notice_pb2.LIFECYCLE_LIFT_FLAG, notice_id, reason=reason)

    async def reply(
        self: _Node,
        kind: str,
        in_reply_to: ReceivedNotice | str,
        sections: Mapping[str, bytes | str],
        *,
        to: str | None = None,
        respond_within_ms: int = 0,
        tlp: str = "AMBER",
        purpose: str | None = None,
    ) -> PublishedNotice:
        """Send a hit report, a request for information (to the notice's originator) or a
        correction (from the originator to `to`, or to everyone the policy allows)."""
        if isinstance(in_reply_to, ReceivedNotice):
            notice_id, purpose = in_reply_to.notice_id, in_reply_to.header.purpose
            recipients: list[str] | None = [to or in_reply_to.originator]
            data_subject = in_reply_to.header.data_subject
        else:
            notice_id, data_subject = in_reply_to, notice_pb2.DATA_SUBJECT_OTHER
            purpose = purpose or self._purpose_of(notice_id)
            recipients = [to] if to else None
        return await self.publish(
            kind=kind,
            purpose=purpose,
            sections=sections,
            tlp=tlp,
            data_subject=data_subject,
            recipients=recipients,
            in_reply_to=notice_id,
            respond_by_ms=now_ms() + respond_within_ms if respond_within_ms else 0,
        )

    def _purpose_of(self: _Node, notice_id: str) -> str:
        purpose = self._sent_purposes.get(notice_id)
        if purpose is None:
            raise InvalidArgument(f"this node did not publish notice {notice_id}: pass its purpose")
        return purpose

    async def replies(self: _Node, open_only: bool = False) -> agency_pb2.ListRepliesResponse:
        request = agency_pb2.ListRepliesRequest(open_only=open_only)
        response: agency_pb2.ListRepliesResponse = await self._retry(self.stub.ListReplies, request)
        return response
