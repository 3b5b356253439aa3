"""Before the CLI dials the broker: is this connection going to work, and if not, why?

gRPC retries a connection that cannot work (no broker, a certificate the broker
refuses, a broker certificate this node cannot trust) silently until the call's
deadline, then reports `UNAVAILABLE` with core text. The `broker` command checks
first, within about two seconds, and names the cause on one line with what to do:

1. offline, the local certificate: readable, inside its validity window, issued by
   the CA in the same directory (and by the deployment CA, `<keys>/ca/ca.pem`, when
   that is there too);
2. online, one TCP connection with a short deadline (nobody listening, no answer);
3. one TLS handshake with the same certificate, CA and server name gRPC will use:
   the broker's certificate from another CA, or for another name; then the broker's
   first HTTP/2 bytes, which a broker that refused our certificate never sends (TLS
   1.3 carries the client certificate's rejection after the handshake).

Every failure raises `ConnectionProblem` (a FailedPrecondition or Unavailable),
whose text is the one line the CLI prints.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from broker import pki
from broker.core.identity import Party
from broker.errors import BrokerError, FailedPrecondition, Unavailable

DEADLINE_S = 2.0  # the whole check, dial and handshake included
X509_EXPIRED = 10  # OpenSSL verify codes (X509_V_ERR_*)
X509_NOT_YET_VALID = 9
X509_NAME_MISMATCH = (62, 64)  # hostname, IP address


class ConnectionProblem(BrokerError):
    """A reason the broker cannot be reached or would refuse us; str() says what to do."""


class LocalCertificateProblem(ConnectionProblem, FailedPrecondition):
    pass


class BrokerUnreachable(ConnectionProblem, Unavailable):
    pass


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_targets(target: str) -> list[Endpoint]:
    """Every address of a `--broker` value: host:port, [v6]:port, or a list of replicas."""
    return [parse_target(part) for part in target.split(",")] if target else [parse_target("")]


def parse_target(target: str) -> Endpoint:
    """The first address of a `--broker` value (host:port, [v6]:port, or a list)."""
    first = target.split(",", maxsplit=1)[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConnectionProblem(
            f"broker address {first!r} must be HOST:PORT, e.g. 127.0.0.1:7443 "
            "(--broker or BROKER_TARGET)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Endpoint(host, int(port))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    if cert.issuer != ca.subject or not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    hash_alg = cert.signature_hash_algorithm
    if hash_alg is None:
        return False
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_alg))
    except InvalidSignature:
        return False
    return True


def check_local(keys_dir: Path, party: Party, *, now: datetime | None = None) -> pki.PartyFiles:
    """The party's TLS files, checked offline. Raises LocalCertificateProblem (or the
    NotFound / FailedPrecondition of pki.load_party) naming the file and the fix."""
    files = pki.load_party(keys_dir, party)
    cert = pki.load_certificate(files.cert)
    at = now or datetime.now(UTC)
    who = f"{party.kind} {party.id}"
    reissue = f"`broker keys issue {party.kind} {party.id} --dir {keys_dir}`"
    if cert.not_valid_after_utc < at:
        raise LocalCertificateProblem(
            f"the certificate of {who} ({files.cert}) expired at {_iso(cert.not_valid_after_utc)}: "
            f"ask the deployment's CA for a new one ({reissue})"
        )
    if cert.not_valid_before_utc > at:
        raise LocalCertificateProblem(
            f"the certificate of {who} ({files.cert}) is not valid before "
            f"{_iso(cert.not_valid_before_utc)}: check this machine's clock (now {_iso(at)})"
        )
    cas = [files.ca_cert]
    deployment_ca = Path(keys_dir) / "ca" / "ca.pem"
    if deployment_ca.is_file() and deployment_ca.resolve() != files.ca_cert.resolve():
        cas.append(deployment_ca)
    for path in cas:
        ca = pki.load_ca_certificate(path)
        if not _issued_by(cert, ca):
            raise LocalCertificateProblem(
                f"the certificate of {who} ({files.cert}) was not issued by the CA in {path}: "
                f"it comes from another deployment; use this deployment's keys directory "
                f"(--keys-dir or BROKER_KEYS) or have its CA issue one ({reissue})"
            )
    return files


def _tls_context(files: pki.PartyFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(files.ca_cert))
    ctx.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _server_names(der: bytes | None) -> str:
    if not der:
        return "no name"
    try:
        dns, ips = pki.certificate_names(x509.load_der_x509_certificate(der))
    except ValueError:
        return "no name"
    return ", ".join([*dns, *ips]) or "no name"


def _peer_certificate(endpoint: Endpoint, timeout: float) -> bytes | None:
    """The broker's certificate, fetched without verifying it (to name what it is for)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=endpoint.host) as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def _refused_by_broker(exc: ssl.SSLError, who: str) -> ConnectionProblem:
    reason = (exc.reason or str(exc)).lower()
    if "unknown_ca" in reason or "unknown ca" in reason or "bad_certificate" in reason:
        return LocalCertificateProblem(
            f"the broker refused the certificate of {who}: it does not trust its CA; use a "
            "certificate issued by the broker's deployment CA (--keys-dir or BROKER_KEYS)"
        )
    if "expired" in reason:
        return LocalCertificateProblem(
            f"the broker refused the certificate of {who} as expired: check this machine's "
            "clock and the certificate's validity (`openssl x509 -noout -dates -in tls.crt`)"
        )
    if "revoked" in reason:
        return LocalCertificateProblem(f"the broker refused the certificate of {who}: revoked")
    return LocalCertificateProblem(
        f"the broker refused the TLS handshake of {who} ({exc.reason or exc}): check that "
        "its certificate comes from this deployment's CA"
    )


def check_connection(
    keys_dir: Path, party: Party, target: str, *, deadline_s: float = DEADLINE_S
) -> None:
    """Check the local certificate, then that `target` answers and accepts it, within
    about `deadline_s`. Returns None when the connection will work; raises
    ConnectionProblem (or pki's NotFound / FailedPrecondition) otherwise."""
    files = check_local(keys_dir, party)
    endpoints = parse_targets(target)
    who = f"{party.kind} {party.id}"
    start = time.monotonic()

    def left() -> float:
        return max(0.2, deadline_s - (time.monotonic() - start))

    # Replicas share one identity: the name checked is the first address's host, as the
    # SDK's channel checks it (broker/client/target.py). One replica answering is enough.
    unreachable: list[BrokerUnreachable] = []
    for endpoint in endpoints:
        try:
            _dial(endpoint, endpoints[0].host, files, who, left, deadline_s)
        except BrokerUnreachable as exc:
            unreachable.append(exc)
            continue
        return
    if len(endpoints) > 1:
        raise BrokerUnreachable(
            f"none of the {len(endpoints)} broker replicas answered; the first: {unreachable[0]}"
        )
    raise unreachable[0]


def _dial(
    endpoint: Endpoint,
    server_name: str,
    files: pki.PartyFiles,
    who: str,
    left: Callable[[], float],
    deadline_s: float,
) -> None:
    """One TCP connection and TLS handshake to `endpoint`; raises ConnectionProblem."""
    try:
        raw = socket.create_connection((endpoint.host, endpoint.port), timeout=left())
    except socket.gaierror as exc:
        raise BrokerUnreachable(
            f"cannot resolve the broker's host {endpoint.host!r} ({exc.strerror}): "
            "check --broker or BROKER_TARGET"
        ) from exc
    except ConnectionRefusedError as exc:
        raise BrokerUnreachable(
            f"no broker is listening at {endpoint} (connection refused): start it "
            "(`broker serve`) or point --broker / BROKER_TARGET at the right address"
        ) from exc
    except TimeoutError as exc:
        raise BrokerUnreachable(
            f"no answer from {endpoint} within {deadline_s:g} s: check the address "
            "(--broker or BROKER_TARGET), the network and any firewall"
        ) from exc
    except OSError as exc:
        raise BrokerUnreachable(
            f"cannot reach the broker at {endpoint} ({exc.strerror or exc}): check the "
            "address (--broker or BROKER_TARGET) and the network"
        ) from exc
    with raw:
        raw.settimeout(left())
        try:
            with _tls_context(files).wrap_socket(raw, server_hostname=server_name) as tls:
                tls.settimeout(left())
                try:
                    first = tls.recv(9)  # the broker's HTTP/2 SETTINGS frame header
                except TimeoutError:
                    first = b"?"  # it answered the handshake and took our certificate
                if not first:
                    raise LocalCertificateProblem(
                        f"the broker at {endpoint} closed the connection after the handshake: "
                        f"it does not accept the certificate of {who} (issued by another CA, "
                        "or revoked); use one from the broker's deployment CA (--keys-dir or "
                        "BROKER_KEYS)"
                    )
        except ssl.SSLCertVerificationError as exc:
            raise _untrusted_broker(exc, endpoint, server_name, files, left()) from exc
        except ssl.SSLError as exc:
            raise _refused_by_broker(exc, who) from exc
        except TimeoutError as exc:
            raise BrokerUnreachable(
                f"{endpoint} accepted a connection but did not complete a TLS handshake within "
                f"{deadline_s:g} s: is this the broker's gRPC port (--broker or BROKER_TARGET)?"
            ) from exc
        except ConnectionResetError as exc:
            raise LocalCertificateProblem(
                f"the broker at {endpoint} reset the connection during the handshake: it "
                f"does not accept the certificate of {who}"
            ) from exc


def _untrusted_broker(
    exc: ssl.SSLCertVerificationError,
    endpoint: Endpoint,
    server_name: str,
    files: pki.PartyFiles,
    timeout: float,
) -> ConnectionProblem:
    code = exc.verify_code
    if code in X509_NAME_MISMATCH:
        names = _server_names(_peer_certificate(endpoint, timeout))
        return FailedPreconditionProblem(
            f"wrong broker name: the broker's certificate is for {names}, not {server_name!r}; "
            "connect by a name it carries (--broker or BROKER_TARGET), or re-issue it with "
            "`broker keys issue broker ID --dns NAME --ip ADDRESS`"
        )
    if code == X509_EXPIRED:
        return FailedPreconditionProblem(
            f"the broker's certificate at {endpoint} has expired: its operator must re-issue "
            "it (`broker keys issue broker ID`)"
        )
    if code == X509_NOT_YET_VALID:
        return FailedPreconditionProblem(
            f"the broker's certificate at {endpoint} is not valid yet: check this machine's clock"
        )
    return FailedPreconditionProblem(
        f"the broker at {endpoint} presents a certificate not issued by the CA in {files.ca_cert} "
        f"({exc.verify_message}): it belongs to another deployment, or --keys-dir / BROKER_KEYS "
        "points at the wrong keys"
    )


class FailedPreconditionProblem(ConnectionProblem, FailedPrecondition):
    pass
