"""Google Takeout Semantic Location History: the monthly ``2019_APRIL.json`` files.

``{"timelineObjects": [{"placeVisit": {...}} | {"activitySegment": {...}}]}``. A place visit
becomes a ``location.visits`` row (its ``childVisits`` too, marked with their parent's placeId);
an activity segment becomes a ``location.trips`` row. Points of a ``simplifiedRawPath`` carry
their own timestamps and also become ``location.points`` rows, sharing keys with the same fixes
in ``Records.json``. Waypoints have no times, so only their count is kept. Objects of other kinds
are skipped, so that new ones Google adds do not break imports.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from vault.importers.base import Importer, Row, Source, register
from vault.importers.google_geo import (
    as_dict,
    as_list,
    e7_position,
    first_key,
    import_lists,
    optional_number,
    place_label,
    takeout_time,
    trip_row,
    visit_row,
)
from vault.importers.location import RecordProblem, point_row
from vault.timeparse import EpochOffset

SOURCE = "Google Semantic Location History"
_E7 = ("latitudeE7", "longitudeE7")


def _span(obj: dict[str, Any]) -> tuple[EpochOffset, EpochOffset]:
    duration = as_dict(obj.get("duration"), "duration")
    if not duration:
        raise RecordProblem("missing duration")
    return takeout_time(duration, "startTimestamp"), takeout_time(duration, "endTimestamp")


def raw_path_rows(owner: dict[str, Any]) -> Iterator[Row]:
    """The timestamped points of ``owner["simplifiedRawPath"]`` as ``location.points`` rows."""
    path = as_dict(owner.get("simplifiedRawPath"), "simplifiedRawPath")
    for i, point in enumerate(as_list(path.get("points"), "simplifiedRawPath points")):
        try:
            point = as_dict(point, "point")
            position = e7_position(point, "latE7", "lngE7")
            if position is None:
                raise RecordProblem("missing latE7/lngE7")
            accuracy = optional_number(point.get("accuracyMeters"), "accuracyMeters")
            when = takeout_time(point, "timestamp")
        except RecordProblem as exc:
            raise RecordProblem(f"simplifiedRawPath point {i}: {exc}") from None
        yield point_row(when, position, SOURCE, accuracy, {"path": "simplifiedRawPath"})


def visit_rows(visit: dict[str, Any], parent: str | None = None) -> Iterator[Row]:
    """A ``placeVisit`` (and its child visits) as ``location.visits`` rows."""
    start, end = _span(visit)
    place = as_dict(visit.get("location"), "location")
    # Some visits name the place without coordinates; the visit centre stands in for them.
    position = e7_position(place, "latitudeE7", "longitudeE7") or e7_position(
        visit, "centerLatE7", "centerLngE7"
    )
    place_id = place.get("placeId")
    extra = {
        key: value
        for key, value in (
            ("address", place.get("address")),
            ("semanticType", place.get("semanticType")),
            ("confidence", visit.get("placeConfidence")),
            ("locationConfidence", place.get("locationConfidence")),
            ("visitConfidence", visit.get("visitConfidence")),
            ("child_of", parent),
        )
        if value is not None
    }
    label = place_label(place.get("name"), place.get("semanticType"), place_id)
    yield visit_row(start, end, position, place_id, label, SOURCE, extra)
    for i, child in enumerate(as_list(visit.get("childVisits"), "childVisits")):
        try:
            yield from visit_rows(as_dict(child, "child visit"), place_id)
        except RecordProblem as exc:
            raise RecordProblem(f"child visit {i}: {exc}") from None
    yield from raw_path_rows(visit)


def segment_rows(segment: dict[str, Any]) -> Iterator[Row]:
    """An ``activitySegment`` as a ``location.trips`` row plus its raw path points."""
    start, end = _span(segment)
    origin = e7_position(as_dict(segment.get("startLocation"), "startLocation"), *_E7)
    destination = e7_position(as_dict(segment.get("endLocation"), "endLocation"), *_E7)
    waypoints = as_dict(segment.get("waypointPath"), "waypointPath")
    distance = segment.get("distance", waypoints.get("distanceMeters"))
    guesses = {
        guess.get("activityType"): guess.get("probability")
        for guess in as_list(segment.get("activities"), "activities")
        if isinstance(guess, dict)
    }
    activity = segment.get("activityType") or next(iter(guesses), None)
    extra: dict[str, Any] = {"waypoints": len(as_list(waypoints.get("waypoints"), "waypoints"))}
    if segment.get("confidence") is not None:
        extra["confidence"] = segment["confidence"]
    if guesses:
        extra["activities"] = guesses
    distance_m = optional_number(distance, "distance")
    yield trip_row(start, end, origin, destination, activity, distance_m, SOURCE, extra)
    yield from raw_path_rows(segment)


def _convert(_prefix: str, obj: dict[str, Any]) -> Iterator[Row]:
    if "placeVisit" in obj:
        yield from visit_rows(as_dict(obj["placeVisit"], "placeVisit"))
    elif "activitySegment" in obj:
        yield from segment_rows(as_dict(obj["activitySegment"], "activitySegment"))


@register
class GoogleSemanticImporter(Importer):
    """Google Semantic Location History monthly files -> visits, trips and raw path points."""

    name: ClassVar[str] = "google_semantic"
    label: ClassVar[str] = "Google Semantic Location History (monthly JSON)"

    @classmethod
    def sniff(cls, source: Source, head: bytes) -> bool:
        """A JSON object whose first key is a "timelineObjects" list."""
        return first_key(head) == ("timelineObjects", "[")

    def rows(self, source: Source) -> Iterator[Row]:
        """Yield visits, trips and raw path points, in file order."""
        what = "a Semantic Location History file"
        return import_lists(source, ["timelineObjects"], _convert, what)
