"""What the elements of an Apple Health export mean: Health types as dataset names, and rows
for the elements read whole (``Correlation``, ``Workout``, ``ActivitySummary``).

``apple_health`` streams the export and hands each such element here once it has ended; the
millions of ``Record`` elements it turns into rows itself, on its hot path.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from lxml import etree

from vault.importers.apple_routes import location_row
from vault.importers.base import Row
from vault.timeparse import iso_utc, parse_apple, parse_iso8601

_TYPE_PREFIX = re.compile(r"^HK(?:[A-Za-z]*?TypeIdentifier|DataType)")
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_NAME = re.compile(r"[^a-z0-9]+")
_MINUTES_PER = {"min": 1.0, "s": 1 / 60, "sec": 1 / 60, "ms": 1 / 60000, "hr": 60.0, "h": 60.0}


def snake_case(identifier: str) -> str:
    """'HKQuantityTypeIdentifierVO2Max' -> 'vo2_max' (any HK…TypeIdentifier prefix dropped)."""
    bare = _TYPE_PREFIX.sub("", identifier) or identifier
    return _NOT_NAME.sub("_", _WORD_BREAK.sub("_", bare).lower()).strip("_") or "unknown"


@lru_cache(maxsize=4096)
def dataset_for(identifier: str) -> str:
    """'HKQuantityTypeIdentifierStepCount' -> 'health.step_count'."""
    return "health." + snake_case(identifier)


def record_kind(typ: str | None) -> tuple[str, bool]:
    """(dataset, whether the value is a category name) for a Record type."""
    if not typ:
        raise ValueError("missing type")
    return dataset_for(typ), typ.startswith("HKCategoryTypeIdentifier")


def sample_extra(get: Any) -> dict[str, Any]:
    """The extra fields every sample may carry: device, source version, creation date."""
    pairs = (("device", "device"), ("source_version", "sourceVersion"), ("created", "creationDate"))
    return {name: get(attr) for name, attr in pairs if get(attr) is not None}


def correlation_row(elem: etree._Element) -> Row:
    """A blood pressure or food correlation, with its children's types and values in extra."""
    get = elem.get
    typ = get("type")
    dataset, _ = record_kind(typ)
    start, offset = parse_apple(get("startDate"))
    end = parse_apple(get("endDate"))[0]
    extra = sample_extra(get)
    members, metadata = [], {}
    for child in elem:
        # child records repeat at top level and become rows there; here they only describe
        if child.tag == "Record":
            kind, value = snake_case(child.get("type") or ""), number_or_text(child.get("value"))
            members.append({"type": kind, "value": value, "unit": child.get("unit")})
        elif child.tag == "MetadataEntry":
            metadata[child.get("key") or ""] = child.get("value")
    extra["records"] = members
    if metadata:
        extra["metadata"] = metadata
    values = ",".join(sorted(f"{m['type']}={m['value']}" for m in members))
    who = get("sourceName")
    key = f"{typ}|{who}|{int(start)}|{int(end)}|{values}"
    return Row(dataset, start, end, offset, source=who, extra=extra, key=key)


def workout_rows(
    elem: etree._Element, routes: list[tuple[str, str | None, str | None]]
) -> list[Row]:
    """The workout row and its inline route points; route files are added to ``routes``."""
    get = elem.get
    start, offset = parse_apple(get("startDate"))
    end = parse_apple(get("endDate"))[0]
    activity = (get("workoutActivityType") or "").removeprefix("HKWorkoutActivityType")
    minutes = _minutes(get("duration"), get("durationUnit"))
    if minutes is None:
        minutes = (end - start) / 60
    extra = sample_extra(get)
    for attr, name in (("totalDistance", "distance"), ("totalEnergyBurned", "energy")):
        if get(attr) is not None:
            extra[name] = number_or_text(get(attr))
            extra[f"{name}_unit"] = get(attr + "Unit")
    paths, locations = _workout_parts(elem, extra)
    who = get("sourceName")
    started = iso_utc(start)
    rows = [
        Row(
            dataset="health.workouts",
            start=start,
            end=end,
            offset=offset,
            value=minutes,
            text=activity or None,
            unit="min",
            source=who,
            extra=extra,
            key=f"{activity}|{who}|{int(start)}|{int(end)}|{get('duration')}",
        )
    ]
    # exports before iOS 12 kept the points inline as <Location> elements
    rows += [location_row(point.get, who, started) for point in locations]
    routes += [(path, who, started) for path in paths]
    return rows


def _workout_parts(
    elem: etree._Element, extra: dict[str, Any]
) -> tuple[list[str], list[etree._Element]]:
    """Put statistics, events, metadata and activities into ``extra``; return route parts."""
    statistics, events, metadata, activities, routes, locations = {}, [], {}, [], [], []
    for child in elem:
        tag, get = child.tag, child.get
        if tag == "WorkoutStatistics":
            stat = {
                k: number_or_text(get(k))
                for k in ("sum", "average", "minimum", "maximum")
                if get(k)
            }
            statistics[snake_case(get("type") or "")] = {**stat, "unit": get("unit")}
        elif tag == "WorkoutEvent":
            event = {"type": (get("type") or "").removeprefix("HKWorkoutEventType")}
            event["date"] = iso_utc(parse_apple(get("date"))[0])
            if get("duration") is not None:
                event["minutes"] = _minutes(get("duration"), get("durationUnit"))
            events.append(event)
        elif tag == "MetadataEntry":
            metadata[get("key") or ""] = get("value")
        elif tag == "WorkoutRoute":
            routes += [r.get("path") for r in child if r.tag == "FileReference" and r.get("path")]
            locations += [r for r in child if r.tag == "Location"]
        elif tag == "WorkoutActivity":  # iOS 16+: one per part of a multisport workout
            activity: dict[str, Any] = {"start": iso_utc(parse_apple(get("startDate"))[0])}
            activity["minutes"] = _minutes(get("duration"), get("durationUnit"))
            more_routes, more_locations = _workout_parts(child, activity)
            routes += more_routes
            locations += more_locations
            activities.append(activity)
    for name, part in (
        ("statistics", statistics),
        ("events", events),
        ("metadata", metadata),
        ("activities", activities),
    ):
        if part:
            extra[name] = part
    return routes, locations


def activity_summary_row(elem: etree._Element) -> Row:
    """One day of Activity rings; the day is a calendar date, stored as 00:00 UTC."""
    date = elem.get("dateComponents")
    if date is None or len(date) != 10:
        raise ValueError(f"dateComponents is not a date: {date!r}")
    start = parse_iso8601(date)[0]
    extra = {
        snake_case(name): number_or_text(text)
        for name, text in elem.attrib.items()
        if name not in ("dateComponents", "activeEnergyBurned", "activeEnergyBurnedUnit")
    }
    energy = number_or_text(elem.get("activeEnergyBurned"))
    value = energy if isinstance(energy, float) else None
    unit = elem.get("activeEnergyBurnedUnit")
    return Row("health.activity_summaries", start, value=value, unit=unit, extra=extra, key=date)


def number_or_text(text: str | None) -> float | str | None:
    """A float where ``text`` is a finite number, else the text itself."""
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number - number == 0.0 else text


def _minutes(duration: str | None, unit: str | None) -> float | None:
    """A duration in minutes, or None when missing or in a unit we do not know."""
    factor = _MINUTES_PER.get(unit or "min")
    number = number_or_text(duration)
    return number * factor if isinstance(number, float) and factor else None
