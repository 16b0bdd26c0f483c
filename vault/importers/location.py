"""Location fixes from any source as ``location.points`` rows, with one natural key.

Google exports, GPX files and Apple Health workout routes all record the same kind of fact: a
device was at a position at an instant. :func:`point_row` keys it by
``<UTC milliseconds>/<latitude E7>/<longitude E7>``, so the same fix read from two sources is
one record; the source, accuracy and extras of the first import are the ones kept. The checks
of what makes a fix (numbers, ISO 8601 times, positions on the globe) raise
:class:`RecordProblem`, which each importer turns into a refusal naming the record or line.
"""

from __future__ import annotations

import math
from typing import Any

from vault.importers.base import Row
from vault.timeparse import EpochOffset, parse_iso8601

POINTS = "location.points"


class RecordProblem(ValueError):
    """A record that cannot be imported as it is; the message says what is wrong."""


def number(value: Any, what: str) -> float:
    """``value`` as a finite float; numbers written as strings count too."""
    if isinstance(value, bool):
        raise RecordProblem(f"{what} is not a number: {value!r}")
    try:
        result = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        result = math.nan
    if math.isfinite(result):
        return result
    raise RecordProblem(f"{what} is not a number: {value!r}")


def checked_position(lat: float, lon: float) -> tuple[float, float]:
    """``(lat, lon)`` unchanged when both lie on the globe; RecordProblem otherwise."""
    if not -90.0 <= lat <= 90.0:
        raise RecordProblem(f"latitude {lat} out of range")
    if not -180.0 <= lon <= 180.0:
        raise RecordProblem(f"longitude {lon} out of range")
    return lat, lon


def decimal_position(lat: str | None, lon: str | None) -> tuple[float, float]:
    """(lat, lon) from decimal-degree text (GPX and Apple attributes); RecordProblem if bad."""
    return checked_position(number(lat, "lat"), number(lon, "lon"))


def iso_time(value: Any, what: str) -> EpochOffset:
    """An ISO 8601 timestamp as (UTC epoch seconds, offset minutes)."""
    if not isinstance(value, str):
        raise RecordProblem(f"missing {what}" if value is None else f"{what} is not text")
    try:
        return parse_iso8601(value)
    except ValueError:
        raise RecordProblem(f"{what} is not an ISO 8601 time: {value!r}") from None


def e7(degrees: float) -> int:
    """Degrees as the integer E7 units that keys use (1e-7 degrees, about a centimetre)."""
    return round(degrees * 1e7)


def point_row(
    when: EpochOffset,
    position: tuple[float, float],
    source: str | None,
    accuracy: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Row:
    """A ``location.points`` row keyed by time and position (accuracy in metres)."""
    start, offset = when
    lat, lon = position
    return Row(
        POINTS,
        start,
        offset=offset,
        value=accuracy,
        unit="m" if accuracy is not None else None,
        lat=lat,
        lon=lon,
        source=source,
        extra=extra or None,
        key=f"{round(start * 1000)}/{e7(lat)}/{e7(lon)}",
    )
