"""What an auditor trusts, loaded and applied: the CA, the log key, witness keys.

:class:`Trust` opens a signed checkpoint (the log key's signature, its name as the
origin, k witness cosignatures, and for a hybrid log key the ML-DSA-65 line too)
and verifies a proof-of-delivery bundle under the same anchors; :func:`load_trust`
reads them from a deployment's keys directory or explicit files, a witness's
cosigner key from its CA-signed statement checked at the wall clock
(:func:`now_ms`). Part of :mod:`broker.client.audit`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker import pki
from broker.core import auditing
from broker.core import pod as pod_core
from broker.core.checkpoint import Verifier, parse_verifier_key
from broker.core.identity import IdentityError, Party, verify_key_statement
from broker.core.pqnote import PQVerifier, pq_key_name
from broker.errors import FailedPrecondition, InvalidArgument
from broker.pqlog import load_pq_log_verifier, pq_log_pub_path
from broker.trustconfig import TRUST_FILE, load_trust_config
from broker.v1 import audit_pb2


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Trust:
    """What an auditor trusts: the CA, the log key (its name is the origin), witnesses."""

    ca_key: EllipticCurvePublicKey
    log: Verifier
    witnesses: tuple[Verifier, ...] = ()
    min_cosignatures: int = 0
    ca_cert: x509.Certificate | None = None  # checks administrators' signed registry entries
    log_pq: PQVerifier | None = None  # hybrid log key: its ML-DSA-65 line is required too

    @property
    def origin(self) -> str:
        return self.log.name

    def open(
        self, note: str, *, min_cosignatures: int | None = None
    ) -> auditing.VerifiedCheckpoint:
        k = self.min_cosignatures if min_cosignatures is None else min_cosignatures
        return auditing.open_log_checkpoint(
            note,
            self.log,
            origin=self.origin,
            witnesses=self.witnesses,
            min_cosignatures=k,
            pq_verifier=self.log_pq,
        )

    def verify_pod(
        self, pod: audit_pb2.ProofOfDelivery, *, min_cosignatures: int = 0
    ) -> pod_core.PodReport:
        """broker/core/pod.py verify_pod under this trust (its witnesses and, for a hybrid
        log key, both checkpoint signatures); raises what it raises."""
        return pod_core.verify_pod(
            pod,
            self.ca_key,
            self.log,
            origin=self.origin,
            witnesses=self.witnesses,
            min_cosignatures=min_cosignatures,
            pq_verifier=self.log_pq,
        )


def load_trust(
    keys_dir: Path,
    broker_id: str = "broker",
    *,
    log_key: Path | None = None,
    ca_cert: Path | None = None,
    witnesses: Sequence[str] = (),
    witness_keys: Sequence[str] = (),
    min_cosignatures: int = 0,
    log_suite: str | None = None,
    log_pq_key: Path | None = None,
) -> Trust:
    """Load trust anchors from a deployment's keys directory (or explicit files).

    ``witnesses`` are agency ids whose CA-signed statements (in
    ``agencies/<id>/statement.bin``) give their cosigner keys;
    ``witness_keys`` are C2SP verifier key strings (type 0x04). ``log_suite``
    "hybrid" (None: trust.toml's ``[log] suite`` in ``keys_dir``; a ``log_pq_key``
    implies it) requires checkpoints to carry the ML-DSA-65 signature of the key in
    ``log_pq_key`` (default ``brokers/<id>/log-pq.pub``) besides the Ed25519 one.
    """
    ca = pki.load_ca_certificate(ca_cert or Path(keys_dir) / pki.CA_DIR / pki.CA_CERT)
    ca_key = pki.ca_public_key(ca)
    log = pki.load_log_verifier(
        log_key or pki.party_directory(Path(keys_dir), Party("broker", broker_id)) / pki.LOG_PUB
    )
    if log_suite is None:
        log_suite = load_trust_config(Path(keys_dir) / TRUST_FILE).log_suite
    log_pq = None
    if log_suite == "hybrid" or log_pq_key is not None:
        log_pq = load_pq_log_verifier(log_pq_key or pq_log_pub_path(Path(keys_dir), broker_id))
        if log_pq.name != pq_key_name(log.name):
            raise FailedPrecondition(
                f"the post-quantum log key is named {log_pq.name!r}, not "
                f"{pq_key_name(log.name)!r}: it is not the key of log {log.name}"
            )
    trusted: list[Verifier] = []
    for agency in witnesses:
        path = pki.party_directory(Path(keys_dir), Party("agency", agency)) / pki.STATEMENT
        try:
            keys = verify_key_statement(
                pki.read_statement(path), ca_key, now_ms(), expected_agency=agency
            )
        except IdentityError as exc:
            raise FailedPrecondition(f"witness {agency}: {exc}") from None
        trusted.append(auditing.witness_verifier(agency, keys.signing_key))
    for text in witness_keys:
        trusted.append(parse_verifier_key(text))
    if min_cosignatures > len(trusted):
        raise InvalidArgument(
            f"{min_cosignatures} cosignatures required but only {len(trusted)} witness key(s) "
            "given: add --witness or --witness-key"
        )
    return Trust(ca_key, log, tuple(trusted), min_cosignatures, ca, log_pq)
