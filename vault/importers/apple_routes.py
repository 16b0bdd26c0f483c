"""Workout routes of Apple Health exports -> ``location.points`` rows.

Since iOS 12 Apple writes one GPX 1.1 file per route (``workout-routes/*.gpx``): one track, one
segment, and per point ``<ele>``, ``<time>`` (UTC, ``Z``) and ``<extensions>`` with ``speed``,
``course``, ``hAcc``, ``vAcc``. Older exports kept the points inside export.xml as
``<WorkoutRoute><Location date= latitude= longitude= altitude= .../>``. A route file's prolog
is checked by ``xmlsafe`` (no entity declarations, no external DTD) before it is parsed.

Points are keyed like every ``location.points`` row (``location.point_row``: time and
position), so a fix that a GPX file or a Google export holds too is stored once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lxml import etree

from vault.importers.base import Row, Source
from vault.importers.location import decimal_position, point_row
from vault.importers.xmlsafe import UTF8_PARSER_OPTIONS, malformed, open_xml
from vault.timeparse import parse_apple, parse_iso8601

_TRKPT = ("{http://www.topografix.com/GPX/1/1}trkpt", "{http://www.topografix.com/GPX/1/0}trkpt")
# numeric children of a trackpoint (or of its <extensions>) that we keep in ``extra``
_NUMERIC = {"ele", "speed", "course", "hAcc", "vAcc"}
# inline <Location> attributes -> the same names as the GPX points use
_LOCATION_FIELDS = (
    ("ele", "altitude"),
    ("speed", "speed"),
    ("course", "course"),
    ("hAcc", "horizontalAccuracy"),
    ("vAcc", "verticalAccuracy"),
)


def route_rows(source: Source, owner: str | None, workout_start: str | None) -> Iterator[Row]:
    """Yield one ``location.points`` row per timed trackpoint of the route GPX ``source``.

    ``owner`` (the workout's sourceName) becomes each row's source; ``workout_start`` (ISO UTC)
    links the points to their workout in ``extra``. Points without a time are skipped.
    """
    with open_xml(source) as (stream, root):
        if root.rpartition(b":")[2] != b"gpx":
            raise source.refuse("not a GPX file")
        context = etree.iterparse(stream, events=("end",), tag=_TRKPT, **UTF8_PARSER_OPTIONS)
        point = None
        try:
            for _event, point in context:
                row = _trackpoint_row(point, owner, workout_start)
                if row is not None:
                    yield row
                point.clear()
                parent = point.getparent()
                # drop finished points so a long route keeps memory flat
                while point.getprevious() is not None:
                    del parent[0]
        except etree.XMLSyntaxError as exc:
            raise malformed(source, exc) from None
        except ValueError as exc:
            line = point.sourceline if point is not None else "?"
            raise source.refuse(f"bad trackpoint at line {line}: {exc}") from None


def location_row(get: Any, owner: str | None, workout_start: str | None) -> Row:
    """One inline ``<Location>`` of an old export (its ``get``) -> Row; ValueError when bad."""
    start, offset = parse_apple(get("date"))
    extra: dict[str, Any] = {"workout": workout_start}
    for name, attr in _LOCATION_FIELDS:
        if get(attr) is not None:
            extra[name] = float(get(attr))
    return point_row(
        (start, offset), decimal_position(get("latitude"), get("longitude")), owner, extra=extra
    )


def _trackpoint_row(
    point: etree._Element, owner: str | None, workout_start: str | None
) -> Row | None:
    """One trackpoint -> Row, or None when it has no time."""
    extra: dict[str, Any] = {"workout": workout_start}
    moment = None
    for child in point.iter():
        name = child.tag.rpartition("}")[2]
        if name == "time" and child.text:
            moment = parse_iso8601(child.text)
        elif name in _NUMERIC and child.text:
            extra[name] = float(child.text)
    if moment is None:
        return None
    return point_row(
        moment, decimal_position(point.get("lat"), point.get("lon")), owner, extra=extra
    )
