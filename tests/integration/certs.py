"""Certificates made wrong on purpose, for the CLI's failure tests: a party's own TLS
certificate re-signed by its deployment CA with another validity window."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from broker import pki
from broker.core.identity import Party


def resign(keys_dir: Path, party: Party, not_before: datetime, not_after: datetime) -> Path:
    """Replace `party`'s TLS certificate by the same one valid only in [not_before,
    not_after], signed by the deployment CA. Returns the certificate's path."""
    files = pki.load_party(keys_dir, party)
    cert = pki.load_certificate(files.cert)
    ca_cert, ca_key = pki.load_ca(keys_dir)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(ca_cert.subject)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    new = builder.sign(ca_key, hashes.SHA256())
    files.cert.write_bytes(new.public_bytes(serialization.Encoding.PEM))
    return files.cert
