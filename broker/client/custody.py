"""Auditing a notice's chains of custody (``broker audit custody``).

The auditor trusts the CA and the log key, not the broker. For each attachment of the
notice that the verified log shows custody leaves for, it fetches the chain the broker
stores and checks, without trusting the broker:

- every link's signature, by the key the CA's statement binds to its agency;
- the links' hash chain from the genesis, link 0 being the originator sealing it;
- every link over the header digest of the notice's NoticePublished leaf, and over the
  evidence digest the originator signed in link 0;
- each link is the CustodyRecorded leaf at its log index (same record digest and seq), and
  the chain holds exactly the links the log holds: a link the broker drops, reorders,
  replaces or forges shows as a failure naming it.

Links appended after the newest checkpoint are counted as pending, not verified: run it
again once a checkpoint covers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from broker import pki
from broker.client.audit import AuditClient, Trust, now_ms, verified_leaves
from broker.core import custody
from broker.core.identity import IdentityError, Party, verify_key_statement
from broker.v1 import evidence_pb2, evidence_pb2_grpc


@dataclass(frozen=True)
class Link:
    seq: int
    agency: str
    action: str
    at_ms: int
    note: str
    log_index: int
    record_digest: bytes


@dataclass
class ChainReport:
    notice_id: str
    version: int
    section: str
    evidence_digest: bytes = b""
    links: list[Link] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pending: int = 0  # links served whose log index the verified checkpoint does not cover yet
    checkpoint_size: int = 0  # the size of the verified checkpoint the chain was checked at

    @property
    def ok(self) -> bool:
        """Every link verified and covered by the checkpoint (pending links are not yet)."""
        return not self.problems and not self.pending


def statement_keys(keys_dir: Path, trust: Trust) -> Callable[[str], bytes | None]:
    """Agency id -> its signing key, from the CA-signed statements in the keys directory."""
    cache: dict[str, bytes | None] = {}

    def key(agency: str) -> bytes | None:
        if agency not in cache:
            try:
                path = pki.party_directory(keys_dir, Party("agency", agency)) / pki.STATEMENT
                cache[agency] = verify_key_statement(
                    pki.read_statement(path), trust.ca_key, now_ms(), expected_agency=agency
                ).signing_key
            except (IdentityError, OSError, ValueError):
                cache[agency] = None
        return cache[agency]

    return key


async def audit_custody(
    client: AuditClient,
    trust: Trust,
    keys_dir: Path,
    notice_id: str,
    *,
    keys: Callable[[str], bytes | None] | None = None,
) -> list[ChainReport]:
    """Verify every chain of custody of ``notice_id`` against the verified log (see the
    module docstring). Returns one report per attachment; an attachment with no logged
    link does not appear. Raises AuditFailure if the log does not verify."""
    public_key = keys or statement_keys(keys_dir, trust)
    leaves = await verified_leaves(client, trust)
    size = len(leaves)  # the verified checkpoint's size
    headers: dict[int, bytes] = {}
    originators: dict[int, str] = {}
    logged: dict[tuple[int, str], list[tuple[int, evidence_pb2.CustodyRecorded]]] = {}
    for index, leaf in leaves:
        if leaf.HasField("notice") and leaf.notice.notice_id == notice_id:
            headers[leaf.notice.version] = leaf.notice.header_digest
            originators[leaf.notice.version] = leaf.notice.originator
        elif leaf.HasField("custody") and leaf.custody.notice_id == notice_id:
            c = leaf.custody
            logged.setdefault((c.version, c.section), []).append((index, c))
    stub = evidence_pb2_grpc.EvidenceServiceStub(client.channel)
    reports = []
    for (version, section), entries in sorted(logged.items()):
        report = ChainReport(notice_id, version, section, checkpoint_size=size)
        reports.append(report)
        ref = evidence_pb2.AttachmentRef(notice_id=notice_id, version=version, section=section)
        chain: evidence_pb2.CustodyChain = await stub.GetCustody(ref, timeout=client.timeout_s)
        if version not in headers:
            report.problems.append(f"the log holds no NoticePublished leaf for v{version}")
            continue
        signed = [e.signed for e in chain.entries]
        if not signed:
            report.problems.append("the broker serves no custody link, but the log holds some")
            continue
        first = _record(signed[0], report)
        if first is None:
            continue
        report.evidence_digest = first.evidence_digest
        expected = custody.Expected(
            notice_id, version, section, first.evidence_digest, headers[version]
        )
        try:
            records = custody.verify_chain(signed, expected, public_key, originators[version])
        except custody.CustodyError as exc:
            report.problems.append(str(exc))
            records = []
        for seq, (entry, r) in enumerate(zip(chain.entries, records, strict=False)):
            digest = custody.record_digest(entry.signed.record)
            report.links.append(
                Link(
                    seq,
                    r.agency,
                    custody.ACTIONS.get(r.action, "?"),
                    r.at_ms,
                    r.note,
                    entry.log_index,
                    digest,
                )
            )
        by_index = dict(entries)
        covered = [e for e in chain.entries if e.log_index < size]
        report.pending = len(chain.entries) - len(covered)
        for entry in covered:
            link = by_index.get(entry.log_index)
            digest = custody.record_digest(entry.signed.record)
            if link is None or link.record_digest != digest:
                report.problems.append(
                    f"a custody link claims log index {entry.log_index}, where the log holds "
                    "no such link"
                )
        if len(covered) != len(entries):
            report.problems.append(
                f"the log holds {len(entries)} custody link(s); the broker serves "
                f"{len(covered)}: a link is missing"
            )
        seqs = [c.seq for _, c in entries]
        if seqs != list(range(len(entries))):
            report.problems.append(f"the logged links are not in order: {seqs}")
    return reports


def _record(
    signed: evidence_pb2.SignedCustody, report: ChainReport
) -> evidence_pb2.CustodyRecord | None:
    try:
        return custody.parse_record(signed)
    except custody.CustodyError as exc:
        report.problems.append(str(exc))
        return None
