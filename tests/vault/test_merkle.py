"""RFC 6962 Merkle tree against the published test vectors, plus proof properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vault.merkle import (
    EMPTY_ROOT,
    frontier_append,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    root,
    verify_inclusion,
)

# The leaves and roots used by certificate-transparency's reference implementations.
LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path)
PROOFS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
HASHED = [leaf_hash(leaf) for leaf in LEAVES]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert frontier_root([]) == EMPTY_ROOT


def test_roots_match_rfc6962_vectors() -> None:
    frontier: list = []
    for size, expected in enumerate(ROOTS, 1):
        frontier = frontier_append(frontier, HASHED[size - 1])
        assert root(HASHED[:size]).hex() == expected
        assert frontier_root(frontier).hex() == expected


def test_inclusion_proofs_match_vectors_and_verify() -> None:
    for index, size, path in PROOFS:
        proof = inclusion_proof(index, HASHED[:size])
        assert [p.hex() for p in proof] == path
        assert verify_inclusion(index, size, HASHED[index], proof, bytes.fromhex(ROOTS[size - 1]))


@given(st.integers(1, 70), st.data())
def test_every_proof_verifies_and_a_changed_one_does_not(size: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    index = data.draw(st.integers(0, size - 1))
    tree_root = root(leaves)
    proof = inclusion_proof(index, leaves)
    assert verify_inclusion(index, size, leaves[index], proof, tree_root)
    assert not verify_inclusion(index, size, leaf_hash(b"other"), proof, tree_root)
    if proof:
        forged = [bytes(32), *proof[1:]]
        assert not verify_inclusion(index, size, leaves[index], forged, tree_root)
