"""trust.toml: what every party of a deployment trusts about its transparency log.

It sits beside the CA certificate in the deployment's keys directory and travels with
it to every agency, auditor and administrator:

    [log]
    broker = "broker"            # whose log key signs checkpoints (keys/brokers/<id>/log.pub)
    witnesses = ["EU-HUB"]       # agencies whose cosignatures count (their CA-bound keys)
    min_cosignatures = 1         # checkpoints relied on must carry at least this many
    max_lag_s = 600              # and be cosigned at most this long ago
    suite = "hybrid"             # the log key is hybrid: require its ML-DSA-65 signature
                                 # too (keys/brokers/<id>/log-pq.pub); default "classical"

Nodes and `broker audit` rely only on checkpoints that carry `min_cosignatures`
cosignatures from these witnesses, cosigned at most `max_lag_s` ago; witnesses cosign
only checkpoints consistent with the last they cosigned. Without the file nothing is
required of witnesses (a single-party test setup): the README says why that is weaker.
With ``suite = "hybrid"`` a checkpoint is relied on only if it carries both the Ed25519
and the ML-DSA-65 signature of the broker's log key (docs/post-quantum.md); witness
cosignatures stay Ed25519 (C2SP tlog-cosignature).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from broker.core.identity import validate_id
from broker.errors import InvalidArgument

TRUST_FILE = "trust.toml"
LOG_SUITES = ("classical", "hybrid")


@dataclass(frozen=True)
class TrustConfig:
    broker_id: str = "broker"
    witnesses: tuple[str, ...] = ()
    min_cosignatures: int = 0
    max_lag_s: int = 600
    log_suite: str = "classical"  # [log] suite: "hybrid" requires both log signatures


def load_trust_config(path: Path) -> TrustConfig:
    """Read trust.toml (the defaults when it does not exist). Raises InvalidArgument
    naming the file and the key for anything ill-typed or out of range."""
    if not path.exists():
        return TrustConfig()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{path}: {exc}") from None
    unknown = sorted(set(doc) - {"log"})
    if unknown:
        raise InvalidArgument(f"{path}: unknown section(s) {unknown}; only [log]")
    log = doc.get("log", {})
    if not isinstance(log, dict):
        raise InvalidArgument(f"{path}: [log] must be a table")
    bad = sorted(set(log) - {"broker", "witnesses", "min_cosignatures", "max_lag_s", "suite"})
    if bad:
        raise InvalidArgument(f"{path}: unknown key(s) in [log]: {bad}")
    broker = log.get("broker", "broker")
    witnesses = log.get("witnesses", [])
    k = log.get("min_cosignatures", 0)
    lag = log.get("max_lag_s", 600)
    suite = log.get("suite", "classical")
    if suite not in LOG_SUITES:
        raise InvalidArgument(f'{path}: [log] suite must be "classical" or "hybrid", not {suite!r}')
    if not isinstance(broker, str):
        raise InvalidArgument(f'{path}: [log] broker must be a string, e.g. "broker"')
    validate_id(broker)
    if not isinstance(witnesses, list) or not all(isinstance(w, str) for w in witnesses):
        raise InvalidArgument(f"{path}: [log] witnesses must be a list of agency ids")
    for w in witnesses:
        validate_id(w)
    if len(set(witnesses)) != len(witnesses):
        raise InvalidArgument(f"{path}: [log] witnesses lists an agency twice")
    if type(k) is not int or not 0 <= k <= len(witnesses):
        raise InvalidArgument(
            f"{path}: [log] min_cosignatures must be an integer from 0 to the number of "
            f"witnesses ({len(witnesses)})"
        )
    if type(lag) is not int or not 1 <= lag <= 7 * 86_400:
        raise InvalidArgument(f"{path}: [log] max_lag_s must be an integer from 1 to 604800")
    return TrustConfig(broker, tuple(witnesses), k, lag, suite)
