"""RFC 9497 ristretto255-SHA512: the RFC's vectors, and properties of our construction.

The vectors (OPRF, VOPRF and POPRF entries of allVectors.json, RFC 9497 Appendix A.1)
are read from BROKER_VECTORS_DIR; without it those tests skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core import oprf

SUITE = "ristretto255-SHA512"


def _suite_entries(vectors_dir: Path) -> list[dict[str, Any]]:
    data = json.loads((vectors_dir / "oprf" / "allVectors.json").read_text())
    entries = [e for e in data if e["identifier"] == SUITE]
    assert sorted(e["mode"] for e in entries) == [0, 1, 2]
    return entries


def _hexes(field: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in field.split(",")]


@pytest.fixture(scope="module")
def entries(vectors_dir: Path) -> list[dict[str, Any]]:
    return _suite_entries(vectors_dir)


def test_every_ristretto255_vector(entries: list[dict[str, Any]]) -> None:
    checked = 0
    for entry in entries:
        mode = entry["mode"]
        assert bytes.fromhex(entry["groupDST"]) == b"HashToGroup-" + oprf.context_string(mode)
        sk, pk = oprf.derive_key_pair(
            bytes.fromhex(entry["seed"]), bytes.fromhex(entry["keyInfo"]), mode
        )
        assert sk.hex() == entry["skSm"]
        if mode != oprf.MODE_OPRF:
            assert pk.hex() == entry["pkSm"]
        for v in entry["vectors"]:
            inputs, blinds = _hexes(v["Input"]), _hexes(v["Blind"])
            assert len(inputs) == v["Batch"]
            want_blinded = _hexes(v["BlindedElement"])
            want_eval = _hexes(v["EvaluationElement"])
            want_out = _hexes(v["Output"])
            if mode == oprf.MODE_POPRF:
                info = bytes.fromhex(v["Info"])
                blinded = [oprf.blind_partial(i, b) for i, b in zip(inputs, blinds, strict=True)]
                assert blinded == want_blinded
                r = bytes.fromhex(v["Proof"]["r"])
                evaluated, proof = oprf.blind_evaluate_partial(sk, blinded, info, r)
                assert evaluated == want_eval
                assert proof.hex() == v["Proof"]["proof"]
                out = oprf.finalize_partial(inputs, blinds, evaluated, blinded, pk, info, proof)
                assert [oprf.evaluate_partial(sk, i, info) for i in inputs] == want_out
            else:
                blinded = [oprf.blind(i, b, mode) for i, b in zip(inputs, blinds, strict=True)]
                assert blinded == want_blinded
                if mode == oprf.MODE_VOPRF:
                    r = bytes.fromhex(v["Proof"]["r"])
                    evaluated, proof = oprf.blind_evaluate_verifiable(sk, pk, blinded, r)
                    assert proof.hex() == v["Proof"]["proof"]
                    out = oprf.finalize_verifiable(inputs, blinds, evaluated, blinded, pk, proof)
                else:
                    evaluated = [oprf.blind_evaluate(sk, b) for b in blinded]
                    out = [
                        oprf.finalize(i, b, e)
                        for i, b, e in zip(inputs, blinds, evaluated, strict=True)
                    ]
                assert evaluated == want_eval
                assert [oprf.evaluate(sk, i, mode) for i in inputs] == want_out
            assert out == want_out
            checked += 1
    assert checked == 8  # 2 OPRF, 3 VOPRF, 3 POPRF


def test_a_bad_vector_proof_fails(entries: list[dict[str, Any]]) -> None:
    entry = next(e for e in entries if e["mode"] == oprf.MODE_VOPRF)
    v = entry["vectors"][2]  # the batch of two
    _sk, pk = oprf.derive_key_pair(bytes.fromhex(entry["seed"]), bytes.fromhex(entry["keyInfo"]), 1)
    inputs, blinds = _hexes(v["Input"]), _hexes(v["Blind"])
    blinded, evaluated = _hexes(v["BlindedElement"]), _hexes(v["EvaluationElement"])
    proof = bytes.fromhex(v["Proof"]["proof"])
    with pytest.raises(oprf.ProofError):  # evaluations swapped
        oprf.finalize_verifiable(inputs, blinds, evaluated[::-1], blinded, pk, proof)
    with pytest.raises(oprf.ProofError):  # another key
        other = oprf.public_key(oprf.scalar_of(12345))
        oprf.finalize_verifiable(inputs, blinds, evaluated, blinded, other, proof)


# -- properties ------------------------------------------------------------------------------

scalars = st.integers(min_value=1, max_value=oprf.ORDER - 1).map(oprf.scalar_of)


@given(input_=st.binary(max_size=64), sk=scalars, b=scalars, r=scalars)
def test_blind_evaluate_finalize_is_the_unblinded_prf(
    input_: bytes, sk: bytes, b: bytes, r: bytes
) -> None:
    pk = oprf.public_key(sk)
    blinded = oprf.blind(input_, b, oprf.MODE_VOPRF)
    evaluated, proof = oprf.blind_evaluate_verifiable(sk, pk, [blinded], r)
    out = oprf.finalize_verifiable([input_], [b], evaluated, [blinded], pk, proof)
    assert out == [oprf.evaluate(sk, input_, oprf.MODE_VOPRF)]


@given(input_=st.binary(max_size=32), sk=scalars, b=scalars, r=scalars, bit=st.integers(0, 511))
def test_a_flipped_proof_bit_fails(input_: bytes, sk: bytes, b: bytes, r: bytes, bit: int) -> None:
    pk = oprf.public_key(sk)
    blinded = oprf.blind(input_, b, oprf.MODE_VOPRF)
    evaluated, proof = oprf.blind_evaluate_verifiable(sk, pk, [blinded], r)
    bad = bytearray(proof)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(oprf.OprfError):  # ProofError, or a non-canonical scalar
        oprf.finalize_verifiable([input_], [b], evaluated, [blinded], pk, bytes(bad))


@given(input_=st.binary(max_size=32), sk=scalars, other=scalars, b=scalars, r=scalars)
def test_an_evaluation_under_another_key_fails(
    input_: bytes, sk: bytes, other: bytes, b: bytes, r: bytes
) -> None:
    if sk == other:
        return
    pk = oprf.public_key(sk)
    blinded = oprf.blind(input_, b, oprf.MODE_VOPRF)
    evaluated, proof = oprf.blind_evaluate_verifiable(other, oprf.public_key(other), [blinded], r)
    with pytest.raises(oprf.ProofError):
        oprf.finalize_verifiable([input_], [b], evaluated, [blinded], pk, proof)


def test_malformed_elements_and_scalars_are_refused() -> None:
    sk = oprf.scalar_of(7)
    with pytest.raises(oprf.OprfError, match="not a valid"):
        oprf.blind_evaluate(sk, oprf.IDENTITY)
    with pytest.raises(oprf.OprfError, match="32 bytes"):
        oprf.blind_evaluate(sk, b"\x01" * 31)
    with pytest.raises(oprf.OprfError, match="not a valid"):
        oprf.blind_evaluate(sk, b"\xff" * 32)
    with pytest.raises(oprf.OprfError, match="canonical"):
        oprf.check_scalar(oprf.ORDER.to_bytes(32, "little"))
    with pytest.raises(oprf.OprfError, match="mode"):
        oprf.context_string(3)
