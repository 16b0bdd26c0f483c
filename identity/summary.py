"""A training request in plain words: the one summary that the CLI and the GUI both show.

A person decides on this text, so it says who asks (and whether the signature checked out),
why, which data, from which time span, what leaves the computer and with which privacy
guarantee, and what they get for it, without jargon a non-expert would have to look up.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from identity.credentials import TrainingRequest
from vault.timeparse import iso_utc

DATASET_WORDS = {
    "health.step_count": "your step counts",
    "health.distance_walking_running": "the distance you walked or ran",
    "health.active_energy_burned": "the active energy you burned",
    "health.heart_rate": "your heart rate",
    "health.resting_heart_rate": "your resting heart rate",
    "health.sleep_analysis": "your sleep",
    "health.workouts": "your workouts",
    "location.points": "the places you have been (location history)",
    "location.visits": "your place visits",
    "location.trips": "your trips",
}


def dataset_words(name: str) -> str:
    """Plain words for a dataset name ('health.body_mass' -> 'your body mass (health)')."""
    if name in DATASET_WORDS:
        return DATASET_WORDS[name]
    kind, _, rest = name.partition(".")
    words = rest.replace("_", " ")
    if kind == "preferences":
        return f"your preferences list '{words}'"
    return f"your {words} ({kind})"


def privacy_strength(epsilon: float) -> str:
    """A rough word for how strong a guarantee of ``epsilon`` is."""
    if epsilon <= 1:
        return "strong"
    if epsilon <= 3:
        return "good"
    if epsilon <= 8:
        return "moderate"
    return "weak"


def _number(value: float) -> str:
    return f"{value:g}"


def amount_words(value: float, unit: str) -> str:
    """'1 credit', '2 credits', '1.5 EUR': an amount in an organization's reward unit.

    Units are the organization's words; a plain lowercase plural ("credits", "points") is
    made singular for exactly 1, anything else ("EUR", "bonus", "gas") is left as it is.
    """
    if value == 1 and re.fullmatch(r"[a-z]{3,}[^su]s", unit):
        unit = unit[:-1]
    return f"{_number(value)} {unit}"


def privacy_words(epsilon: float, delta: float) -> str:
    """The privacy guarantee of (epsilon, delta) in words."""
    factor = math.exp(min(epsilon, 50.0))
    odds = f"{factor:,.0f}" if factor >= 10 else f"{factor:.1f}"
    return (
        f"Your data stays on this computer. Only a noisy model update leaves, with a privacy "
        f"guarantee of ε = {_number(epsilon)} (δ = {delta:.0e}): what the organization receives "
        f"looks almost the same whether or not your data was used, so any conclusion it draws "
        f"about you is at most about {odds} times more likely than if you had never taken "
        f"part (except with a chance of {delta:.0e}). This is a {privacy_strength(epsilon)} "
        "guarantee; a smaller ε is stronger."
    )


def _date(epoch: float) -> str:
    return (iso_utc(epoch) or "")[:10]


def _reward_words(request: TrainingRequest) -> str:
    reward = request.reward
    if reward.per_update <= 0:
        return "No reward is offered."
    unit = reward.unit
    most = min(reward.cap, reward.per_update * request.rounds)
    return (
        f"{amount_words(reward.per_update, unit)} for each accepted round of training, at most "
        f"{amount_words(most, unit)} in all ({request.rounds} rounds, cap "
        f"{amount_words(reward.cap, unit)}). Each payment comes with a receipt signed by the "
        "organization."
    )


def plain_summary(
    request: TrainingRequest, verified: bool = True, now: float | None = None
) -> dict[str, Any]:
    """The request as plain-language strings, plus the few numbers a screen may need."""
    now = time.time() if now is None else now
    check = "signature verified" if verified else "SIGNATURE NOT VERIFIED"
    data = [dataset_words(name) for name in request.datasets]
    days = max(1, round((request.expires - now) / 86_400)) if request.expires > now else 0
    expires = (
        f"This request expires on {_date(request.expires)} (in {days} day{'s' * (days != 1)})."
        if days
        else f"This request expired on {_date(request.expires)}."
    )
    warnings = []
    if not verified:
        warnings.append("The signature could not be checked: do not approve this request.")
    if privacy_strength(request.privacy.epsilon) == "weak":
        warnings.append(
            f"The privacy guarantee asked for (ε = {_number(request.privacy.epsilon)}) is weak;"
            " you can approve a smaller budget."
        )
    return {
        "id": request.id,
        "title": f"{request.organization} asks to train a model with your data",
        "who": f"{request.organization} ({request.issuer}, {check})",
        "organization": request.organization,
        "did": request.issuer,
        "verified": verified,
        "why": request.purpose,
        "data": data,
        "data_text": "It would use " + _join(data) + ".",
        "time_range": (
            f"Only data from {_date(request.time_from)} to {_date(request.time_to)} is used."
        ),
        "what_leaves": (
            f"Your computer computes the '{request.recipe}' summary of that data, trains the "
            f"organization's model on it for {request.rounds} round"
            f"{'s' * (request.rounds != 1)}, and sends only the model's changes."
        ),
        "privacy": privacy_words(request.privacy.epsilon, request.privacy.delta),
        "epsilon": request.privacy.epsilon,
        "delta": request.privacy.delta,
        "reward": _reward_words(request),
        "expires": expires,
        "warnings": warnings,
    }


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
