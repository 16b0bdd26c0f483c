"""``daily_activity@1``: one example per local day of steps, distance, energy, heart and sleep.

Fields (scaled so typical values lie between 0 and about 2): ``steps`` (count / 10,000),
``distance_km`` (km / 10), ``active_energy_kcal`` (kcal / 1,000), ``resting_heart_rate``
(bpm / 100), ``mean_heart_rate`` (bpm / 100), ``sleep_hours`` (hours / 10). A day with no
measurement of a field has 0 there.

Cumulative quantities are summed per source and the largest source total is the day's value:
a phone and a watch both count the same steps, and adding them would double a day.
Sleep belongs to the day on which it ends (the night before that morning).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from vault.recipes import Features, Label, Recipe, Record, Rows, day_text, local_day, register

STEPS = "health.step_count"
DISTANCE = "health.distance_walking_running"
ENERGY = "health.active_energy_burned"
HEART_RATE = "health.heart_rate"
RESTING = "health.resting_heart_rate"
SLEEP = "health.sleep_analysis"
ACTIVE_STEPS = 8_000

_KM_PER = {"km": 1.0, "m": 0.001, "mi": 1.609344, "ft": 0.0003048, "yd": 0.0009144}
_KCAL_PER = {"kcal": 1.0, "Cal": 1.0, "cal": 0.001, "kJ": 0.239006}


def to_km(value: float, unit: str | None) -> float:
    """A distance in km; NaN for a unit we do not know (km when no unit is given)."""
    return value * _KM_PER.get(unit or "km", float("nan"))


def to_kcal(value: float, unit: str | None) -> float:
    """An energy in kcal; NaN for a unit we do not know (kcal when no unit is given)."""
    return value * _KCAL_PER.get(unit or "kcal", float("nan"))


def is_asleep(category: str | None) -> bool:
    """True for Apple's asleep categories (Asleep, AsleepCore/Deep/REM/Unspecified)."""
    return bool(category) and "Asleep" in category


def daily_total(records: Iterable[Record], convert=lambda r: r.value) -> dict[int, float]:
    """Per local day: the largest per-source sum of ``convert(record)`` (de-duplicates sources)."""
    sums: dict[tuple[int, str | None], float] = defaultdict(float)
    for record in records:
        amount = convert(record) if record.value is not None else None
        if amount is None or not np.isfinite(amount):
            continue
        sums[(local_day(record.start, record.offset), record.source)] += amount
    days: dict[int, float] = {}
    for (day, _), total in sums.items():
        days[day] = max(days.get(day, 0.0), total)
    return days


def daily_mean(records: Iterable[Record]) -> dict[int, float]:
    """Per local day: the mean of the records' values."""
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    for record in records:
        if record.value is not None and np.isfinite(record.value):
            acc = sums[local_day(record.start, record.offset)]
            acc[0] += record.value
            acc[1] += 1
    return {day: total / count for day, (total, count) in sums.items()}


def sleep_hours(records: Iterable[Record]) -> dict[int, float]:
    """Per local day of waking: hours asleep, overlapping segments counted once per source."""
    spans: dict[tuple[int, str | None], list[tuple[float, float]]] = defaultdict(list)
    for record in records:
        if not is_asleep(record.text) or record.end is None or record.end <= record.start:
            continue
        spans[(local_day(record.end, record.offset), record.source)].append(
            (record.start, record.end)
        )
    days: dict[int, float] = {}
    for (day, _), intervals in spans.items():
        days[day] = max(days.get(day, 0.0), union_seconds(intervals) / 3600.0)
    return days


def union_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length of the union of [start, end) intervals."""
    total = 0.0
    current_start = current_end = None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


@register
class DailyActivity(Recipe):
    """Per day: steps, distance, active energy, resting and mean heart rate, sleep."""

    name = "daily_activity"
    version = 1
    summary = "one row per day: steps, distance, active energy, heart rate and sleep"
    reads = {
        STEPS: ("start", "value", "source"),
        DISTANCE: ("start", "value", "unit", "source"),
        ENERGY: ("start", "value", "unit", "source"),
        HEART_RATE: ("start", "value"),
        RESTING: ("start", "value"),
        SLEEP: ("start", "end", "text", "source"),
    }
    fields = (
        "steps",
        "distance_km",
        "active_energy_kcal",
        "resting_heart_rate",
        "mean_heart_rate",
        "sleep_hours",
    )
    labels = {
        "next_day_active": Label(
            "next_day_active", "int64", 2, f"whether the next day has {ACTIVE_STEPS:,}+ steps"
        ),
        "active_day": Label(
            "active_day",
            "int64",
            2,
            f"whether the day has {ACTIVE_STEPS:,}+ steps (steps, distance, energy hidden)",
            hides=("steps", "distance_km", "active_energy_kcal"),
        ),
        "sleep_hours": Label(
            "sleep_hours", "float32", None, "hours asleep (sleep hidden)", hides=("sleep_hours",)
        ),
        "resting_heart_rate": Label(
            "resting_heart_rate",
            "float32",
            None,
            "resting heart rate in bpm (resting heart rate hidden)",
            hides=("resting_heart_rate",),
        ),
    }

    def compute(self, rows: Rows, label: str, fields: Sequence[str]) -> Features:
        """Every field per day, and ``label`` (NaN where the day has no answer)."""
        steps = daily_total(rows.get(STEPS, ()))
        columns = [
            steps,
            daily_total(rows.get(DISTANCE, ()), lambda r: to_km(r.value, r.unit)),
            daily_total(rows.get(ENERGY, ()), lambda r: to_kcal(r.value, r.unit)),
            daily_mean(rows.get(RESTING, ())),
            daily_mean(rows.get(HEART_RATE, ())),
            sleep_hours(rows.get(SLEEP, ())),
        ]
        scale = np.array([1e-4, 0.1, 1e-3, 0.01, 0.01, 0.1])
        days = sorted(set().union(*columns))
        x = np.array([[c.get(d, np.nan) for c in columns] for d in days]).reshape(-1, 6)
        x = np.where(np.isfinite(x), x * scale, 0.0)
        nan = float("nan")
        if label == "next_day_active":
            y = [float(steps[d + 1] >= ACTIVE_STEPS) if d + 1 in steps else nan for d in days]
        elif label == "active_day":
            y = [float(steps[d] >= ACTIVE_STEPS) if d in steps else nan for d in days]
        elif label == "sleep_hours":
            y = [columns[5].get(d, nan) for d in days]
        else:
            y = [columns[3].get(d, nan) for d in days]
        return Features(x, np.array(y, dtype=np.float64), [day_text(d) for d in days])
