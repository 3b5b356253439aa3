"""AgencyService.Lookup, and the lookup parts of the publish path.

The broker sees tokens only: OPRF outputs the agency's node computed with the
lookup-key service. It matches them against the index, releases what the
catalogue says of each hit (:func:`broker.core.lookup.release_of`) and logs the
lookup as one transparency-log leaf, in the same transaction as the hit counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from broker.core import lookup
from broker.core.lifecycle import NoticeState
from broker.errors import FailedPrecondition, PermissionDenied
from broker.server.wire import now_ms, parse
from broker.v1 import lookup_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp


def index_of_envelope(
    header: notice_pb2.NoticeHeader, envelope: notice_pb2.Envelope
) -> list[bytes]:
    """The publish path's check: the envelope's tokens against its signed header."""
    return lookup.check_index(header, envelope)


def store_index(store: Any, notice_id: str, version: int, tokens: Sequence[bytes]) -> None:
    """The publish path's write, in the publish transaction: replace the notice's tokens.
    A notice that never had tokens and has none costs one indexed read."""
    store.index_tokens(notice_id, version, tokens)


def check_hit_reply(
    store: Any, header: notice_pb2.NoticeHeader, recipients: frozenset[str]
) -> None:
    """The publish path's check of a reply.lookup_hit (instead of check_reply)."""
    state: NoticeState | None = store.notice_state(header.in_reply_to)
    lookup.check_hit_reply(
        header,
        recipients,
        state.originator if state else None,
        state.closed if state else "",
        store.has_lookup_hit(header.originator, header.in_reply_to),
    )


async def handle_lookup(app: BrokerApp, me: str, data: bytes) -> lookup_pb2.LookupResponse:
    """Answer one Lookup from agency ``me``."""
    req = parse(lookup_pb2.LookupRequest, data)
    policy = app.policy
    tokens = lookup.check_lookup(req, policy.catalogue.purposes)
    agency = app.registry.get(me)
    if agency is None:
        raise PermissionDenied(f"{me} is not in the agency registry")
    if agency.profile.status != "active":
        raise FailedPrecondition(f"{me} is {agency.profile.status} and may not look up")
    roles = agency.profile.roles
    now = now_ms()

    def run(store: Any) -> tuple[dict[int, list[lookup.IndexedNotice]], int]:
        hits = store.match_tokens(tokens, me, now)
        index = store.record_lookup(me, req.purpose, tokens, hits, now)
        return hits, index

    hits, log_index = await app.runner.call(run)
    resp = lookup_pb2.LookupResponse(log_index=log_index)
    for i in range(len(tokens)):
        result = resp.results.add(hit=i in hits)
        for n in hits.get(i, []):
            originator = app.registry.get(n.originator)
            statement = originator.statement if originator is not None else b""
            spec = policy.catalogue.lookups.get(n.kind)
            result.hits.append(lookup.release_of(n, spec, roles, statement))
    return resp
