"""``heart_rate_windows@1``: one-hour windows of heart rate and steps, in 12 bins of 5 minutes.

Features per window are ``[12, 2]`` (time-major, for a 1-D conv net): channel ``heart_rate`` is
the mean bpm in the bin / 100 (a bin without a sample takes its nearest earlier value, else the
nearest later one), channel ``steps`` is the steps in the bin / 100 (a step record is spread
evenly over its duration; of several sources, the one counting most in a bin wins). Windows
start on the UTC hour; a window is kept when at least half of its bins have a heart-rate sample.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from vault.recipes import Features, Label, Recipe, Record, Rows, register
from vault.timeparse import iso_utc

HEART_RATE = "health.heart_rate"
STEPS = "health.step_count"
BIN_SECONDS = 300
BINS = 12
WINDOW_SECONDS = BIN_SECONDS * BINS
MIN_FILLED_BINS = BINS // 2
LIGHT_STEPS, ACTIVE_STEPS = 100, 1_000


def heart_rate_bins(records: Iterable[Record]) -> dict[int, float]:
    """Global bin number (epoch // 300 s) -> mean heart rate of the samples in it."""
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    for record in records:
        if record.value is not None and math.isfinite(record.value):
            acc = sums[math.floor(record.start / BIN_SECONDS)]
            acc[0] += record.value
            acc[1] += 1
    return {b: total / count for b, (total, count) in sums.items()}


def spread_steps(records: Iterable[Record]) -> dict[int, float]:
    """Global bin number -> steps, spreading each record evenly over [start, end)."""
    per_source: dict[tuple[int, str | None], float] = defaultdict(float)
    for record in records:
        if record.value is None or not math.isfinite(record.value):
            continue
        start = record.start
        end = record.end if record.end is not None and record.end > start else start
        if end == start:
            per_source[(math.floor(start / BIN_SECONDS), record.source)] += record.value
            continue
        rate = record.value / (end - start)
        first, last = math.floor(start / BIN_SECONDS), math.ceil(end / BIN_SECONDS)
        for b in range(first, last):
            overlap = min(end, (b + 1) * BIN_SECONDS) - max(start, b * BIN_SECONDS)
            if overlap > 0:
                per_source[(b, record.source)] += rate * overlap
    bins: dict[int, float] = {}
    for (b, _), steps in per_source.items():
        bins[b] = max(bins.get(b, 0.0), steps)
    return bins


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """NaNs take the nearest earlier finite value, leading NaNs the first finite one."""
    out = np.array(values, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(out))
    if finite.size == 0:
        return np.zeros_like(out)
    out[: finite[0]] = out[finite[0]]
    for i in range(finite[0] + 1, len(out)):
        if not np.isfinite(out[i]):
            out[i] = out[i - 1]
    return out


def activity_level(steps: float) -> int:
    """0 resting (< 100 steps in the hour), 1 light (< 1,000), 2 active."""
    return 0 if steps < LIGHT_STEPS else 1 if steps < ACTIVE_STEPS else 2


@register
class HeartRateWindows(Recipe):
    """Hour windows of heart rate and steps."""

    name = "heart_rate_windows"
    version = 1
    summary = "one-hour windows of heart rate and steps, in 5-minute steps"
    reads = {HEART_RATE: ("start", "value"), STEPS: ("start", "end", "value", "source")}
    fields = ("heart_rate", "steps")
    labels = {
        "activity_level": Label(
            "activity_level",
            "int64",
            3,
            "resting, light or active hour by its steps (steps hidden)",
            hides=("steps",),
        ),
        "next_window_heart_rate": Label(
            "next_window_heart_rate", "float32", None, "mean heart rate (bpm) in the next hour"
        ),
    }

    def shape(self, fields: Sequence[str] = ()) -> list[int]:
        """``[12 bins, 2 channels]``."""
        return [BINS, len(self.fields)]

    def compute(self, rows: Rows, label: str, fields: Sequence[str]) -> Features:
        """Every kept window's bins, and ``label`` (NaN where there is no answer)."""
        heart = heart_rate_bins(rows.get(HEART_RATE, ()))
        steps = spread_steps(rows.get(STEPS, ()))
        windows = sorted({b // BINS for b in heart})
        kept: list[int] = []
        xs: list[np.ndarray] = []
        for w in windows:
            bins = range(w * BINS, (w + 1) * BINS)
            hr = np.array([heart.get(b, np.nan) for b in bins])
            if np.isfinite(hr).sum() < MIN_FILLED_BINS:
                continue
            st = np.array([steps.get(b, 0.0) for b in bins])
            xs.append(np.stack([fill_gaps(hr) / 100.0, st / 100.0], axis=1))
            kept.append(w)
        ys: list[float] = []
        for w in kept:
            if label == "activity_level":
                total = sum(steps.get(b, 0.0) for b in range(w * BINS, (w + 1) * BINS))
                ys.append(float(activity_level(total)))
            else:
                following = [heart[b] for b in range((w + 1) * BINS, (w + 2) * BINS) if b in heart]
                ys.append(float(np.mean(following)) if following else float("nan"))
        x = np.stack(xs) if xs else np.zeros((0, BINS, 2))
        keys = [iso_utc(w * WINDOW_SECONDS) or "" for w in kept]
        return Features(x, np.array(ys, dtype=np.float64), keys)
