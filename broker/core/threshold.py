"""A t-of-n threshold of lookup-key holders: Shamir shares of the OPRF key.

The secret scalar k is the constant term of a random polynomial f of degree t-1
over the scalars mod L; holder i (1..n) gets k_i = f(i) and publishes
P_i = k_i·G. Any t holders evaluate a blinded element B as Z_i = k_i·B, each with a
DLEQ proof against its own P_i (RFC 9497 2.2, unchanged), and the node combines

    Z = Σ λ_i·Z_i,  λ_i = Π_{j≠i} j / (j - i)   (Lagrange coefficients at 0)

so Z = k·B and the tokens are exactly those of a single holder of k: the index does
not change. Fewer than t holders learn nothing of k, and cannot evaluate.

``combine_public`` checks a set of public shares against the group key P = k·G
(Σ λ_i·P_i = P), so a node refuses holders whose shares do not belong together.

Pure: the polynomial's coefficients come from the ``rng`` parameter. Dealing with
:func:`split` needs k in one place once (a dealer that then forgets it); a
distributed key generation would avoid even that, and is not built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from broker.core import oprf

MAX_HOLDERS = 64


def _check(t: int, n: int) -> None:
    if not 1 <= t <= n <= MAX_HOLDERS:
        raise oprf.OprfError(f"a threshold needs 1 <= t <= n <= {MAX_HOLDERS} (got t={t}, n={n})")


def split(secret: bytes, t: int, n: int, rng: oprf.Rng) -> dict[int, bytes]:
    """Shares ``{i: f(i)}`` for holders 1..n of ``secret`` = f(0), threshold ``t``."""
    _check(t, n)
    oprf.check_scalar(secret, "secret key")
    coefficients = [int.from_bytes(secret, "little")]
    coefficients += [int.from_bytes(oprf.random_scalar(rng), "little") for _ in range(t - 1)]
    shares = {}
    for i in range(1, n + 1):
        value = 0
        for c in reversed(coefficients):  # Horner
            value = (value * i + c) % oprf.ORDER
        if value == 0:  # pragma: no cover - probability 1/L
            raise oprf.OprfError("a share came out zero: split again")
        shares[i] = oprf.scalar_of(value)
    return shares


def lagrange_at_zero(indexes: Sequence[int]) -> dict[int, bytes]:
    """λ_i for each holder index, to interpolate at 0 from exactly these holders."""
    if len(set(indexes)) != len(indexes) or not indexes:
        raise oprf.OprfError("holder indexes must be distinct, at least one")
    if any(not 1 <= i <= MAX_HOLDERS for i in indexes):
        raise oprf.OprfError(f"holder indexes run from 1 to {MAX_HOLDERS}")
    out = {}
    for i in indexes:
        num, den = 1, 1
        for j in indexes:
            if j != i:
                num = num * j % oprf.ORDER
                den = den * (j - i) % oprf.ORDER
        out[i] = oprf.scalar_of(num * pow(den, -1, oprf.ORDER))
    return out


def combine(parts: Mapping[int, bytes]) -> bytes:
    """Σ λ_i·E_i over holder index -> element (evaluations Z_i, or public shares P_i)."""
    lambdas = lagrange_at_zero(sorted(parts))
    total = oprf.IDENTITY
    for i, element in parts.items():
        total = oprf.add(total, oprf.scalar_mult(lambdas[i], oprf.check_element(element)))
    return total


def combine_public(shares: Mapping[int, bytes], group_key: bytes) -> None:
    """Raise OprfError unless these public shares interpolate to ``group_key``."""
    if combine(shares) != oprf.check_element(group_key, "group key"):
        raise oprf.OprfError("the holders' public shares do not belong to the group key")


def combine_evaluations(
    evaluations: Sequence[Mapping[int, bytes]],
) -> list[bytes]:
    """Per element, combine the holders' evaluations ({index: Z_i}) into k·B."""
    return [combine(parts) for parts in evaluations]
