"""Every leaf fetched and checked against a checkpoint, and the log's decisions replayed.

:func:`verified_leaves` fetches every entry up to the latest checkpoint and checks
that they hash to its root (auditors see every entry); :func:`replay` does the
same, then fetches the decision records and the policy bundles they name and
re-evaluates every logged decision (broker/core/replay.py). Part of
:mod:`broker.client.audit`.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.client.audit.client import AuditClient, AuditFailure
from broker.client.audit.trust import Trust
from broker.core import auditing, logleaf
from broker.core import replay as rp
from broker.core import tlog as tree
from broker.core.merkle import leaf_hash
from broker.v1 import audit_pb2


@dataclass(frozen=True)
class ReplayResult:
    checkpoint: auditing.VerifiedCheckpoint
    report: rp.ReplayReport


async def verified_leaves(client: AuditClient, trust: Trust) -> list[tuple[int, audit_pb2.LogLeaf]]:
    """Every leaf up to the latest checkpoint, checked to hash to its root (auditors)."""
    fetched = await client.checkpoint(min_cosignatures=trust.min_cosignatures)
    verified = trust.open(fetched.note)
    size = verified.checkpoint.size
    entries = await client.entries(0, size)
    if [e.index for e in entries] != list(range(size)):
        raise AuditFailure("this needs every entry: use an auditor certificate")
    frontier = tree.extend(0, {}, [leaf_hash(e.leaf) for e in entries])
    if tree.root(size, frontier) != verified.checkpoint.root:
        raise AuditFailure(f"the entries served do not hash to checkpoint {size}'s root")
    return [(e.index, logleaf.parse(e.leaf)) for e in entries]


async def replay(client: AuditClient, trust: Trust) -> ReplayResult:
    """Fetch and verify every entry up to the latest checkpoint, then re-evaluate every
    logged decision (see broker.core.replay). Raises AuditFailure if the entries do not
    hash to the checkpoint's root, CheckpointError if the checkpoint does not verify."""
    fetched = await client.checkpoint(min_cosignatures=trust.min_cosignatures)
    verified = trust.open(fetched.note)
    size = verified.checkpoint.size
    entries = await client.entries(0, size)
    if [e.index for e in entries] != list(range(size)):
        raise AuditFailure("replay needs every entry: use an auditor certificate")
    frontier = tree.extend(0, {}, [leaf_hash(e.leaf) for e in entries])
    if tree.root(size, frontier) != verified.checkpoint.root:
        raise AuditFailure(
            f"the entries served do not hash to checkpoint {size}'s root: the log was altered"
        )
    leaves = [(e.index, logleaf.parse(e.leaf)) for e in entries]
    decisions = [leaf.decision for _, leaf in leaves if leaf.HasField("decision")]
    records = await client.decision_records([(d.notice_id, d.version) for d in decisions])
    bundles = {}
    named = {d.policy_version for d in decisions} | {
        leaf.forwarded.policy_version for _, leaf in leaves if leaf.HasField("forwarded")
    }
    for version in sorted(named):
        bundles[version] = await client.bundle(version)
    return ReplayResult(verified, rp.replay(leaves, records, bundles, trust.ca_cert))
