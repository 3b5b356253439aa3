"""Deployment keys on disk: the CA, TLS certificates and agency key statements.

The shell around :mod:`broker.core.identity`: it generates keys, writes and
reads files, and reads the clock. The layout (documented in keys/README.md)::

    <root>/ca/ca.pem                  CA certificate (0644)
    <root>/ca/ca.key                  CA private key (0600), keep offline
    <root>/ca/revoked.txt             revoked party URIs, one a line (0644)
    <root>/ca/issued.log              every issuance: time, URI, cert serial, statement serial
    <root>/<kind>s/<id>/tls.pem       party certificate, URI SAN urn:broker:<kind>:<id>
    <root>/<kind>s/<id>/tls.key       its private key (0600)
    <root>/<kind>s/<id>/ca.pem        copy of the CA certificate, so the directory is self-contained
    <root>/agencies/<id>/signing.key      Ed25519 seed, 32 raw bytes (0600)
    <root>/agencies/<id>/encryption.key   X25519 private key, 32 raw bytes (0600)
    <root>/agencies/<id>/statement.bin    SignedKeyStatement (0644)
    <root>/agencies/<id>/pq-signing.key      ML-DSA-65 seed, 32 raw bytes (0600), hybrid suite only
    <root>/agencies/<id>/pq-encryption.key   ML-KEM-768 seed || X25519 key, 96 raw bytes (0600)
    <root>/brokers/<id>/log.key       transparency-log Ed25519 seed, 32 raw bytes (0600)
    <root>/brokers/<id>/log.pub       its C2SP verifier key string (0644): what auditors trust
    <root>/<kind>s/<id>/old/<label>/  the previous generation, kept on re-issue

Directories are 0700. Every file is written atomically (temporary file,
fsync, rename) with its mode set explicitly, whatever the umask. Loading a
private key that group or others may read is refused.

Errors are BrokerError subclasses whose message says what to do: NotFound
(missing file), FailedPrecondition (CA exists, insecure or corrupt file,
revoked party), InvalidArgument (bad id, name, address or duration).

The package's modules, each importing only those above it: `files` (the layout's
names and modes, atomic writes, guarded reads), `serials` (stored statements and the
issuance log), `logkeys` (the transparency-log keys), `ca` (the CA, certificates,
revocation), `statements` (agency issuance and renewal), `credentials` (a party's
files loaded and checked). Import from `broker.pki`: this module re-exports their
interface (and the few file helpers other shells use).
"""

from broker.pki.ca import (
    ca_public_key,
    certificate_names,
    generate_ca,
    issue_certificate,
    load_ca,
    load_ca_certificate,
    load_certificate,
    revoke,
    revoked_parties,
    subject_alt_names,
)
from broker.pki.credentials import (
    AgencyCredentials,
    list_parties,
    load_agency,
    load_party,
)
from broker.pki.files import (
    BROKER_DEFAULT_DNS,
    BROKER_DEFAULT_IPS,
    CA_CERT,
    CA_DIR,
    CA_KEY,
    CLOCK_SKEW,
    DIR_MODE,
    ENCRYPTION_KEY,
    ISSUED_LOG,
    KIND_DIRS,
    LOG_KEY,
    LOG_PUB,
    OLD_DIR,
    PARTY_CA_CERT,
    PQ_ENCRYPTION_KEY,
    PQ_SIGNING_KEY,
    PRIVATE_MODE,
    PUBLIC_MODE,
    REVOKED,
    SIGNING_KEY,
    STATEMENT,
    TLS_CERT,
    TLS_KEY,
    AgencyFiles,
    PartyFiles,
    _make_dir,
    _read_file,
    _read_private,
    _read_raw_key,
    _write_file,
    party_directory,
)
from broker.pki.logkeys import (
    ensure_log_key,
    load_log_signer,
    load_log_verifier,
)
from broker.pki.serials import (
    read_statement,
    unverified_statement_serial,
)
from broker.pki.statements import (
    DEFAULT_STATEMENT_DAYS,
    issue_agency,
    read_statements,
    renew_statement,
    sign_key_statement,
)

__all__ = [
    "BROKER_DEFAULT_DNS",
    "BROKER_DEFAULT_IPS",
    "CA_CERT",
    "CA_DIR",
    "CA_KEY",
    "CLOCK_SKEW",
    "DEFAULT_STATEMENT_DAYS",
    "DIR_MODE",
    "ENCRYPTION_KEY",
    "ISSUED_LOG",
    "KIND_DIRS",
    "LOG_KEY",
    "LOG_PUB",
    "OLD_DIR",
    "PARTY_CA_CERT",
    "PQ_ENCRYPTION_KEY",
    "PQ_SIGNING_KEY",
    "PRIVATE_MODE",
    "PUBLIC_MODE",
    "REVOKED",
    "SIGNING_KEY",
    "STATEMENT",
    "TLS_CERT",
    "TLS_KEY",
    "AgencyCredentials",
    "AgencyFiles",
    "PartyFiles",
    "_make_dir",
    "_read_file",
    "_read_private",
    "_read_raw_key",
    "_write_file",
    "ca_public_key",
    "certificate_names",
    "ensure_log_key",
    "generate_ca",
    "issue_agency",
    "issue_certificate",
    "list_parties",
    "load_agency",
    "load_ca",
    "load_ca_certificate",
    "load_certificate",
    "load_log_signer",
    "load_log_verifier",
    "load_party",
    "party_directory",
    "read_statement",
    "read_statements",
    "renew_statement",
    "revoke",
    "revoked_parties",
    "sign_key_statement",
    "subject_alt_names",
    "unverified_statement_serial",
]
