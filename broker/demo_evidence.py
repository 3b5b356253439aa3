"""The demo's evidence step (+ evidence): a sealed evidence file from one agency to another,
with its chain of custody verified by the auditor.

:func:`evidence_transfer` needs running nodes whose listeners record what they open (the
demo's ``inboxes``-style lookup is passed in as ``opened``). It seals a file of ``size``
bytes as the attachment of a notice (by default 50 MB, as issue 15 asks of the demo),
uploads it, lets the recipient download, verify and open it, and has the auditor verify the
four-link chain (sealed, received, opened, forwarded) against the transparency log.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from broker.client import audit as ac
from broker.client.attachments import Evidence
from broker.client.custody import ChainReport, audit_custody
from broker.client.node import AgencyNode, ReceivedNotice
from broker.core.identity import Party
from broker.sandbox import AUDITOR_ID

Say = Callable[[str], None]
DEMO_SIZE = 50 * 1000 * 1000
MIB = 1024 * 1024


def write_evidence(path: Path, size: int) -> bytes:
    """A file of `size` random bytes (written a MiB at a time); its SHA-256."""
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.digest()


async def evidence_transfer(
    nodes: Mapping[str, AgencyNode],
    opened: Callable[[str, int, str], Awaitable[ReceivedNotice]],
    target: str,
    keys_dir: Path,
    work_dir: Path,
    say: Say,
    *,
    publish: Mapping[str, Any],
    section: str = "photos",
    by: str = "FR-NCB",
    to: str = "DE-BKA",
    size: int = DEMO_SIZE,
) -> dict[str, object]:
    """Move one sealed evidence file from ``by`` to ``to`` and audit its custody; a summary.

    ``publish`` holds the notice's other AgencyNode.publish arguments (kind, purpose, the
    other sections ...); ``opened(notice_id, version, agency)`` waits until that agency's
    listener opened the notice and returns it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    source = work_dir / "evidence.bin"
    want = await asyncio.to_thread(write_evidence, source, size)
    published, sealed = await Evidence(nodes[by]).publish(
        source, section=section, recipients=[to], **publish
    )
    d = sealed.descriptor
    say("")
    say(f"evidence: {by} sealed {size / 1e6:.0f} MB in {d.chunk_count} chunks into section")
    say(f"  {section} of notice {published.notice_id}; the signed header holds its Merkle root")
    say(f"  {d.chunks_root.hex()[:16]}..., the section its key; the broker stores ciphertext only")
    notice = await opened(published.notice_id, published.version, to)
    ev = Evidence(nodes[to])
    out = work_dir / "evidence.received"
    got = await ev.fetch(notice, section, out)
    same = await asyncio.to_thread(_digest, out) == want
    say(f"  {to} downloaded, checked and opened it: SHA-256 {'matches' if same else 'DIFFERS'}")
    await ev.forwarded(notice, section, "its forensic laboratory")
    report = await _audited(target, keys_dir, published.notice_id)
    say(f"  chain of custody, verified by auditor {AUDITOR_ID} against the log:")
    for link in report.links:
        note = f" ({link.note})" if link.note else ""
        say(f"    #{link.seq} {link.action:<9} by {link.agency}{note}, log entry {link.log_index}")
    say("  verified" if report.ok else "  FAILED: " + "; ".join(report.problems))
    for path in (source, out):
        path.unlink(missing_ok=True)
    return {
        "notice_id": published.notice_id,
        "size": got.size,
        "chunks": d.chunk_count,
        "plaintext_matches": same,
        "custody": [(link.agency, link.action) for link in report.links],
        "custody_verified": report.ok,
    }


def _digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.digest()


async def _audited(target: str, keys_dir: Path, notice_id: str, links: int = 4) -> ChainReport:
    """The auditor's report once a checkpoint covers every link (checkpoints come often)."""
    trust = ac.load_trust(keys_dir)
    async with ac.AuditClient(target, keys_dir, Party("auditor", AUDITOR_ID)) as client:
        report = None
        for _ in range(300):
            reports = await audit_custody(client, trust, keys_dir, notice_id)
            report = reports[0] if reports else None
            if report is not None and (
                report.problems or (report.ok and len(report.links) >= links)
            ):
                return report
            await asyncio.sleep(0.1)
    if report is None:
        raise TimeoutError("no checkpoint covered the custody links")
    return report
