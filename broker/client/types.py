"""The values an agency node takes and gives: its configuration, what it published and
received, the lifecycle actions it applied, and its listening statistics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from broker.core import lifecycle
from broker.v1 import agency_pb2, evidence_pb2, notice_pb2

__all__ = [
    "Draft",
    "EventHandler",
    "Handler",
    "LifecycleHandler",
    "LifecycleNotice",
    "ListenStats",
    "NodeConfig",
    "PublishedNotice",
    "ReceivedNotice",
    "now_ms",
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class NodeConfig:
    agency_id: str
    broker: str  # host:port of the broker, or "ip:port,ip:port" of its replicas
    keys_dir: Path  # where this agency's credentials and the CA certificate are
    state_dir: Path  # the node's inbox
    rpc_timeout_s: float = 10.0
    window: int = 128  # credit window: deliveries in flight at most
    publish_attempts: int = 8
    reconnect_max_s: float = 5.0
    quota_retries: int = 3  # waits the broker asks for (RetryInfo) before RateLimited
    quota_wait_max_s: float = 5.0  # a longer wait asked for raises RateLimited at once
    trust_file: Path | None = None  # the deployment's trust.toml (default: in keys_dir)
    lb_policy: str = "pick_first"  # over several replicas: or "round_robin" (client/target.py)
    suite: str = "classical"  # envelope suite: classical | hybrid | auto (client/suite_choice.py)
    # Refuse a section lacking a field its kind's catalogue entry asks for (content_fields,
    # broker/core/content.py) before sealing, naming the field. False is for migration
    # only: the node then seals such a notice and the broker refuses it at publish (its
    # signed content manifest lacks the field), so nothing more gets through, the refusal
    # merely comes later, as the broker's InvalidArgument.
    check_content: bool = True


@dataclass(frozen=True)
class Draft:
    """A notice to seal and publish (AgencyNode.publish_many). Sections map a catalogue
    section name to its content; the audience is every agency the signed policy allows,
    or the named `recipients` (each of which it must allow)."""

    kind: str
    purpose: str
    sections: Mapping[str, bytes | str]  # str is sent as UTF-8
    tlp: str = "AMBER"
    data_subject: str | int = "suspect"  # or "convicted", "victim" ... (broker.client.plain)
    handling_codes: tuple[str, ...] = ()
    evaluation: tuple[str, str] | None = None
    restrictions: notice_pb2.OriginatorRestrictions | None = None
    recipients: tuple[str, ...] | None = None
    expires_in_days: int = 365
    expires_in_ms: int | None = None
    notice_id: str | None = None
    version: int = 1
    in_reply_to: str = ""
    respond_by_ms: int = 0
    # Lookup tokens of the notice's selectors (broker.client.lookup.Lookups makes them);
    # the signed header commits to them, salted (broker.core.lookup.seal_index).
    index_tokens: tuple[bytes, ...] = ()
    suite: str | None = None  # classical | hybrid | auto; None: NodeConfig.suite
    priority: int = 0  # + judicial: notice_pb2.PRIORITY_NORMAL or PRIORITY_URGENT (signed)
    # + evidence: descriptors of sealed attachments (broker.client.attachments seals them);
    # each names one of `sections`, whose content is its AttachmentKey
    attachments: tuple[evidence_pb2.AttachmentDescriptor, ...] = ()


@dataclass(frozen=True)
class PublishedNotice:
    notice_id: str
    version: int
    header_digest: bytes
    duplicate: bool
    policy_version: str
    audience: Mapping[str, tuple[str, ...]]  # recipient -> sections sealed for it
    withheld: tuple[agency_pb2.Withholding, ...] = ()
    log_index: int = -1  # its NoticePublished leaf, as the broker says (-1: a duplicate)


@dataclass(frozen=True)
class ReceivedNotice:
    header: notice_pb2.NoticeHeader
    header_digest: bytes
    sections: Mapping[str, bytes]
    attempt: int
    # What the policy asks of this recipient: show the caveats to those who handle the
    # notice, do not pass it on where so marked, delete it within max_retention_days.
    obligations: tuple[notice_pb2.Obligation, ...] = ()
    # Per section, the catalogue fields the originator's signed content manifest declares
    # (broker/core/content.py); the node refuses a notice whose sections lack one of them.
    manifest: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def notice_id(self) -> str:
        return self.header.notice_id

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def originator(self) -> str:
        return self.header.originator

    @property
    def kind(self) -> str:
        return self.header.kind

    @property
    def data_subject(self) -> str:
        """ "suspect", "victim" ... as the originator signed it."""
        from broker.client.plain import data_subject_name

        return data_subject_name(self.header.data_subject)

    def text(self, section: str) -> str:
        """A section's content as text (UTF-8); KeyError if the notice has no such section
        (or this recipient was not given it)."""
        return self.sections[section].decode("utf-8")


@dataclass(frozen=True)
class LifecycleNotice:
    """A lifecycle action on a notice this node holds or issued, verified."""

    action: notice_pb2.LifecycleAction
    erased: int  # local copies the node erased because of it (withdraw, cancel, expiry ...)
    # The reason as text when it was sealed for this agency (its signed digest otherwise):
    # action.reason holds only the digest the broker saw (broker/client/reasons.py).
    reason: str = ""

    @property
    def kind(self) -> str:
        return lifecycle.NAMES.get(self.action.kind, "unknown")


Handler = Callable[[ReceivedNotice], Awaitable[None]]
LifecycleHandler = Callable[[LifecycleNotice], Awaitable[None]]
EventHandler = Callable[[agency_pb2.StatusEvent], Awaitable[None]]


@dataclass
class ListenStats:
    received: int = 0  # handed to the application
    duplicates: int = 0  # redeliveries of notices already taken in
    rejected: int = 0  # deliveries that did not open (never receipted)
    receipts_acked: int = 0
    receipts_refused: int = 0  # receipts the broker did not count (see ReceiptRefusal)
    actions: int = 0  # lifecycle actions applied and acknowledged
    connects: int = 0
    acked: set[tuple[str, int]] = field(default_factory=set)
