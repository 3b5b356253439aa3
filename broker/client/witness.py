"""A witness: an agency that cosigns the broker's checkpoints, one after another.

Each turn it fetches the latest checkpoint, checks it against the one it cosigned last
(the same tree, or a proven extension: broker.client.audit.monitor, with its state in
the witness's own file) and only then cosigns it (C2SP tlog-cosignature) and hands the
cosignature to the broker. A rollback, a fork or a checkpoint that does not verify is
never cosigned; the finding is logged. Nodes and auditors require k such cosignatures
(trust.toml), so no single broker can show different agencies different logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from broker import pki
from broker.client.audit import AuditClient, cosign, load_trust
from broker.core.identity import Party
from broker.errors import BrokerError

log = logging.getLogger("broker.client")


async def run_witness(
    keys_dir: Path,
    agency_id: str,
    target: str,
    state_path: Path,
    *,
    stop: asyncio.Event,
    interval_s: float = 0.5,
    broker_id: str = "broker",
) -> int:
    """Cosign checkpoints until `stop` is set; return how many turns cosigned."""
    credentials = pki.load_agency(keys_dir, agency_id)
    trust = load_trust(keys_dir, broker_id)
    cosigned = 0
    async with AuditClient(target, keys_dir, Party("agency", agency_id)) as client:
        while not stop.is_set():
            try:
                result = await cosign(client, trust, state_path, credentials)
            except (BrokerError, OSError) as exc:
                log.info("witness turn failed", extra={"error": str(exc)})
            except Exception as exc:  # a broker that went away: grpc errors; try again
                log.info("witness turn failed", extra={"error": type(exc).__name__})
            else:
                if result.ok and "cosigned" in result.message:
                    cosigned += 1
                elif not result.ok:
                    log.warning(
                        "witness refused to cosign",
                        extra={"verdict": result.verdict, "detail": result.message},
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
    return cosigned
