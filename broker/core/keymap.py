"""The key directory: a Merkle map from agency id to its current registry value.

In the spirit of CONIKS and the IETF key-transparency work (and WhatsApp's AKD, a
versioned map whose root a log commits), every signed log checkpoint carries the
root of this map as an extension line, so a node that accepts an agency's keys and
profile only with a proof against a checkpoint it verified cannot be shown a stale
entry: the stale value is not the one under the signed root.

Construction (a compressed sparse Merkle tree over 256-bit keys):

- key(agency) = SHA-256(MAP_KEY_CONTEXT || agency id); the value of an agency is
  SHA-256(MAP_VALUE_CONTEXT || SHA-256(signed entry) || SHA-256(key statement));
- the tree over a set of (key, value) pairs at bit depth d is EMPTY for none,
  leaf(key, value) = SHA-256(0x00 || key || value) for one, and otherwise
  SHA-256(0x01 || tree(keys whose bit d is 0) || tree(keys whose bit d is 1));
  bits are taken most significant first;
- a proof for a key is the sibling hashes from the root down to the depth where its
  leaf sits; verifying hashes the leaf back up and compares with the root. A leaf
  can sit only at one depth in a given tree, so no other value verifies without a
  SHA-256 collision.

Pure; `root` and `proofs` cost O(n log n) hashes for n agencies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence

from broker.errors import InvalidArgument

MAP_KEY_CONTEXT = b"broker.v1 directory key\x00"
MAP_VALUE_CONTEXT = b"broker.v1 directory value\x00"
EMPTY = hashlib.sha256(b"broker.v1 directory empty").digest()
EXTENSION = "broker.v1/directory"  # checkpoint extension line: "<EXTENSION> <base64 root>"
KEY_BITS = 256
HASH_SIZE = 32


class MapProofError(InvalidArgument):
    """A key-directory proof does not verify."""


def map_key(agency_id: str) -> bytes:
    return hashlib.sha256(MAP_KEY_CONTEXT + agency_id.encode()).digest()


def map_value(signed_entry: bytes, statement: bytes) -> bytes:
    """The value the directory holds for an agency's signed entry and key statement."""
    return hashlib.sha256(
        MAP_VALUE_CONTEXT
        + hashlib.sha256(signed_entry).digest()
        + hashlib.sha256(statement).digest()
    ).digest()


def _leaf(key: bytes, value: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + key + value).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _bit(key: bytes, depth: int) -> int:
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


def _tree(items: Sequence[tuple[bytes, bytes]], depth: int) -> bytes:
    if not items:
        return EMPTY
    if len(items) == 1:
        return _leaf(*items[0])
    if depth >= KEY_BITS:
        raise InvalidArgument("two agencies map to the same key")
    split = _split(items, depth)
    return _node(_tree(items[:split], depth + 1), _tree(items[split:], depth + 1))


def _split(items: Sequence[tuple[bytes, bytes]], depth: int) -> int:
    """Index of the first item (sorted by key) whose bit `depth` is 1. The items of a
    subtree share their first `depth` bits, so the bit is 0 then 1: a binary search."""
    lo, hi = 0, len(items)
    while lo < hi:
        mid = (lo + hi) // 2
        if _bit(items[mid][0], depth):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _sorted(values: Mapping[str, bytes]) -> list[tuple[bytes, bytes]]:
    for agency, value in values.items():
        if len(value) != HASH_SIZE:
            raise InvalidArgument(f"directory value of {agency} must be {HASH_SIZE} bytes")
    return sorted((map_key(a), v) for a, v in values.items())


def root(values: Mapping[str, bytes]) -> bytes:
    """The directory root over agency id -> value (EMPTY when there is none)."""
    return _tree(_sorted(values), 0)


def proofs(values: Mapping[str, bytes]) -> dict[str, list[bytes]]:
    """Every agency's proof (sibling hashes, root first), in one pass that hashes each node
    of the tree once (O(n) hashes; the siblings are collected leaf-upwards, then turned)."""
    items = _sorted(values)
    by_key = {map_key(a): a for a in values}
    out: dict[str, list[bytes]] = {}

    def walk(part: Sequence[tuple[bytes, bytes]], depth: int) -> tuple[bytes, list[str]]:
        if not part:
            return EMPTY, []
        if len(part) == 1:
            agency = by_key[part[0][0]]
            out[agency] = []
            return _leaf(*part[0]), [agency]
        if depth >= KEY_BITS:
            raise InvalidArgument("two agencies map to the same key")
        split = _split(part, depth)
        left_hash, left = walk(part[:split], depth + 1)
        right_hash, right = walk(part[split:], depth + 1)
        for agency in left:
            out[agency].append(right_hash)
        for agency in right:
            out[agency].append(left_hash)
        left.extend(right)
        return _node(left_hash, right_hash), left

    walk(items, 0)
    for path in out.values():
        path.reverse()
    return out


def verify(agency_id: str, value: bytes, proof: Sequence[bytes], expected_root: bytes) -> None:
    """Check that `value` is `agency_id`'s value under `expected_root`; raise MapProofError."""
    if len(proof) > KEY_BITS or any(len(h) != HASH_SIZE for h in proof):
        raise MapProofError(f"the directory proof for {agency_id} is malformed")
    if len(value) != HASH_SIZE or len(expected_root) != HASH_SIZE:
        raise MapProofError("directory values and roots are 32 bytes")
    key = map_key(agency_id)
    h = _leaf(key, value)
    for depth in range(len(proof) - 1, -1, -1):
        sibling = proof[depth]
        h = _node(sibling, h) if _bit(key, depth) else _node(h, sibling)
    if h != expected_root:
        raise MapProofError(
            f"{agency_id}'s entry is not the current one in the key directory the checkpoint signs"
        )


def extension(directory_root: bytes) -> str:
    """The checkpoint extension line that commits to the directory root."""
    return f"{EXTENSION} {base64.b64encode(directory_root).decode()}"


def root_from_extensions(extensions: Sequence[str]) -> bytes | None:
    """The directory root a checkpoint's extension lines commit to (None: none does).

    Raises MapProofError if the line is there but malformed or repeated.
    """
    found = [e for e in extensions if e.split(" ", 1)[0] == EXTENSION]
    if not found:
        return None
    if len(found) > 1:
        raise MapProofError("the checkpoint names two directory roots")
    try:
        value = base64.b64decode(found[0].split(" ", 1)[1], validate=True)
    except (IndexError, binascii.Error, ValueError) as exc:
        raise MapProofError("the checkpoint's directory line is malformed") from exc
    if len(value) != HASH_SIZE:
        raise MapProofError("the checkpoint's directory root is not 32 bytes")
    return value
