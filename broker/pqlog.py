"""The broker's post-quantum transparency-log key: the ML-DSA-65 half of a hybrid log key.

Beside ``brokers/<id>/log.key`` and ``log.pub`` (Ed25519, broker/pki/logkeys.py):

    brokers/<id>/log-pq.key   ML-DSA-65 seed, 32 raw bytes (0600)
    brokers/<id>/log-pq.pub   its verifier key string (broker/core/pqnote.py), 0644

A broker that has log-pq.key signs every checkpoint with both keys over the same note
text; parties whose trust.toml says ``[log] suite = "hybrid"`` require both signatures,
with the key of log-pq.pub. `broker keys issue broker <id> --pq` (or `keys init --pq`)
creates it, once: it is never replaced, since auditors trust checkpoints by it.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Final

from broker import pki
from broker.core.auditing import log_origin
from broker.core.checkpoint import NoteError
from broker.core.hybrid import MLDSA_SEED_SIZE, SUITE_HYBRID
from broker.core.identity import Party, validate_id
from broker.core.pqnote import (
    PQSigner,
    PQVerifier,
    format_pq_verifier_key,
    parse_pq_verifier_key,
    pq_key_name,
)
from broker.core.suites import SuitePolicy
from broker.errors import FailedPrecondition

LOG_PQ_KEY: Final = "log-pq.key"
LOG_PQ_PUB: Final = "log-pq.pub"


def _directory(root: Path, broker_id: str) -> Path:
    return pki.party_directory(Path(root), Party("broker", validate_id(broker_id)))


def pq_log_pub_path(root: Path, broker_id: str) -> Path:
    """Where a deployment's keys directory holds the broker's ML-DSA-65 log verifier key."""
    return _directory(root, broker_id) / LOG_PQ_PUB


def ensure_pq_log_key(root: Path, broker_id: str) -> Path:
    """Create the broker's ML-DSA-65 log key unless it exists; return log-pq.pub (rewritten
    from the key if missing). Raises FailedPrecondition for an exposed or malformed key."""
    directory = _directory(root, broker_id)
    key_path, pub_path = directory / LOG_PQ_KEY, directory / LOG_PQ_PUB
    if not key_path.exists():
        pki._make_dir(directory)
        seed = secrets.token_bytes(MLDSA_SEED_SIZE)
        pki._write_file(key_path, seed, pki.PRIVATE_MODE, exclusive=True)
    signer = load_pq_log_signer(root, broker_id)
    assert signer is not None  # written above, or there before
    if not pub_path.exists():
        line = format_pq_verifier_key(signer.verifier) + "\n"
        pki._write_file(pub_path, line.encode(), pki.PUBLIC_MODE)
    return pub_path


def load_pq_log_signer(root: Path, broker_id: str) -> PQSigner | None:
    """The broker's ML-DSA-65 log signer, or None when it has none (a classical log).

    Raises FailedPrecondition when the key is group/world readable or not 32 bytes.
    """
    path = _directory(root, broker_id) / LOG_PQ_KEY
    if not path.exists():
        return None
    hint = f"run `broker keys issue broker {broker_id} --pq --dir {root}`"
    seed = pki._read_raw_key(path, "post-quantum transparency-log key", hint)
    return PQSigner(pq_key_name(log_origin(broker_id)), seed)


def pq_log_signer_for(root: Path, broker_id: str, crypto: SuitePolicy) -> PQSigner | None:
    """The broker's ML-DSA-65 log signer, if it has one. Raises FailedPrecondition when
    broker.toml [crypto] allows only the hybrid suite and the broker has none: its
    checkpoints would then be the one thing of the deployment signed classically."""
    signer = load_pq_log_signer(root, broker_id)
    if signer is None and crypto.allowed == {SUITE_HYBRID}:
        raise FailedPrecondition(
            "[crypto] allows only the hybrid suite, but the broker has no post-quantum log "
            f"key to sign checkpoints with: run `broker keys issue broker {broker_id} --pq "
            f"--dir {root}` and give every party its {LOG_PQ_PUB} (trust.toml [log] "
            'suite = "hybrid"; docs/post-quantum.md)'
        )
    return signer


def load_pq_log_verifier(path: Path) -> PQVerifier:
    """Read an ML-DSA-65 log verifier key string (``brokers/<id>/log-pq.pub``).

    Raises NotFound (say where to get it) or FailedPrecondition (not such a key).
    """
    path = Path(path)
    data = pki._read_file(
        path,
        "post-quantum log verifier key",
        'trust.toml says [log] suite = "hybrid": copy the broker\'s log-pq.pub there',
    )
    try:
        return parse_pq_verifier_key(data.decode("utf-8").strip())
    except (UnicodeDecodeError, NoteError) as exc:
        raise FailedPrecondition(f"{path} is not an ML-DSA-65 log verifier key: {exc}") from None
