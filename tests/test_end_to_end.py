"""End to end, as `tessera demo` tells it: a real exchange on loopback, the SDK, three vaults.

Alice and Bob approve, Carol denies; three rounds run through the real runner; Bob revokes and
the fourth round runs without him. Checked: the organization's model improves on held-out
data, Carol's data is never read, the approving vaults' logs show each round's read, every
vault's logs verify, rewards match the terms exactly, and the revocation stopped Bob.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")  # the organization's SDK (the `org` extra)

from app.commands.demo_cmd import DATASETS, REWARD, run_demo  # noqa: E402


@pytest.mark.slow
def test_the_whole_loop(tmp_path):
    lines: list[str] = []
    facts = run_demo(tmp_path, device="cpu", say=lines.append)

    # the model improves on held-out data, round after round
    losses = facts["losses"]
    story = "\n".join(lines)  # the demo's own account of each round, for a failure message
    assert len(losses) == 4, story
    assert losses[-1] < 0.2 * losses[0], story
    assert losses[1] < losses[0], story

    alice, bob, carol = (facts["people"][n] for n in ("alice", "bob", "carol"))
    # Carol denied: nothing of hers was ever read, her logs hold only her own imports
    assert carol["read_entries"] == 0 and carol["reads"] == []
    assert set(carol["last_actions"].values()) == {"import"}
    # each approving vault logged a read of every dataset in every round it took part in
    assert alice["reads"] == ["1", "2", "3", "4"] and alice["read_entries"] == 4 * len(DATASETS)
    assert bob["reads"] == ["1", "2", "3"] and bob["read_entries"] == 3 * len(DATASETS)
    # Bob's revocation is the last entry of each of his logs, and he ran nothing after it
    assert set(bob["last_actions"].values()) == {"revoke"}
    assert facts["after_revocation"]["bob"] == []
    assert [(r["round"], r["state"]) for r in facts["after_revocation"]["alice"]] == [
        (3, "accepted")
    ]
    # rewards follow the terms exactly: 1 per accepted update, capped at 3 per person
    for person in (alice, bob):
        assert person["rewards"] == REWARD["cap"] and person["receipts"] == 3
    assert facts["after_revocation"]["alice"][0]["receipt"] is None  # over the cap: unpaid
    # everything verifies everywhere
    assert all(p["verify"] and p["rewards_verify"] for p in (alice, bob, carol))
    assert any("improved" in line for line in lines)
