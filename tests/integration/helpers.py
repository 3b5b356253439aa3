"""Build envelopes by hand, for tests that need what the SDK would never send."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from broker import pki
from broker.core import envelope as env
from broker.v1 import notice_pb2
from tests.content import manifest_for, sections_for

DAY_MS = 86_400_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def red_header(originator: str = "FR-NCB", **fields: object) -> notice_pb2.NoticeHeader:
    created = now_ms()
    header = notice_pb2.NoticeHeader(
        notice_id=str(uuid.uuid4()),
        version=1,
        originator=originator,
        kind="interpol.red",
        purpose="locate_arrest",
        data_subject=notice_pb2.DATA_SUBJECT_SUSPECT,
        tlp=notice_pb2.TLP_AMBER,
        created_at_ms=created,
        expires_at_ms=created + 30 * DAY_MS,
    )
    for key, value in fields.items():
        setattr(header, key, value)
    return header


# 'field: value' lines for the catalogue's content_fields (tests/content.py), then text.
RED_SECTIONS = sections_for(
    "interpol.red",
    identity=b"DOE, John; born 1970-01-01",
    case_facts=b"fraud",
    judicial=b"warrant 1",
    biometrics=b"prints",
)


def seal(
    keys_dir: Path,
    header: notice_pb2.NoticeHeader,
    audience: dict[str, set[str]],
    sections: dict[str, bytes] | None = None,
    signer: str | None = None,
    restrictions: notice_pb2.OriginatorRestrictions | None = None,
    manifest: dict[str, tuple[str, ...]] | None = None,
) -> notice_pb2.Envelope:
    """Seal with real keys from the deployment; `signer` defaults to the header's originator,
    `manifest` to the content manifest an honest SDK would declare."""
    creds = pki.load_agency(keys_dir, signer or header.originator)
    chosen = sections or RED_SECTIONS
    # What an honest SDK declares; `manifest` overrides it (a lying or sloppy originator).
    manifest = manifest_for(header.kind, chosen) if manifest is None else manifest
    recipients = [
        env.RecipientInput(
            agency_id=r,
            encryption_key=_enc_key(keys_dir, r),
            sections=frozenset(s),
        )
        for r, s in audience.items()
    ]
    return env.seal(
        header,
        restrictions or notice_pb2.OriginatorRestrictions(),
        [env.SectionInput(n, d, manifest.get(n, ())) for n, d in sorted(chosen.items())],
        recipients,
        creds.signing_seed,
        os.urandom,
    )


def _enc_key(keys_dir: Path, agency: str) -> bytes:
    from nacl.public import PrivateKey

    creds = pki.load_agency(keys_dir, agency)
    return bytes(PrivateKey(creds.encryption_private_key).public_key)


async def streamed(
    stub: object, count: int = 1, timeout: float = 10.0
) -> list[notice_pb2.Delivery]:
    """Open a Subscribe stream with `stub` (an AgencyServiceStub), take `count` deliveries
    and close it: they stay in flight, so receipts for them now count (a receipt counts
    only for what the broker streamed)."""
    import asyncio

    from broker.v1 import agency_pb2

    call = stub.Subscribe()  # type: ignore[attr-defined]
    got: list[notice_pb2.Delivery] = []
    try:
        await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=count)))
        while len(got) < count:
            response = await asyncio.wait_for(call.read(), timeout)
            got.extend(response.deliveries)
    finally:
        call.cancel()
    return got


def witness_process(node_args: list[str], agency: str = "EU-HUB") -> object:
    """A `broker node witness` subprocess (the deployment's witness, trust.toml) cosigning
    checkpoints every 0.2 s; terminate() it when done. `node_args` are the --broker,
    --keys-dir and --state-dir flags of the test's nodes."""
    import subprocess
    import sys

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker.cli.main",
            "node",
            "witness",
            "--agency",
            agency,
            "--interval",
            "0.2",
            "--timeout",
            "300",
            *node_args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
