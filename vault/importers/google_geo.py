"""What the Google location formats share: coordinates, times, natural keys, list streaming.

Google writes the same kinds of facts four ways: E7 integers (``Records.json``, Semantic
Location History), degree strings (``"48.1371°, 11.5754°"`` in the Android ``Timeline.json``)
and ``geo:`` URIs (the iOS export). Everything here turns them into one shape, so that the same
point, visit or trip read from two exports gets the same natural key and is stored once.

Keys, per dataset:

- ``location.points``: ``<UTC milliseconds>/<latitude E7>/<longitude E7>``, as for GPX and
  Apple Health routes (see ``vault.importers.location``)
- ``location.visits``: ``<start ms>/<end ms>/<placeId>`` (or ``.../<lat E7>,<lon E7>``)
- ``location.trips``: ``<start ms>/<end ms>`` (one person makes one trip at a time)
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import ijson

from vault.importers.base import Row, Source
from vault.importers.jsonstream import open_json, parsing_json
from vault.importers.location import RecordProblem, checked_position, e7, iso_time, number
from vault.timeparse import EpochOffset, parse_epoch_ms

VISITS = "location.visits"
TRIPS = "location.trips"

_LAT_WRAP = 900_000_000
_LON_WRAP = 1_800_000_000
# "48.1371°, 11.5754°", "-33.9°,151.2°", "geo:48.137100,11.575400", "48.1,11.5"
_LATLNG = re.compile(
    r"^\s*(?:geo:)?\s*([-+]?\d+(?:\.\d+)?)\s*°?\s*,\s*([-+]?\d+(?:\.\d+)?)\s*°?\s*$"
)
_UNKNOWN_TYPES = ("", "UNKNOWN", "TYPE_UNKNOWN")
#: Deepest JSON nesting accepted; Google's exports stay below 10.
MAX_DEPTH = 128
_FIRST_KEY = re.compile(rb'^\s*\{\s*"([A-Za-z]+)"\s*:\s*([\[{])')


# --- values ---------------------------------------------------------------------------------


def optional_number(value: Any, what: str) -> float | None:
    """Like :func:`number`, but None (absent) stays None."""
    return None if value is None else number(value, what)


def e7_degrees(value: Any, what: str) -> float:
    """An E7 integer in degrees, undoing the int32 wrap of some old exports."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RecordProblem(f"{what} is not a number: {value!r}")
    try:
        scaled = int(value)
    except ValueError:
        raise RecordProblem(f"{what} is not a number: {value!r}") from None
    # Google's documented quirk: values past the range wrapped around as signed 32-bit ints.
    if scaled > (_LAT_WRAP if what.startswith("lat") else _LON_WRAP):
        scaled -= 2**32
    return scaled / 1e7


def e7_position(obj: dict[str, Any], lat_key: str, lon_key: str) -> tuple[float, float] | None:
    """The position held as E7 fields of ``obj``; None when both are absent."""
    lat_e7, lon_e7 = obj.get(lat_key), obj.get(lon_key)
    # The common case, checked cheaply: files hold millions of these.
    if (
        type(lat_e7) is int
        and type(lon_e7) is int
        and -_LAT_WRAP <= lat_e7 <= _LAT_WRAP
        and -_LON_WRAP <= lon_e7 <= _LON_WRAP
    ):
        return lat_e7 / 1e7, lon_e7 / 1e7
    if lat_e7 is None and lon_e7 is None:
        return None
    if lat_e7 is None or lon_e7 is None:
        raise RecordProblem(f"has {lat_key if lon_e7 is None else lon_key} without the other")
    return checked_position(e7_degrees(lat_e7, "latitude"), e7_degrees(lon_e7, "longitude"))


def parse_latlng(value: Any, what: str = "position") -> tuple[float, float]:
    """Parse ``"48.1°, 11.5°"``, ``"geo:48.1,11.5"`` or ``{"latLng": ...}`` into (lat, lon)."""
    if isinstance(value, dict):
        value = value.get("latLng", value.get("LatLng"))
    match = _LATLNG.match(value) if isinstance(value, str) else None
    if match is None:
        raise RecordProblem(f"{what} is not a coordinate pair: {value!r}")
    return checked_position(float(match.group(1)), float(match.group(2)))


def optional_latlng(value: Any, what: str) -> tuple[float, float] | None:
    """Like :func:`parse_latlng`, but an absent value gives None."""
    return None if value is None else parse_latlng(value, what)


def takeout_time(obj: dict[str, Any], name: str) -> EpochOffset:
    """``obj[name]`` (ISO 8601), or the ``obj[name + "Ms"]`` of older Takeout exports."""
    text = obj.get(name)
    if text is not None:
        return iso_time(text, name)
    millis = obj.get(name + "Ms")
    if millis is None:
        raise RecordProblem(f"missing {name}")
    try:
        return parse_epoch_ms(millis)
    except (TypeError, ValueError):
        raise RecordProblem(f"{name}Ms is not epoch milliseconds: {millis!r}") from None


# --- rows -----------------------------------------------------------------------------------


def visit_row(
    start: EpochOffset,
    end: EpochOffset,
    position: tuple[float, float] | None,
    place_id: str | None,
    text: str | None,
    source: str,
    extra: dict[str, Any] | None = None,
) -> Row:
    """A ``location.visits`` row keyed by its span and place (placeId, else position)."""
    if place_id:
        place = place_id
    elif position is not None:
        place = f"{e7(position[0])},{e7(position[1])}"
    else:
        raise RecordProblem("visit has neither a placeId nor a position")
    return Row(
        VISITS,
        start[0],
        end=end[0],
        offset=start[1],
        text=text or place_id,
        lat=position[0] if position else None,
        lon=position[1] if position else None,
        source=source,
        extra={"placeId": place_id, **(extra or {})} if place_id else extra or None,
        key=f"{round(start[0] * 1000)}/{round(end[0] * 1000)}/{place}",
    )


def trip_row(
    start: EpochOffset,
    end: EpochOffset,
    origin: tuple[float, float] | None,
    destination: tuple[float, float] | None,
    activity: str | None,
    distance: float | None,
    source: str,
    extra: dict[str, Any] | None = None,
) -> Row:
    """A ``location.trips`` row keyed by its span (distance in metres)."""
    more = dict(extra or {})
    if destination is not None:
        more["end_lat"], more["end_lon"] = destination
    return Row(
        TRIPS,
        start[0],
        end=end[0],
        offset=start[1],
        value=distance,
        unit="m" if distance is not None else None,
        text=activity,
        lat=origin[0] if origin else None,
        lon=origin[1] if origin else None,
        source=source,
        extra=more or None,
        key=f"{round(start[0] * 1000)}/{round(end[0] * 1000)}",
    )


def place_label(name: Any, semantic_type: Any, place_id: Any) -> str | None:
    """What a person calls a place: its name, else a known semantic type, else its placeId."""
    if isinstance(name, str) and name:
        return name
    if isinstance(semantic_type, str) and semantic_type.upper() not in _UNKNOWN_TYPES:
        return semantic_type
    return place_id if isinstance(place_id, str) else None


# --- sniffing and streaming -----------------------------------------------------------------


def first_key(head: bytes) -> tuple[str, str] | None:
    """The first key of a JSON object at the start of ``head`` and its value's opening bracket."""
    match = _FIRST_KEY.match(head.removeprefix(codecs.BOM_UTF8))
    return (match.group(1).decode(), match.group(2).decode()) if match else None


def top_level_kinds(
    source: Source, keys: Sequence[str], first_only: bool = False
) -> dict[str, str]:
    """The ijson event opening each of ``keys`` in the top-level object ("start_array", ...).

    Stops once all (or, with ``first_only``, any) of them are seen, so it is cheap when they
    come first. Refuses a document whose top level is not an object. JSON errors are left for
    the streaming pass, which reports them with their position.
    """
    found: dict[str, str] = {}
    wanted = 1 if first_only else len(keys)
    with open_json(source, MAX_DEPTH) as stream:
        events = ijson.parse(stream, use_float=True)
        try:
            _, event, _ = next(events)
            if event != "start_map":
                raise source.refuse("expected a JSON object at the top level")
            for prefix, event, _ in events:
                if prefix == "":
                    if event == "end_map":
                        break
                elif prefix in keys and prefix not in found and event != "map_key":
                    found[prefix] = event
                    if len(found) == wanted:
                        break
        except (ijson.JSONError, UnicodeDecodeError, StopIteration):
            pass
    return found


def import_lists(
    source: Source,
    keys: Sequence[str],
    convert: Callable[[str, Any], Iterable[Row]],
    what: str,
) -> Iterator[Row]:
    """Import the items of the top-level lists ``keys`` (in any order) through ``convert``.

    Refuses a document where a key holds something other than a list, or where none of them
    is present (``what`` names the expected file in that message).
    """

    def check(kinds: dict[str, str]) -> None:
        for key, kind in kinds.items():
            if kind != "start_array":
                raise source.refuse(f'"{key}" is not a list')

    check(top_level_kinds(source, keys, first_only=True))
    seen = False
    for row in import_items(source, [f"{key}.item" for key in keys], convert):
        seen = True
        yield row
    if not seen:  # empty, or not this format at all: only then pay for a full scan
        kinds = top_level_kinds(source, keys)
        check(kinds)
        if not kinds:
            names = " or ".join(f'"{key}"' for key in keys)
            raise source.refuse(f"no {names} list: not {what}")


def stream_items(source: Source, prefixes: Sequence[str]) -> Iterator[tuple[str, int, Any]]:
    """Yield (prefix, index, item) for the items under each ijson prefix in turn.

    Memory stays flat: one chunk and one item at a time. Each prefix is one pass over the file
    (two C-speed passes beat one pass feeding two parsers through coroutines). Invalid JSON is
    refused naming the byte and line.
    """
    for prefix in prefixes:
        with parsing_json(source, MAX_DEPTH) as stream:
            for index, item in enumerate(ijson.items(stream, prefix, use_float=True)):
                yield prefix, index, item


def import_items(
    source: Source,
    prefixes: Sequence[str],
    convert: Callable[[str, Any], Iterable[Row]],
) -> Iterator[Row]:
    """Stream the items under ``prefixes`` through ``convert``, refusing bad records by index."""
    for prefix, index, item in stream_items(source, prefixes):
        try:
            if not isinstance(item, dict):
                raise RecordProblem("is not a JSON object")
            rows = list(convert(prefix, item))
        except RecordProblem as exc:
            raise source.refuse(f"{_record_name(prefix, index)}: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            problem = f"unexpected shape ({type(exc).__name__}: {exc})"
            raise source.refuse(f"{_record_name(prefix, index)}: {problem}") from None
        yield from rows


def _record_name(prefix: str, index: int) -> str:
    listname = prefix.removesuffix(".item").removesuffix("item")
    return f"record {index} in {listname}" if listname else f"record {index}"


def as_dict(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object, an empty one when absent; RecordProblem otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordProblem(f"{what} is not a JSON object")
    return value


def as_list(value: Any, what: str) -> list[Any]:
    """``value`` when it is a JSON list, an empty one when absent; RecordProblem otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordProblem(f"{what} is not a list")
    return value
