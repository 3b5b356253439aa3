"""Transparency-log keys: the broker's log signer and the verifier key auditors trust.

Part of :mod:`broker.pki` (its docstring has the layout and the error rules)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.core.auditing import log_origin
from broker.core.checkpoint import (
    NoteError,
    Signer,
    Verifier,
    format_verifier_key,
    parse_verifier_key,
)
from broker.core.identity import (
    Party,
    validate_id,
)
from broker.errors import FailedPrecondition
from broker.pki.files import (
    LOG_KEY,
    LOG_PUB,
    PRIVATE_MODE,
    PUBLIC_MODE,
    _make_dir,
    _read_file,
    _read_raw_key,
    _write_file,
    party_directory,
)

# --- the broker's transparency-log key -----------------------------------------------


def ensure_log_key(root: Path, broker_id: str) -> Path:
    """Create the broker's transparency-log signing key unless it exists; return log.pub.

    ``brokers/<id>/log.key`` is a raw 32-byte Ed25519 seed (0600) and
    ``log.pub`` its C2SP verifier key string ``<origin>+<key id>+<base64>``
    (0644), the key name being the checkpoint origin
    ``sealed-notice-broker/<id>``. An existing key is never replaced:
    auditors trust checkpoints by it (a missing log.pub is rewritten from it).
    """
    party = Party("broker", validate_id(broker_id))
    directory = party_directory(Path(root), party)
    key_path, pub_path = directory / LOG_KEY, directory / LOG_PUB
    if key_path.exists():
        signer = load_log_signer(root, broker_id)
        if not pub_path.exists():
            _write_file(pub_path, _verifier_line(signer.verifier), PUBLIC_MODE)
        return pub_path
    _make_dir(directory)
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
    _write_file(key_path, seed, PRIVATE_MODE, exclusive=True)
    signer = Signer(log_origin(party.id), seed)
    _write_file(pub_path, _verifier_line(signer.verifier), PUBLIC_MODE)
    return pub_path


def _verifier_line(verifier: Verifier) -> bytes:
    return (format_verifier_key(verifier.name, verifier.public_key) + "\n").encode()


def load_log_signer(root: Path, broker_id: str) -> Signer:
    """Load the broker's transparency-log signer (name = checkpoint origin).

    Raises NotFound (no key: re-issue the broker certificate, which creates
    one) or FailedPrecondition (group/world readable, wrong size).
    """
    party = Party("broker", validate_id(broker_id))
    path = party_directory(Path(root), party) / LOG_KEY
    hint = f"run `broker keys issue broker {party.id} --dir {root}` to create it"
    seed = _read_raw_key(path, "transparency-log key", hint)
    return Signer(log_origin(party.id), seed)


def load_log_verifier(path: Path) -> Verifier:
    """Read a C2SP verifier key string (e.g. ``brokers/<id>/log.pub``).

    Raises NotFound or FailedPrecondition (not a verifier key).
    """
    path = Path(path)
    data = _read_file(path, "log verifier key", "copy the broker's log.pub there")
    try:
        return parse_verifier_key(data.decode("utf-8").strip())
    except (UnicodeDecodeError, NoteError) as exc:
        raise FailedPrecondition(f"{path} is not a verifier key: {exc}") from None
