"""What the overview cards and the tray need to know about requests, tasks and rewards.

Counts come from the core (``vault.consent``, ``vault.task_state``, ``vault.ledger``); nothing here
invents a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Summary:
    """(big text, note) for each overview card, and the ids of waiting requests."""

    requests: tuple[str, str]
    tasks: tuple[str, str]
    rewards: tuple[str, str]
    pending: list[str]


def pending_requests(vault: Any) -> list[dict[str, Any]]:
    """Requests waiting for a decision (not expired)."""
    from vault import consent as vc

    return [r for r in vc.list_requests(vault) if r["status"] == "pending"]


def summary(vault: Any) -> Summary:
    """Counts for the overview cards."""
    from app.gui.rewards_screen import totals_text
    from vault import consent as vc
    from vault import ledger as vl
    from vault import task_state as ts

    pending = pending_requests(vault)
    active = [c for c in vc.consents(vault) if c.state() == "active"]
    rounds = ts.task_rounds(vault)
    accepted = sum(r["state"] == "accepted" for r in rounds)
    book = vl.ledger(vault)
    if pending:
        names = sorted({r["organization"] for r in pending})
        requests = (str(len(pending)), "from " + ", ".join(names))
    else:
        requests = ("0", "No requests waiting")
    tasks = (
        str(len(active)),
        f"{accepted} round{'s' * (accepted != 1)} accepted so far" if rounds else "No tasks yet",
    )
    count = len(book["receipts"])
    rewards = (
        totals_text(book["by_organization"]),
        f"{count} signed receipt{'s' * (count != 1)}" if count else "No rewards yet",
    )
    return Summary(requests, tasks, rewards, [r["id"] for r in pending])
