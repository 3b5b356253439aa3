"""`broker node attach`, `broker node fetch` and `broker audit custody`: sealed attachments
with a progress bar on stderr, and the chain of custody checked by an auditor."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import grpc

from broker.core import attachment as att
from broker.errors import BrokerError


class ProgressBar:
    """A one-line progress bar (bytes done of total, rate), redrawn at most 10 times a
    second; silent when ``out`` is None."""

    def __init__(self, label: str, out: TextIO | None = sys.stderr, width: int = 30) -> None:
        self.label, self.out, self.width = label, out, width
        self.started = time.monotonic()
        self.drawn = 0.0
        self.phase = label

    def __call__(self, done: int, total: int) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if now - self.drawn < 0.1 and done < total:
            return
        self.drawn = now
        share = done / total if total else 1.0
        filled = int(share * self.width)
        rate = done / max(now - self.started, 1e-6) / 1e6
        self.out.write(
            f"\r{self.phase:<10} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{share * 100:5.1f}% {done / 1e6:,.1f}/{total / 1e6:,.1f} MB {rate:,.1f} MB/s"
        )
        if done >= total:
            self.out.write("\n")
        self.out.flush()

    def next(self, phase: str) -> ProgressBar:
        self.phase, self.started, self.drawn = phase, time.monotonic(), 0.0
        return self


def register_node(nsub: Any, common: Any, sections: Any) -> None:
    p = nsub.add_parser(
        "attach", help="seal a file as a notice's attachment, publish, upload (resumable)"
    )
    common(p)
    p.add_argument("file", type=Path, help="the evidence file")
    p.add_argument("--attach-section", required=True, help="the section the attachment is in")
    p.add_argument("--kind", required=True)
    p.add_argument("--purpose", required=True)
    p.add_argument("--tlp", default="AMBER")
    p.add_argument("--to", action="append", help="only these recipients")
    sections(p)
    p.add_argument("--media-type", default="application/octet-stream")
    p.add_argument("--chunk-size", type=int, default=att.DEFAULT_CHUNK_SIZE)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_attach)

    p = nsub.add_parser("fetch", help="download, verify and open a notice's attachment (resumable)")
    common(p)
    p.add_argument("notice_id")
    p.add_argument("--attach-section", required=True)
    p.add_argument("--out", type=Path, required=True, help="where to write the file")
    p.add_argument("--version", type=int, default=0, help="notice version (default: newest)")
    p.add_argument("--forwarded-to", help="also sign a 'forwarded' custody link naming this")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_fetch)


def _fail(text: str) -> int:
    print(f"error: {text}", file=sys.stderr)
    return 1


def run_attach(args: argparse.Namespace) -> int:
    from broker.cli.nodeargs import _node, _sections
    from broker.client.attachments import Evidence  # here, not at every command's start-up

    others = _sections(args.section, args.field) if args.section or args.field else {}
    bar = ProgressBar("sealing", None if args.quiet or args.json else sys.stderr)

    async def go() -> int:
        async with _node(args) as node:
            ev = Evidence(node)
            calls = {"n": 0}

            def progress(done: int, total: int) -> None:
                bar(done, total)
                if done >= total and calls["n"] == 0:
                    calls["n"] = 1
                    bar.next("uploading")

            published, sealed = await ev.publish(
                args.file,
                section=args.attach_section,
                sections=others,
                kind=args.kind,
                purpose=args.purpose,
                tlp=args.tlp,
                recipients=args.to,
                chunk_size=args.chunk_size,
                media_type=args.media_type,
                progress=progress,
            )
        out = {
            "notice_id": published.notice_id,
            "version": published.version,
            "section": args.attach_section,
            "size": sealed.descriptor.size,
            "chunks": sealed.descriptor.chunk_count,
            "evidence_digest": sealed.descriptor.chunks_root.hex(),
            "plaintext_sha256": sealed.key.plaintext_digest.hex(),
            "audience": {k: list(v) for k, v in published.audience.items()},
        }
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(
                f"attached {args.file.name} ({out['size']} bytes, {out['chunks']} chunks) to "
                f"notice {out['notice_id']} v{out['version']} section {args.attach_section}; "
                f"sha256 {out['plaintext_sha256']}"
            )
        return 0

    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as exc:
        return _fail(f"broker: {exc.code().name}: {exc.details()}")
    except (BrokerError, OSError) as exc:
        return _fail(str(exc))


def run_fetch(args: argparse.Namespace) -> int:
    from broker.cli.nodeargs import _node
    from broker.client.attachments import Evidence, from_inbox

    bar = ProgressBar("fetching", None if args.quiet or args.json else sys.stderr)

    async def go() -> int:
        async with _node(args) as node:
            notice = from_inbox(node, args.notice_id, args.version)
            ev = Evidence(node)
            await ev.download(notice, args.attach_section, progress=bar)
            got = await ev.open(notice, args.attach_section, args.out, progress=bar.next("opening"))
            if args.forwarded_to:
                await ev.forwarded(notice, args.attach_section, args.forwarded_to)
        out = {
            "path": str(got.path),
            "file_name": got.file_name,
            "media_type": got.media_type,
            "size": got.size,
            "plaintext_sha256": got.plaintext_digest.hex(),
            "evidence_digest": got.evidence_digest.hex(),
        }
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(
                f"wrote {got.path} ({got.size} bytes, originally {got.file_name}); "
                f"sha256 {out['plaintext_sha256']}; verified against the signed header"
            )
        return 0

    try:
        return asyncio.run(go())
    except att.AttachmentError as exc:
        return _fail(f"refused: {exc}")
    except grpc.aio.AioRpcError as exc:
        return _fail(f"broker: {exc.code().name}: {exc.details()}")
    except (BrokerError, OSError) as exc:
        return _fail(str(exc))


# -- broker audit custody ---------------------------------------------------------------------


def register_audit(asub: Any, conn_args: Any) -> None:
    p = asub.add_parser(
        "custody", help="print and verify a notice's chains of custody (its attachments)"
    )
    conn_args(p)
    p.add_argument("notice_id")
    p.set_defaults(func=run_custody)


def run_custody(args: argparse.Namespace) -> int:
    from broker.cli.audit import _client, _trust
    from broker.client.custody import audit_custody

    async def go() -> int:
        trust = _trust(args)
        async with _client(args) as client:
            reports = await audit_custody(client, trust, args.keys_dir, args.notice_id)
        if not reports:
            return _fail(f"the verified log holds no custody link for {args.notice_id}")
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": all(r.ok for r in reports),
                        "chains": [
                            {
                                "version": r.version,
                                "section": r.section,
                                "evidence_digest": r.evidence_digest.hex(),
                                "ok": r.ok,
                                "problems": r.problems,
                                "pending": r.pending,
                                "links": [
                                    {
                                        "seq": link.seq,
                                        "agency": link.agency,
                                        "action": link.action,
                                        "at_ms": link.at_ms,
                                        "note": link.note,
                                        "log_index": link.log_index,
                                        "record_digest": link.record_digest.hex(),
                                    }
                                    for link in r.links
                                ],
                            }
                            for r in reports
                        ],
                    },
                    indent=2,
                )
            )
        else:
            for r in reports:
                print(
                    f"notice {r.notice_id} v{r.version} section {r.section}: evidence "
                    f"{r.evidence_digest.hex()[:16]}"
                )
                for link in r.links:
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(link.at_ms / 1000))
                    note = f" ({link.note})" if link.note else ""
                    print(
                        f"  #{link.seq} {when}Z {link.action:<9} by {link.agency}{note} "
                        f"[log {link.log_index}, {link.record_digest.hex()[:12]}]"
                    )
                if r.problems:
                    print("  FAILED: " + "; ".join(r.problems))
                elif r.pending:
                    print(f"  {r.pending} link(s) not yet in a checkpoint: run it again soon")
                else:
                    print("  verified")
        return 0 if all(r.ok for r in reports) else 1

    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as exc:
        return _fail(f"broker: {exc.code().name}: {exc.details()}")
    except BrokerError as exc:
        return _fail(str(exc))
