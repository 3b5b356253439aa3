"""`broker bench wraps`: the per-recipient key wrap, four ways, side by side in one run.

Issue 8 asked for cheaper per-recipient wraps where they keep the same guarantees, measured
against sealed boxes, one ephemeral key per notice across recipients, and HPKE. This bench
times, in one process and interleaved round by round (so load on the machine falls on all
alike), sealing one notice's wraps for `recipients` recipients (the publisher's cost) and
opening one wrap (a recipient's cost), in CPU time of this thread, for:

- ``sealed-box-each``: a libsodium sealed box with a fresh ephemeral key pair per recipient
  (``crypto_box_seal`` as libsodium makes it: two X25519 multiplications per recipient);
- ``sealed-box-shared`` (the classical suite's wrap, ``envelope_suite.seal_boxes``): ordinary
  sealed boxes under ONE ephemeral key pair per notice (one X25519 multiplication per
  recipient plus one per notice); recipients sharing a key are refused, so no key and nonce
  pair repeats;
- ``hpke-x25519``: RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
  ChaCha20-Poly1305 (``cryptography``), info binding notice, version and recipient as the
  hybrid suite's wraps do; the library draws its own ephemeral key, per recipient;
- ``hpke-mlkem768-x25519`` (the hybrid suite's wrap, ``hybrid.hpke_seal``), for reference:
  its cost buys post-quantum confidentiality, not the same guarantee at a lower price.

The plaintext is a real ``WrapBody`` with three 32-byte section keys. Every wrap sealed is
opened and compared, so a broken scheme fails the run instead of being timed. One Ed25519
verify is timed in the same run as a unit (as `broker bench` times it). Ratios are each
scheme / ``sealed-box-shared``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nacl.bindings
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519

from broker.bench.harness import ed25519_verify_us
from broker.core import envelope_suite as es
from broker.core import hybrid as hy
from broker.v1 import notice_pb2

SCHEMA = "broker-bench-wraps/1"
OURS = "sealed-box-shared"
_HPKE_X25519 = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
MAX_RECIPIENTS = 1000
MAX_ROUNDS = 100_000


@dataclass(frozen=True)
class _Recipient:
    agency_id: str
    x_private: bytes
    x_public: bytes
    kem_private: bytes
    kem_public: bytes


@dataclass(frozen=True)
class Scheme:
    """One way to wrap: seal every body of a notice, open one wrap."""

    name: str
    describes: str
    seal: Callable[[list[tuple[bytes, _Recipient, bytes]]], list[bytes]]  # (body, r, info)
    open: Callable[[bytes, _Recipient, bytes], bytes]


def _recipient(i: int) -> _Recipient:
    x = os.urandom(32)
    kem = os.urandom(hy.MLKEM_SEED_SIZE) + os.urandom(32)
    return _Recipient(
        f"R{i:03d}-NCB",
        x,
        bytes(nacl.bindings.crypto_scalarmult_base(x)),
        kem,
        hy.kem_public_key_bytes(kem),
    )


def _body(notice_id: str, recipient: str) -> bytes:
    keys = [
        notice_pb2.SectionKey(name=n, key=os.urandom(32))
        for n in ("case_facts", "identity", "judicial")
    ]
    wrap = notice_pb2.WrapBody(notice_id=notice_id, version=1, recipient=recipient, keys=keys)
    return wrap.SerializeToString()


def _seal_each(items: list[tuple[bytes, _Recipient, bytes]]) -> list[bytes]:
    return [es.seal_box(body, r.x_public, os.urandom(32)) for body, r, _ in items]


def _seal_shared(items: list[tuple[bytes, _Recipient, bytes]]) -> list[bytes]:
    return es.seal_boxes([(body, r.x_public) for body, r, _ in items], os.urandom(32))


def _open_box(sealed: bytes, r: _Recipient, _info: bytes) -> bytes:
    return es.open_box(sealed, r.x_private, r.x_public)


def _seal_hpke(items: list[tuple[bytes, _Recipient, bytes]]) -> list[bytes]:
    return [
        _HPKE_X25519.encrypt(body, x25519.X25519PublicKey.from_public_bytes(r.x_public), info)
        for body, r, info in items
    ]


def _open_hpke(sealed: bytes, r: _Recipient, info: bytes) -> bytes:
    return _HPKE_X25519.decrypt(
        sealed, x25519.X25519PrivateKey.from_private_bytes(r.x_private), info
    )


def _seal_hybrid(items: list[tuple[bytes, _Recipient, bytes]]) -> list[bytes]:
    return [hy.hpke_seal(r.kem_public, body, info) for body, r, info in items]


def _open_hybrid(sealed: bytes, r: _Recipient, info: bytes) -> bytes:
    return hy.hpke_open(r.kem_private, sealed, info)


SCHEMES = (
    Scheme("sealed-box-each", "sealed box, a fresh ephemeral key pair per recipient",
           _seal_each, _open_box),
    Scheme(OURS, "sealed boxes, one ephemeral key pair per notice (classical suite)",
           _seal_shared, _open_box),
    Scheme("hpke-x25519", "HPKE base mode, DHKEM(X25519), HKDF-SHA256, ChaCha20-Poly1305",
           _seal_hpke, _open_hpke),
    Scheme("hpke-mlkem768-x25519", "HPKE, ML-KEM-768 + X25519 KEM (hybrid suite)",
           _seal_hybrid, _open_hybrid),
)  # fmt: skip


class WrapBenchError(Exception):
    """A scheme whose wraps do not open to what was sealed: nothing is reported for it."""


def run(recipients: int, rounds: int) -> dict[str, Any]:
    """Time every scheme (see the module docstring); raises WrapBenchError on a bad wrap."""
    if not 1 <= recipients <= MAX_RECIPIENTS or not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"recipients must be 1..{MAX_RECIPIENTS} and rounds 1..{MAX_ROUNDS}")
    parties = [_recipient(i) for i in range(recipients)]
    seal_us: dict[str, list[float]] = {s.name: [] for s in SCHEMES}
    open_us: dict[str, list[float]] = {s.name: [] for s in SCHEMES}
    sizes: dict[str, int] = {}
    for i in range(rounds):
        notice_id = f"00000000-0000-4000-8000-{i:012d}"
        items = [
            (_body(notice_id, r.agency_id), r, hy.wrap_info(notice_id, 1, r.agency_id))
            for r in parties
        ]
        order = SCHEMES[i % len(SCHEMES) :] + SCHEMES[: i % len(SCHEMES)]  # rotate who goes first
        for scheme in order:
            t0 = time.thread_time()
            sealed = scheme.seal(items)
            t1 = time.thread_time()
            body, r, info = items[i % recipients]
            wrap = sealed[i % recipients]
            t2 = time.thread_time()
            try:
                opened = scheme.open(wrap, r, info)
            except (ValueError, InvalidTag) as exc:
                raise WrapBenchError(f"{scheme.name}: a wrap does not open") from exc
            t3 = time.thread_time()
            if opened != body or len(sealed) != recipients:
                raise WrapBenchError(f"{scheme.name}: a wrap did not open to what was sealed")
            if len({bytes(s) for s in sealed}) != recipients:
                raise WrapBenchError(f"{scheme.name}: two recipients got the same wrap")
            seal_us[scheme.name].append((t1 - t0) * 1e6)
            open_us[scheme.name].append((t3 - t2) * 1e6)
            sizes[scheme.name] = len(wrap) - len(body)
    verify_us = ed25519_verify_us()
    figures: dict[str, Any] = {}
    for scheme in SCHEMES:
        seal = statistics.median(seal_us[scheme.name])
        open_ = statistics.median(open_us[scheme.name])
        figures[scheme.name] = {
            "describes": scheme.describes,
            "seal_us_per_notice": seal,
            "seal_us_per_wrap": seal / recipients,
            "open_us_per_wrap": open_,
            "overhead_bytes_per_wrap": sizes[scheme.name],
        }
    ours = figures[OURS]
    for f in figures.values():
        f["seal_ratio"] = f["seal_us_per_notice"] / ours["seal_us_per_notice"]
        f["open_ratio"] = f["open_us_per_wrap"] / ours["open_us_per_wrap"]
        f["seal_per_wrap_in_verifies"] = f["seal_us_per_wrap"] / verify_us
        f["open_in_verifies"] = f["open_us_per_wrap"] / verify_us
    return {
        "schema": SCHEMA,
        "recipients": recipients,
        "rounds": rounds,
        "ed25519_verify_us": verify_us,
        "ours": OURS,
        "schemes": figures,
    }


def text(report: dict[str, Any]) -> str:
    """The report as a table (medians; ratios to the classical suite's wrap)."""
    lines = [
        f"broker bench wraps: {report['recipients']} recipients, {report['rounds']} rounds, "
        f"one Ed25519 verify {report['ed25519_verify_us']:.1f} us; ratios to {report['ours']}",
        f"  {'scheme':<22}{'seal/notice us':>15}{'ratio':>7}{'open/wrap us':>14}{'ratio':>7}"
        f"{'bytes':>7}",
    ]
    for name, f in report["schemes"].items():
        lines.append(
            f"  {name:<22}{f['seal_us_per_notice']:>15.1f}{f['seal_ratio']:>7.2f}"
            f"{f['open_us_per_wrap']:>14.1f}{f['open_ratio']:>7.2f}"
            f"{f['overhead_bytes_per_wrap']:>7}"
        )
    lines.append("  bytes: what a wrap adds to its WrapBody (ephemeral key or KEM output, tag)")
    return "\n".join(lines)
