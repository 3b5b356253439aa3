"""RFC 9497 oblivious pseudorandom functions, suite ristretto255-SHA512.

Every section of the RFC that the lookups use is one pure function here, named
after it, so the RFC's own vectors test this construction and nothing else:

- 2.1 the prime-order group: ristretto255 (RFC 9496) through libsodium, bundled by
  ``rbcl``; ``hash_to_group`` is RFC 9380's hash_to_ristretto255 with
  expand_message_xmd(SHA-512), ``hash_to_scalar`` the same expansion reduced mod L;
- 3.2.1 ``derive_key_pair``;
- 3.3.1 OPRF: ``blind``, ``blind_evaluate``, ``finalize``, ``evaluate``;
- 3.3.2 VOPRF: ``blind_evaluate_verifiable`` (with a DLEQ proof, 2.2.1
  ``generate_proof``), ``finalize_verifiable`` (2.2.2 ``verify_proof`` first);
- 3.3.3 POPRF: ``blind_partial``, ``blind_evaluate_partial``,
  ``finalize_partial``, ``evaluate_partial``.

Pure: no clock and no randomness of its own. Randomness enters only as scalars
(``blind``, the proof nonce ``r``) that the caller draws with
:func:`random_scalar` from the ``rng`` it is given, so known-answer tests fix
them. Scalars travel as 32 little-endian bytes (SerializeScalar), elements as
their 32-byte ristretto255 encoding (SerializeElement).

Errors: every malformed or identity element, non-canonical scalar or failed
proof raises :class:`OprfError` (an InvalidArgument) with what was wrong. A
proof that does not verify raises :class:`ProofError` (VerifyError in the RFC).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any, Final

from broker.errors import InvalidArgument

SUITE: Final = "ristretto255-SHA512"
MODE_OPRF: Final = 0x00
MODE_VOPRF: Final = 0x01
MODE_POPRF: Final = 0x02
MODES: Final = (MODE_OPRF, MODE_VOPRF, MODE_POPRF)

NE: Final = 32  # element bytes
NS: Final = 32  # scalar bytes
NH: Final = 64  # SHA-512 output
# The group order L = 2^252 + 27742317777372353535851937790883648493 (RFC 9496 4.1).
ORDER: Final = 2**252 + 27742317777372353535851937790883648493
IDENTITY: Final = bytes(NE)
# The ristretto255 generator's encoding (RFC 9496 4.4).
GENERATOR: Final = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")

Rng = Callable[[int], bytes]


def _sodium() -> Any:
    # rbcl is imported on first use: loading its bundled libsodium takes about a second,
    # which processes that never evaluate (the broker) need not pay.
    import rbcl

    return rbcl


class OprfError(InvalidArgument):
    """A malformed element or scalar, an identity element, or an input the OPRF refuses."""


class ProofError(OprfError):
    """A DLEQ proof that does not verify (RFC 9497 VerifyError)."""


# -- 3.1 context string and the hash functions of the suite --------------------------------


def context_string(mode: int) -> bytes:
    """``"OPRFV1-" || I2OSP(mode, 1) || "-" || identifier`` (RFC 9497 3.1)."""
    if mode not in MODES:
        raise OprfError(f"unknown OPRF mode {mode}: use 0 (OPRF), 1 (VOPRF) or 2 (POPRF)")
    return b"OPRFV1-" + bytes([mode]) + b"-" + SUITE.encode()


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def _framed(*parts: bytes) -> bytes:
    return b"".join(_i2osp(len(p), 2) + p for p in parts)


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 5.3.1 expand_message_xmd with SHA-512."""
    if len(dst) > 255:
        raise OprfError("domain separation tag longer than 255 bytes")
    ell = -(-length // NH)
    if ell > 255 or length > 65535:
        raise OprfError("expand_message_xmd: requested output too long")
    dst_prime = dst + _i2osp(len(dst), 1)
    b0 = hashlib.sha512(bytes(128) + msg + _i2osp(length, 2) + b"\x00" + dst_prime).digest()
    out = [hashlib.sha512(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        mixed = bytes(a ^ b for a, b in zip(b0, out[-1], strict=True))
        out.append(hashlib.sha512(mixed + _i2osp(i, 1) + dst_prime).digest())
    return b"".join(out)[:length]


def hash_to_group(msg: bytes, mode: int) -> bytes:
    """HashToGroup: hash_to_ristretto255 with DST ``"HashToGroup-" || contextString``."""
    uniform = expand_message_xmd(msg, b"HashToGroup-" + context_string(mode), 64)
    return bytes(_sodium().crypto_core_ristretto255_from_hash(uniform))


def hash_to_scalar(msg: bytes, mode: int, dst: bytes | None = None) -> bytes:
    """HashToScalar: 64 uniform bytes reduced mod L (DST ``"HashToScalar-" || contextString``)."""
    if dst is None:
        dst = b"HashToScalar-" + context_string(mode)
    return bytes(_sodium().crypto_core_ristretto255_scalar_reduce(expand_message_xmd(msg, dst, 64)))


# -- the group: checked deserialization and arithmetic --------------------------------------


def check_element(data: bytes, what: str = "element") -> bytes:
    """DeserializeElement: a canonical ristretto255 encoding that is not the identity."""
    if not isinstance(data, bytes) or len(data) != NE:
        raise OprfError(f"{what} must be {NE} bytes")
    if data == IDENTITY or not _sodium().crypto_core_ristretto255_is_valid_point(data):
        raise OprfError(f"{what} is not a valid ristretto255 element")
    return data


def check_scalar(data: bytes, what: str = "scalar") -> bytes:
    """DeserializeScalar: 32 little-endian bytes of an integer below the group order."""
    if not isinstance(data, bytes) or len(data) != NS:
        raise OprfError(f"{what} must be {NS} bytes")
    if int.from_bytes(data, "little") >= ORDER:
        raise OprfError(f"{what} is not a canonical scalar")
    return data


def scalar_of(value: int) -> bytes:
    """Serialize an integer mod L as a scalar."""
    return (value % ORDER).to_bytes(NS, "little")


def _int(scalar: bytes) -> int:
    return int.from_bytes(scalar, "little")


def scalar_mult(scalar: bytes, element: bytes) -> bytes:
    """``scalar * element``; the identity where the product is the identity."""
    if _int(scalar) % ORDER == 0 or element == IDENTITY:
        return IDENTITY
    try:
        return bytes(_sodium().crypto_scalarmult_ristretto255(scalar, element))
    except RuntimeError:  # libsodium refuses an identity result
        return IDENTITY


def scalar_mult_gen(scalar: bytes) -> bytes:
    """``scalar * G``."""
    if _int(scalar) % ORDER == 0:
        return IDENTITY
    return bytes(_sodium().crypto_scalarmult_ristretto255_base(scalar))


def _mult(scalar: bytes, element: bytes) -> bytes:
    # The same product; libsodium's fixed-base table makes it ~3x faster for G.
    return scalar_mult_gen(scalar) if element == GENERATOR else scalar_mult(scalar, element)


def add(p: bytes, q: bytes) -> bytes:
    """Group addition, with the identity handled."""
    if p == IDENTITY:
        return q
    if q == IDENTITY:
        return p
    return bytes(_sodium().crypto_core_ristretto255_add(p, q))


def scalar_inverse(scalar: bytes) -> bytes:
    """The inverse mod L of a non-zero scalar."""
    if _int(scalar) % ORDER == 0:
        raise OprfError("the zero scalar has no inverse")
    return scalar_of(pow(_int(scalar), -1, ORDER))


def random_scalar(rng: Rng) -> bytes:
    """RandomScalar: a uniform non-zero scalar from 64 bytes of ``rng`` (rejection of zero)."""
    for _ in range(16):
        s = bytes(_sodium().crypto_core_ristretto255_scalar_reduce(rng(64)))
        if _int(s) != 0:
            return s
    raise OprfError("the random source keeps returning zero")


# -- 3.2.1 key generation -----------------------------------------------------------------


def derive_key_pair(seed: bytes, info: bytes, mode: int) -> tuple[bytes, bytes]:
    """DeriveKeyPair(seed, info): return ``(skS, pkS)`` (RFC 9497 3.2.1)."""
    if len(seed) != NS:
        raise OprfError(f"seed must be {NS} bytes")
    derive_input = seed + _framed(info)
    dst = b"DeriveKeyPair" + context_string(mode)
    for counter in range(256):
        sk = hash_to_scalar(derive_input + _i2osp(counter, 1), mode, dst)
        if _int(sk) != 0:
            return sk, scalar_mult_gen(sk)
    raise OprfError("DeriveKeyPair: no key after 256 tries")  # pragma: no cover


def public_key(sk: bytes) -> bytes:
    """``pkS = skS * G`` for a checked secret scalar."""
    check_scalar(sk, "secret key")
    if _int(sk) == 0:
        raise OprfError("the secret key must not be zero")
    return scalar_mult_gen(sk)


# -- 2.2 discrete-log equivalence proofs ----------------------------------------------------


def _composites(
    k: bytes | None, b: bytes, cs: Sequence[bytes], ds: Sequence[bytes], mode: int
) -> tuple[bytes, bytes]:
    # 2.2.1 ComputeCompositesFast (with k) and 2.2.2 ComputeComposites (without).
    seed_dst = b"Seed-" + context_string(mode)
    seed = hashlib.sha512(_framed(b, seed_dst)).digest()
    m, z = IDENTITY, IDENTITY
    for i, (c, d) in enumerate(zip(cs, ds, strict=True)):
        transcript = _framed(seed) + _i2osp(i, 2) + _framed(c, d) + b"Composite"
        di = hash_to_scalar(transcript, mode)
        m = add(scalar_mult(di, c), m)
        if k is None:
            z = add(scalar_mult(di, d), z)
    if k is not None:
        z = scalar_mult(k, m)
    return m, z


def _challenge(b: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes, mode: int) -> bytes:
    return hash_to_scalar(_framed(b, m, z, t2, t3) + b"Challenge", mode)


def generate_proof(
    k: bytes,
    a: bytes,
    b: bytes,
    cs: Sequence[bytes],
    ds: Sequence[bytes],
    r: bytes,
    mode: int,
) -> bytes:
    """GenerateProof(k, A, B, C, D) with nonce ``r``: return ``c || s`` (RFC 9497 2.2.1)."""
    m, z = _composites(k, b, cs, ds, mode)
    t2 = _mult(r, a)
    t3 = scalar_mult(r, m)
    c = _challenge(b, m, z, t2, t3, mode)
    s = scalar_of(_int(r) - _int(c) * _int(k))
    return c + s


def verify_proof(
    a: bytes, b: bytes, cs: Sequence[bytes], ds: Sequence[bytes], proof: bytes, mode: int
) -> None:
    """VerifyProof(A, B, C, D, proof); raise ProofError unless it verifies (RFC 9497 2.2.2)."""
    if len(proof) != 2 * NS:
        raise ProofError(f"a proof is {2 * NS} bytes")
    if len(cs) != len(ds) or not cs:
        raise ProofError("a proof covers as many evaluated elements as blinded ones, at least one")
    c, s = check_scalar(proof[:NS], "proof challenge"), check_scalar(proof[NS:], "proof response")
    m, z = _composites(None, b, cs, ds, mode)
    t2 = add(_mult(s, a), scalar_mult(c, b))
    t3 = add(scalar_mult(s, m), scalar_mult(c, z))
    if not hmac.compare_digest(_challenge(b, m, z, t2, t3, mode), c):
        raise ProofError("the evaluator's proof does not verify against its public key")


# -- 3.3.1 OPRF -------------------------------------------------------------------------------


def blind(input_: bytes, blind_scalar: bytes, mode: int) -> bytes:
    """Blind(input) with the given blind: return the blinded element (RFC 9497 3.3.1)."""
    check_scalar(blind_scalar, "blind")
    if _int(blind_scalar) == 0:
        raise OprfError("the blind must not be zero")
    element = hash_to_group(input_, mode)
    if element == IDENTITY:  # pragma: no cover - negligible probability
        raise OprfError("InvalidInputError: the input hashes to the identity")
    return scalar_mult(blind_scalar, element)


def blind_evaluate(sk: bytes, blinded: bytes) -> bytes:
    """BlindEvaluate(skS, blindedElement) = skS * blindedElement."""
    return scalar_mult(sk, check_element(blinded, "blinded element"))


def _finalize_hash(input_: bytes, unblinded: bytes, info: bytes | None) -> bytes:
    parts = (input_, unblinded) if info is None else (input_, info, unblinded)
    return hashlib.sha512(_framed(*parts) + b"Finalize").digest()


def finalize(input_: bytes, blind_scalar: bytes, evaluated: bytes) -> bytes:
    """Finalize(input, blind, evaluatedElement): the 64-byte PRF output (RFC 9497 3.3.1)."""
    check_element(evaluated, "evaluated element")
    n = scalar_mult(scalar_inverse(blind_scalar), evaluated)
    return _finalize_hash(input_, n, None)


def evaluate(sk: bytes, input_: bytes, mode: int) -> bytes:
    """Evaluate(skS, input): the PRF output without blinding (OPRF and VOPRF modes)."""
    element = hash_to_group(input_, mode)
    return _finalize_hash(input_, scalar_mult(sk, element), None)


# -- 3.3.2 VOPRF ------------------------------------------------------------------------------


def blind_evaluate_verifiable(
    sk: bytes, pk: bytes, blinded: Sequence[bytes], r: bytes
) -> tuple[list[bytes], bytes]:
    """BlindEvaluate of a batch in VOPRF mode: evaluated elements and one proof."""
    if not blinded:
        raise OprfError("nothing to evaluate")
    evaluated = [blind_evaluate(sk, b) for b in blinded]
    proof = generate_proof(sk, GENERATOR, pk, list(blinded), evaluated, r, MODE_VOPRF)
    return evaluated, proof


def finalize_verifiable(
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    evaluated: Sequence[bytes],
    blinded: Sequence[bytes],
    pk: bytes,
    proof: bytes,
) -> list[bytes]:
    """Finalize a VOPRF batch: verify the proof against ``pk``, then unblind each output."""
    if not (len(inputs) == len(blinds) == len(evaluated) == len(blinded)):
        raise OprfError("inputs, blinds and elements must come in equal numbers")
    check_element(pk, "public key")
    for e in evaluated:
        check_element(e, "evaluated element")
    verify_proof(GENERATOR, pk, list(blinded), list(evaluated), proof, MODE_VOPRF)
    return [finalize(i, b, e) for i, b, e in zip(inputs, blinds, evaluated, strict=True)]


# -- 3.3.3 POPRF ------------------------------------------------------------------------------


def _tweak(info: bytes) -> bytes:
    if len(info) > 65535:
        raise OprfError("info longer than 65535 bytes")
    return hash_to_scalar(b"Info" + _framed(info), MODE_POPRF)


def tweaked_key(pk: bytes, info: bytes) -> bytes:
    """The client's tweakedKey = G * m + pkS, m = HashToScalar("Info" || info)."""
    t = add(scalar_mult_gen(_tweak(info)), check_element(pk, "public key"))
    if t == IDENTITY:  # pragma: no cover
        raise OprfError("InvalidInputError: the tweaked key is the identity")
    return t


def blind_partial(input_: bytes, blind_scalar: bytes) -> bytes:
    """POPRF Blind: the blinded element (the tweaked key comes from :func:`tweaked_key`)."""
    return blind(input_, blind_scalar, MODE_POPRF)


def _tweaked_secret(sk: bytes, info: bytes) -> bytes:
    t = (_int(sk) + _int(_tweak(info))) % ORDER
    if t == 0:  # pragma: no cover
        raise OprfError("InverseError: the tweaked secret is zero")
    return scalar_of(t)


def blind_evaluate_partial(
    sk: bytes, blinded: Sequence[bytes], info: bytes, r: bytes
) -> tuple[list[bytes], bytes]:
    """POPRF BlindEvaluate of a batch: evaluated elements and one proof."""
    if not blinded:
        raise OprfError("nothing to evaluate")
    t = _tweaked_secret(sk, info)
    inv = scalar_inverse(t)
    evaluated = [scalar_mult(inv, check_element(b, "blinded element")) for b in blinded]
    tweaked = scalar_mult_gen(t)
    proof = generate_proof(t, GENERATOR, tweaked, evaluated, list(blinded), r, MODE_POPRF)
    return evaluated, proof


def finalize_partial(
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    evaluated: Sequence[bytes],
    blinded: Sequence[bytes],
    pk: bytes,
    info: bytes,
    proof: bytes,
) -> list[bytes]:
    """POPRF Finalize of a batch: verify the proof against the tweaked key, then unblind."""
    if not (len(inputs) == len(blinds) == len(evaluated) == len(blinded)):
        raise OprfError("inputs, blinds and elements must come in equal numbers")
    for e in evaluated:
        check_element(e, "evaluated element")
    verify_proof(
        GENERATOR, tweaked_key(pk, info), list(evaluated), list(blinded), proof, MODE_POPRF
    )
    out = []
    for i, b, e in zip(inputs, blinds, evaluated, strict=True):
        out.append(_finalize_hash(i, scalar_mult(scalar_inverse(b), e), info))
    return out


def evaluate_partial(sk: bytes, input_: bytes, info: bytes) -> bytes:
    """POPRF Evaluate(skS, input, info) without blinding."""
    element = hash_to_group(input_, MODE_POPRF)
    n = scalar_mult(scalar_inverse(_tweaked_secret(sk, info)), element)
    return _finalize_hash(input_, n, info)
