"""Google Timeline exported on the device: Android's ``Timeline.json`` (and, via
:func:`segment_rows`, the same data as the iOS export writes it).

``{"semanticSegments": [...], "rawSignals": [...], "userLocationProfile": {...}}``, keys in any
order. A segment spans ``startTime``..``endTime`` and holds a ``visit`` (-> ``location.visits``),
an ``activity`` (-> ``location.trips``) or a ``timelinePath`` (-> ``location.points``); a raw
``position`` signal becomes a ``location.points`` row. Wi-Fi scans, activity records, timeline
memories and the location profile are not imported. Coordinates are degree strings
(``"48.1371°, 11.5754°"``, sometimes without the space); times carry their UTC offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from vault.importers.base import Importer, Row, Source, register
from vault.importers.google_geo import (
    as_dict,
    as_list,
    first_key,
    import_lists,
    optional_latlng,
    optional_number,
    parse_latlng,
    place_label,
    trip_row,
    visit_row,
)
from vault.importers.location import RecordProblem, iso_time, number, point_row
from vault.timeparse import EpochOffset

SOURCE = "Google Timeline (Android)"
_TOP_KEYS = ("semanticSegments", "rawSignals", "userLocationProfile")


def _time(segment: dict[str, Any], name: str) -> EpochOffset:
    start, offset = iso_time(segment.get(name), name)
    if offset is None:  # a time without a zone: the segment may still say where it was taken
        zone = segment.get(f"{name}TimezoneUtcOffsetMinutes")
        if zone is not None:
            offset = int(number(zone, f"{name}TimezoneUtcOffsetMinutes"))
            start -= offset * 60
    return start, offset


def _numbers(**values: Any) -> dict[str, float]:
    return {k: number(v, k) for k, v in values.items() if v is not None}


def _path_rows(segment: dict[str, Any], start: EpochOffset, source: str) -> Iterator[Row]:
    for i, point in enumerate(as_list(segment.get("timelinePath"), "timelinePath")):
        try:
            point = as_dict(point, "point")
            position = parse_latlng(point.get("point"), "point")
            if "time" in point:
                when = iso_time(point["time"], "time")
            else:  # iOS: minutes after the segment start
                minutes = number(
                    point.get("durationMinutesOffsetFromStartTime"),
                    "durationMinutesOffsetFromStartTime",
                )
                when = (start[0] + minutes * 60, start[1])
        except RecordProblem as exc:
            raise RecordProblem(f"timelinePath point {i}: {exc}") from None
        yield point_row(when, position, source, extra={"path": "timelinePath"})


def segment_rows(segment: dict[str, Any], source: str) -> Iterator[Row]:
    """The rows of one semantic segment, as Android or iOS writes it."""
    # iOS spells numbers as strings, the place id "placeID" and positions as geo: URIs; the
    # helpers used here take both spellings.
    start = _time(segment, "startTime")
    end = _time(segment, "endTime")
    if "visit" in segment:
        visit = as_dict(segment["visit"], "visit")
        place = as_dict(visit.get("topCandidate"), "topCandidate")
        place_id = place.get("placeId", place.get("placeID"))
        position = optional_latlng(place.get("placeLocation"), "placeLocation")
        extra: dict[str, Any] = _numbers(
            probability=visit.get("probability"),
            candidateProbability=place.get("probability"),
        )
        if visit.get("hierarchyLevel") is not None:
            extra["hierarchyLevel"] = int(number(visit["hierarchyLevel"], "hierarchyLevel"))
        if place.get("semanticType") is not None:
            extra["semanticType"] = place["semanticType"]
        label = place_label(None, place.get("semanticType"), place_id)
        yield visit_row(start, end, position, place_id, label, source, extra)
    elif "activity" in segment:
        activity = as_dict(segment["activity"], "activity")
        best = as_dict(activity.get("topCandidate"), "topCandidate")
        yield trip_row(
            start,
            end,
            optional_latlng(activity.get("start"), "start"),
            optional_latlng(activity.get("end"), "end"),
            best.get("type"),
            optional_number(activity.get("distanceMeters"), "distanceMeters"),
            source,
            _numbers(
                probability=activity.get("probability"),
                candidateProbability=best.get("probability"),
            ),
        )
    elif "timelinePath" in segment:
        yield from _path_rows(segment, start, source)


def position_rows(signal: dict[str, Any]) -> Iterator[Row]:
    """A raw ``position`` signal as a ``location.points`` row; other signals give none."""
    if "position" not in signal:
        return
    position = as_dict(signal["position"], "position")
    where = parse_latlng(position.get("LatLng", position.get("latLng")), "LatLng")
    when = iso_time(position.get("timestamp"), "timestamp")
    extra: dict[str, Any] = {"path": "rawSignals"}
    for key, out in (("altitudeMeters", "altitude"), ("speedMetersPerSecond", "velocity")):
        if position.get(key) is not None:
            extra[out] = number(position[key], key)
    if position.get("source") is not None:
        extra["provider"] = position["source"]
    accuracy = optional_number(position.get("accuracyMeters"), "accuracyMeters")
    yield point_row(when, where, SOURCE, accuracy, extra)


def _convert(prefix: str, item: dict[str, Any]) -> Iterator[Row]:
    if prefix == "rawSignals.item":
        return position_rows(item)
    return segment_rows(item, SOURCE)


@register
class GoogleTimelineImporter(Importer):
    """Android on-device ``Timeline.json`` -> visits, trips and points."""

    name: ClassVar[str] = "google_timeline"
    label: ClassVar[str] = "Google Timeline (Android Timeline.json)"

    @classmethod
    def sniff(cls, source: Source, head: bytes) -> bool:
        """A JSON object opening with one of Timeline.json's top-level keys."""
        key = first_key(head)
        return key is not None and key[0] in _TOP_KEYS

    def rows(self, source: Source) -> Iterator[Row]:
        """Yield the segments' rows, then the raw signals' (one streaming pass for each)."""
        lists = ["semanticSegments", "rawSignals"]
        return import_lists(source, lists, _convert, "an on-device Timeline.json")
