"""Idempotent re-publishes answered from the store, before any check runs.

A Publish whose every envelope was stored before, byte for byte, by the same
originator gets the stored outcomes again (as duplicates), found by (notice id,
version) and the envelope's SHA-256 in one read: no signature, bounds or policy
check runs again. Anything else (a new envelope, other bytes, a caller that may not
publish now) returns None and takes the full path, which says what is wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import partial

from google.protobuf.message import DecodeError

from broker.core.relay import RegisteredAgency
from broker.server import metrics
from broker.store.api import Store, StoredPublish
from broker.store.runner import StoreRunner
from broker.v1 import agency_pb2, notice_pb2


def _stored(keys: Sequence[tuple[str, int]], store: Store) -> dict[tuple[str, int], StoredPublish]:
    return store.stored_publishes(keys)


async def republished(
    runner: StoreRunner[Store],
    registry: Mapping[str, RegisteredAgency],
    registry_key: str,
    me: str,
    req: agency_pb2.PublishRequest,
) -> agency_pb2.PublishResponse | None:
    """The answer to `me` publishing `req` again, from the store; None when any envelope
    is new or differs, or when `me` may not publish now (suspended, revoked)."""
    entry = registry.get(me)
    if entry is None or entry.profile.status != "active":
        return None
    keys: list[tuple[str, int]] = []
    digests: list[bytes] = []
    for e in req.envelopes:
        try:
            header = notice_pb2.NoticeHeader.FromString(e.header.header_bytes)
        except DecodeError:
            return None  # the checks will say what is wrong with it
        keys.append((header.notice_id, header.version))
        digests.append(hashlib.sha256(e.SerializeToString(deterministic=True)).digest())
    if len(set(keys)) != len(keys):
        return None
    stored = await runner.call(partial(_stored, keys))
    outcomes = []
    for key, digest in zip(keys, digests, strict=True):
        found = stored.get(key)
        if found is None or found.originator != me or found.envelope_digest != digest:
            return None
        outcomes.append(found.outcome)
    resp = agency_pb2.PublishResponse(directory_digest=registry_key)
    for o in outcomes:
        resp.results.add(
            notice_id=o.notice_id,
            version=o.version,
            header_digest=o.header_digest,
            duplicate=True,
            recipients=list(o.recipients),
            policy_version=o.policy_version,
        )
    metrics.DUPLICATES.inc(len(outcomes))
    metrics.REPUBLISHES.inc(len(outcomes))
    return resp
