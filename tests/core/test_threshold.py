"""t-of-n lookup-key holders: any t shares evaluate exactly as the whole key; fewer do not."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core import oprf, threshold


def _rng(seed: int) -> oprf.Rng:
    counter = itertools.count()

    def rng(n: int) -> bytes:
        import hashlib

        return hashlib.shake_256(b"%d/%d" % (seed, next(counter))).digest(n)

    return rng


@given(
    k=st.integers(1, oprf.ORDER - 1),
    t_n=st.tuples(st.integers(1, 5), st.integers(0, 3)).map(lambda x: (x[0], x[0] + x[1])),
    seed=st.integers(0, 2**32),
)
def test_any_t_shares_evaluate_as_the_whole_key(k: int, t_n: tuple[int, int], seed: int) -> None:
    t, n = t_n
    secret = oprf.scalar_of(k)
    shares = threshold.split(secret, t, n, _rng(seed))
    blinded = oprf.blind(b"passport", oprf.scalar_of(seed + 1), oprf.MODE_VOPRF)
    want = oprf.scalar_mult(secret, blinded)
    publics = {i: oprf.public_key(s) for i, s in shares.items()}
    for subset in itertools.islice(itertools.combinations(sorted(shares), t), 4):
        parts = {i: oprf.scalar_mult(shares[i], blinded) for i in subset}
        assert threshold.combine(parts) == want
        threshold.combine_public({i: publics[i] for i in subset}, oprf.public_key(secret))


def test_fewer_than_t_shares_do_not_evaluate() -> None:
    secret = oprf.random_scalar(os.urandom)
    shares = threshold.split(secret, 3, 5, os.urandom)
    blinded = oprf.blind(b"passport", oprf.random_scalar(os.urandom), oprf.MODE_VOPRF)
    want = oprf.scalar_mult(secret, blinded)
    two = {i: oprf.scalar_mult(shares[i], blinded) for i in (1, 4)}
    assert threshold.combine(two) != want
    with pytest.raises(oprf.OprfError, match="do not belong"):
        threshold.combine_public(
            {i: oprf.public_key(shares[i]) for i in (1, 4)}, oprf.public_key(secret)
        )


def test_tokens_from_holders_equal_the_single_key_prf() -> None:
    secret = oprf.random_scalar(os.urandom)
    shares = threshold.split(secret, 2, 3, os.urandom)
    data = b"broker.v1 selector\x00document:FR:P:19FR23456"
    b = oprf.random_scalar(os.urandom)
    blinded = oprf.blind(data, b, oprf.MODE_VOPRF)
    parts = {}
    for i in (2, 3):
        pk_i = oprf.public_key(shares[i])
        [z], proof = oprf.blind_evaluate_verifiable(
            shares[i], pk_i, [blinded], oprf.random_scalar(os.urandom)
        )
        oprf.verify_proof(oprf.GENERATOR, pk_i, [blinded], [z], proof, oprf.MODE_VOPRF)
        parts[i] = z
    [z] = threshold.combine_evaluations([parts])
    assert oprf.finalize(data, b, z) == oprf.evaluate(secret, data, oprf.MODE_VOPRF)


def test_bad_parameters_are_refused() -> None:
    secret = oprf.scalar_of(5)
    with pytest.raises(oprf.OprfError, match="threshold"):
        threshold.split(secret, 4, 3, os.urandom)
    with pytest.raises(oprf.OprfError, match="threshold"):
        threshold.split(secret, 0, 3, os.urandom)
    with pytest.raises(oprf.OprfError, match="distinct"):
        threshold.lagrange_at_zero([1, 1])
