"""RFC 6962 Merkle trees: leaf and node hashes, roots, compact ranges, inclusion proofs.

Pure functions over bytes; the access log (vault/accesslog.py) stores entries and leaf hashes.
Leaf hash ``SHA-256(0x00 || entry)``, node hash ``SHA-256(0x01 || left || right)``; the root of
the empty tree is ``SHA-256("")``. Inclusion proofs are verified with the algorithm of
RFC 9162 section 2.1.3.2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry)."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of ``leaves`` (already leaf-hashed), level by level.

    Pairing neighbours and carrying an odd last node up unchanged builds exactly the tree of
    RFC 6962 (left subtree = largest power of two smaller than n).
    """
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


Frontier = list[tuple[int, bytes]]  # (height, hash) of the full subtrees on the right edge


def frontier_append(frontier: Frontier, leaf: bytes) -> Frontier:
    """Add one leaf hash to a compact range; O(log n)."""
    stack = [*frontier, (0, leaf)]
    while len(stack) > 1 and stack[-1][0] == stack[-2][0]:
        (height, right), (_, left) = stack.pop(), stack.pop()
        stack.append((height + 1, node_hash(left, right)))
    return stack


def frontier_root(frontier: Frontier) -> bytes:
    """The tree root from a compact range."""
    if not frontier:
        return EMPTY_ROOT
    result = frontier[-1][1]
    for _, subtree in reversed(frontier[:-1]):
        result = node_hash(subtree, result)
    return result


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path PATH(index, D[n]) of RFC 6962 section 2.1.1."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is outside a tree of size {len(leaves)}")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if index < lo + k:
            path.append(root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(leaves[lo : lo + k]))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], expected_root: bytes
) -> bool:
    """True when ``path`` proves ``leaf`` is leaf ``index`` of a tree of ``size`` and root."""
    if not 0 <= index < size:
        return False
    fn, sn, result = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == expected_root
