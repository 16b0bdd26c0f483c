"""Google location importers: Records.json, Semantic Location History, Timeline.json, iOS."""

from __future__ import annotations

import json
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures import google_location as fx
from vault.errors import ImportRefused
from vault.importers.archive import member_name, zip_sources
from vault.importers.base import Importer, Row, Source
from vault.importers.google_geo import RecordProblem, e7_degrees, parse_latlng
from vault.importers.google_ios import GoogleIosImporter
from vault.importers.google_records import GoogleRecordsImporter
from vault.importers.google_semantic import GoogleSemanticImporter
from vault.importers.google_timeline import GoogleTimelineImporter
from vault.importers.gpx import GpxImporter

GOOGLE = [GoogleRecordsImporter, GoogleSemanticImporter, GoogleTimelineImporter, GoogleIosImporter]


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def read(cls: type[Importer], path: Path) -> list[Row]:
    return list(cls().rows(Source.from_path(path)))


def by_dataset(rows: list[Row], dataset: str) -> list[Row]:
    return [row for row in rows if row.dataset == dataset]


def sniffers(source: Source) -> list[str]:
    head = source.head()
    return [cls.name for cls in [*GOOGLE, GpxImporter] if cls.sniff(source, head)]


# --- shared parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48.1371234°, 11.5754321°", (48.1371234, 11.5754321)),
        ("-33.8688197°,151.2092955°", (-33.8688197, 151.2092955)),
        ("geo:48.137100,11.575400", (48.1371, 11.5754)),
        ("geo:-0.5,-179.25", (-0.5, -179.25)),
        ({"latLng": "1.5°, 2.5°"}, (1.5, 2.5)),
    ],
)
def test_coordinate_strings_parse(text, expected):
    assert parse_latlng(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["north", "48.1°", "geo:91,0", "1,181", "", None, 48.1])
def test_bad_coordinate_strings_are_problems(text):
    with pytest.raises(RecordProblem):
        parse_latlng(text)


def test_e7_values_wrapped_past_int32_are_unwrapped():
    assert e7_degrees(-334489000 + 2**32, "latitude") == pytest.approx(-33.4489)
    assert e7_degrees(-706693000 + 2**32, "longitude") == pytest.approx(-70.6693)
    # in range: unchanged, whatever the sign
    assert e7_degrees(899999999, "latitude") == pytest.approx(89.9999999)
    assert e7_degrees(1799999999, "longitude") == pytest.approx(179.9999999)


# --- Records.json ---------------------------------------------------------------------------


def test_records_values(tmp_path):
    importer = GoogleRecordsImporter()
    rows = list(importer.rows(Source.from_path(fx.write_records(tmp_path))))

    assert [row.dataset for row in rows] == ["location.points"] * 3
    assert importer.skipped == 1  # the activity-only record
    home = rows[0]
    assert home.start == utc("2024-01-01T07:00:00")
    assert (home.lat, home.lon) == (48.1371234, 11.5754321)
    assert (home.value, home.unit) == (12.0, "m")
    assert home.source == "Google Takeout Records.json"
    assert home.extra == {
        "altitude": 519,
        "vertical_accuracy": 3,
        "provider": "WIFI",
        "device_tag": -1234567890,
        "platform": "ANDROID",
        "activity": {"STILL": 85, "ON_FOOT": 9},
    }
    assert home.key == "1704092400000/481371234/115754321"
    assert rows[1].extra == {
        "velocity": 14,
        "heading": 80,
        "provider": "GPS",
        "device_tag": -1234567890,
    }
    assert rows[2].start == utc("2024-01-01T07:50:00.250")
    assert rows[2].extra is None


def test_records_legacy_timestamp_ms_gives_the_same_records(tmp_path):
    modern = read(GoogleRecordsImporter, fx.write_records(tmp_path / "new"))
    legacy = read(GoogleRecordsImporter, fx.write_records(tmp_path / "old", legacy=True))

    assert [row.key for row in legacy] == [row.key for row in modern]
    assert [row.start for row in legacy] == [row.start for row in modern]
    assert all(row.offset is None for row in legacy)  # epoch ms carry no zone


def test_records_wrapped_e7_quirk(tmp_path):
    (row,) = read(GoogleRecordsImporter, fx.write_records_wrapped(tmp_path))

    assert (row.lat, row.lon) == pytest.approx(fx.SANTIAGO)
    assert row.start == utc("2014-01-01T00:00:00")


def test_records_with_bom_and_compact_json(tmp_path):
    path = tmp_path / "Records.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(fx.records(), separators=(",", ":")).encode())

    assert GoogleRecordsImporter.sniff(Source.from_path(path), Source.from_path(path).head())
    assert len(read(GoogleRecordsImporter, path)) == 3


def test_records_empty_list_and_unlocated_records_give_nothing(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text('{"locations": []}')
    unlocated = tmp_path / "unlocated.json"
    unlocated.write_text('{"locations": [{"timestampMs": "1", "activity": []}]}')

    assert read(GoogleRecordsImporter, empty) == []
    assert read(GoogleRecordsImporter, unlocated) == []


# --- Semantic Location History --------------------------------------------------------------


def test_semantic_values(tmp_path):
    rows = read(GoogleSemanticImporter, fx.write_semantic(tmp_path))

    visit, child = by_dataset(rows, "location.visits")
    assert (visit.start, visit.end) == (utc("2024-01-01T07:00:00"), utc("2024-01-01T07:30:00"))
    assert visit.text == "Marienplatz"
    assert (visit.lat, visit.lon) == (48.1371234, 11.5754321)
    assert visit.extra["placeId"] == fx.HOME_PLACE
    assert visit.extra["address"].startswith("Marienplatz 1")
    assert visit.extra["confidence"] == "HIGH_CONFIDENCE"
    assert visit.source == "Google Semantic Location History"
    assert (child.text, child.extra["child_of"]) == ("Café", fx.HOME_PLACE)

    (trip,) = by_dataset(rows, "location.trips")
    assert (trip.text, trip.value, trip.unit) == ("IN_PASSENGER_VEHICLE", 2300.0, "m")
    assert (trip.lat, trip.lon) == fx.HOME
    assert (trip.extra["end_lat"], trip.extra["end_lon"]) == fx.OFFICE
    assert trip.extra["waypoints"] == 3
    assert trip.extra["activities"] == {"IN_PASSENGER_VEHICLE": 91.2, "WALKING": 4.1}

    (raw,) = by_dataset(rows, "location.points")
    assert (raw.start, raw.value) == (utc("2024-01-01T07:40:00"), 5.0)


def test_semantic_legacy_ms_gives_the_same_records(tmp_path):
    modern = read(GoogleSemanticImporter, fx.write_semantic(tmp_path / "new"))
    legacy = read(GoogleSemanticImporter, fx.write_semantic(tmp_path / "old", legacy=True))

    assert [(r.dataset, r.key, r.start, r.end) for r in legacy] == [
        (r.dataset, r.key, r.start, r.end) for r in modern
    ]


def test_semantic_visit_without_coordinates_keeps_its_place(tmp_path):
    data = fx.semantic()
    place = data["timelineObjects"][0]["placeVisit"]["location"]
    del place["latitudeE7"], place["longitudeE7"]
    path = tmp_path / "2024_JANUARY.json"
    path.write_text(json.dumps(data))

    visit = by_dataset(read(GoogleSemanticImporter, path), "location.visits")[0]
    assert (visit.lat, visit.lon, visit.extra["placeId"]) == (None, None, fx.HOME_PLACE)


# --- Android Timeline.json ------------------------------------------------------------------


def test_timeline_values_in_utc_with_offsets_kept(tmp_path):
    rows = read(GoogleTimelineImporter, fx.write_timeline(tmp_path))

    (visit,) = by_dataset(rows, "location.visits")
    assert (visit.start, visit.end) == (utc("2024-01-01T07:00:00"), utc("2024-01-01T07:30:00"))
    assert visit.offset == 60
    assert visit.text == "HOME"
    assert visit.extra == {
        "placeId": fx.HOME_PLACE,
        "probability": 0.85,
        "candidateProbability": 0.9,
        "hierarchyLevel": 0,
        "semanticType": "HOME",
    }
    (trip,) = by_dataset(rows, "location.trips")
    assert (trip.text, trip.value) == ("IN_PASSENGER_VEHICLE", 2300.5)
    assert (trip.extra["end_lat"], trip.extra["end_lon"]) == fx.OFFICE  # "48.15°,11.6°"

    path_a, path_b, raw = by_dataset(rows, "location.points")
    assert (path_a.lat, path_a.lon, path_a.start) == (48.141, 11.585, utc("2024-01-01T07:35:00"))
    assert (path_b.lat, path_b.lon) == (-33.8688197, 151.2092955)
    assert raw.start == utc("2024-01-01T07:00:00") and raw.offset == 60
    assert (raw.value, raw.unit) == (12.0, "m")
    assert raw.extra == {
        "path": "rawSignals",
        "altitude": 519.4,
        "velocity": 0.0,
        "provider": "WIFI",
    }
    assert raw.source == "Google Timeline (Android)"


def test_timeline_key_order_does_not_matter(tmp_path):
    first = read(GoogleTimelineImporter, fx.write_timeline(tmp_path / "a"))
    raw_first = read(GoogleTimelineImporter, fx.write_timeline(tmp_path / "b", raw_first=True))

    assert sorted(r.key for r in raw_first) == sorted(r.key for r in first)


def test_timeline_zone_from_offset_minutes_when_the_time_has_none(tmp_path):
    data = fx.timeline()
    segment = data["semanticSegments"][0]
    segment["startTime"], segment["endTime"] = "2024-01-01T08:00:00.000", "2024-01-01T08:30:00"
    path = tmp_path / "Timeline.json"
    path.write_text(json.dumps(data))

    visit = by_dataset(read(GoogleTimelineImporter, path), "location.visits")[0]
    assert (visit.start, visit.offset) == (utc("2024-01-01T07:00:00"), 60)
    assert visit.end == utc("2024-01-01T07:30:00")


# --- iOS ------------------------------------------------------------------------------------


def test_ios_values_from_strings(tmp_path):
    rows = read(GoogleIosImporter, fx.write_ios(tmp_path))

    (visit,) = by_dataset(rows, "location.visits")
    assert (visit.start, visit.offset) == (utc("2024-01-01T07:00:00"), 60)
    assert (visit.lat, visit.lon) == (48.137123, 11.575432)
    assert visit.extra["probability"] == 0.85 and visit.extra["hierarchyLevel"] == 0
    assert visit.text == "Home" and visit.source == "Google Timeline (iOS)"
    (trip,) = by_dataset(rows, "location.trips")
    assert (trip.text, trip.value, trip.unit) == ("in passenger vehicle", 2300.5, "m")
    first, second = by_dataset(rows, "location.points")
    assert first.start == utc("2024-01-01T07:35:00")  # startTime + 35 minutes
    assert second.start == utc("2024-01-01T07:36:00")
    assert (second.lat, second.lon) == (-33.86882, 151.209296)


# --- one fact, one key ----------------------------------------------------------------------


def test_the_same_fact_gets_the_same_key_in_every_export(tmp_path):
    records = read(GoogleRecordsImporter, fx.write_records(tmp_path))
    semantic = read(GoogleSemanticImporter, fx.write_semantic(tmp_path))
    android = read(GoogleTimelineImporter, fx.write_timeline(tmp_path))
    ios = read(GoogleIosImporter, fx.write_ios(tmp_path))

    home_fix = records[0].key
    assert home_fix in {row.key for row in by_dataset(android, "location.points")}
    road_fix = records[1].key
    assert road_fix in {row.key for row in by_dataset(semantic, "location.points")}
    visit_keys = {by_dataset(rows, "location.visits")[0].key for rows in (semantic, android, ios)}
    trip_keys = {by_dataset(rows, "location.trips")[0].key for rows in (semantic, android, ios)}
    assert len(visit_keys) == 1 and len(trip_keys) == 1

    everything = records + semantic + android + ios
    distinct = {(row.dataset, row.key) for row in everything}
    # Points: 3 fixes (2 seen again by semantic/Android), 2 Android path points, and iOS's
    # two: one the same as Android's, one written at a lower precision (geo: has 6 decimals).
    assert len(by_dataset(everything, "location.points")) == 9
    assert sum(1 for d, _ in distinct if d == "location.points") == 6
    assert sum(1 for d, _ in distinct if d == "location.visits") == 2
    assert sum(1 for d, _ in distinct if d == "location.trips") == 1


def test_keys_are_stable_across_imports(tmp_path):
    path = fx.write_timeline(tmp_path)

    assert [r.key for r in read(GoogleTimelineImporter, path)] == [
        r.key for r in read(GoogleTimelineImporter, path)
    ]


# --- sniffing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (fx.write_records, "google_records"),
        (lambda d: fx.write_records(d, legacy=True), "google_records"),
        (fx.write_semantic, "google_semantic"),
        (fx.write_timeline, "google_timeline"),
        (lambda d: fx.write_timeline(d, raw_first=True), "google_timeline"),
        (fx.write_ios, "google_ios"),
    ],
)
def test_each_format_is_recognised_by_its_importer_only(tmp_path, write, expected):
    assert sniffers(Source.from_path(write(tmp_path))) == [expected]


def test_sniffs_leave_other_json_alone(tmp_path):
    for name, path in fx.write_foreign(tmp_path).items():
        assert sniffers(Source.from_path(path)) == [], name


def test_sniffs_read_compact_json_too(tmp_path):
    for name, obj in [("r.json", fx.records()), ("t.json", fx.timeline()), ("i.json", fx.ios())]:
        path = tmp_path / name
        path.write_text(json.dumps(obj, separators=(",", ":")))
        assert len(sniffers(Source.from_path(path))) == 1, name


def test_takeout_zip_members_are_recognised_and_read(tmp_path):
    sources = {member_name(s): s for s in zip_sources(fx.write_takeout_zip(tmp_path))}
    base = "Takeout/Location History (Timeline)"

    claimed = {name: sniffers(source) for name, source in sources.items()}
    assert claimed == {
        "Takeout/archive_browser.html": [],
        f"{base}/Records.json": ["google_records"],
        f"{base}/Semantic Location History/2024/2024_JANUARY.json": ["google_semantic"],
        f"{base}/Settings.json": [],
        f"{base}/Timeline Edits.json": [],
    }
    records = list(GoogleRecordsImporter().rows(sources[f"{base}/Records.json"]))
    assert len(records) == 3
    month = sources[f"{base}/Semantic Location History/2024/2024_JANUARY.json"]
    assert len(list(GoogleSemanticImporter().rows(month))) == 4


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "problem"),
    [
        ("truncated.json", GoogleRecordsImporter, "ends too early"),
        ("syntax.json", GoogleRecordsImporter, "(line 10)"),
        ("not_a_list.json", GoogleRecordsImporter, '"locations" is not a list'),
        ("missing_time.json", GoogleRecordsImporter, "record 2 in locations: missing timestamp"),
        (
            "latitude_range.json",
            GoogleRecordsImporter,
            "record 3 in locations: latitude -95.0 out of range",
        ),
        (
            "half_position.json",
            GoogleRecordsImporter,
            "record 0 in locations: has latitudeE7 without",
        ),
        ("top_level_list.json", GoogleRecordsImporter, "expected a JSON object"),
        ("not_utf8.json", GoogleRecordsImporter, "invalid JSON near byte 64"),
        (
            "semantic_no_duration.json",
            GoogleSemanticImporter,
            "record 1 in timelineObjects: missing duration",
        ),
        (
            "timeline_bad_latlng.json",
            GoogleTimelineImporter,
            "record 0 in semanticSegments: placeLocation",
        ),
        ("ios_bad_number.json", GoogleIosImporter, "record 1: distanceMeters is not a number"),
        ("semantic_no_duration.json", GoogleRecordsImporter, 'no "locations" list'),
        ("ios_bad_number.json", GoogleTimelineImporter, "expected a JSON object"),
        ("missing_time.json", GoogleIosImporter, "expected a JSON list"),
    ],
)
def test_bad_input_is_refused_naming_file_and_place(tmp_path, name, cls, problem):
    path = fx.write_broken(tmp_path)[name]

    with pytest.raises(ImportRefused) as refused:
        read(cls, path)
    assert refused.value.file == str(path)
    assert problem in refused.value.problem


def test_syntax_error_deep_in_a_big_file_is_placed_exactly(tmp_path):
    path = fx.write_records_bulk(tmp_path / "Records.json", 2000)  # ~750 KB, many chunks
    data = bytearray(path.read_bytes())
    at = data.index(b'"accuracy"', 500_000)
    data[at : at + 1] = b"?"  # the key loses its opening quote
    path.write_bytes(bytes(data))

    with pytest.raises(ImportRefused) as refused:
        read(GoogleRecordsImporter, path)
    message = refused.value.problem
    byte = int(message.split("near byte ")[1].split(" ")[0])
    line = int(message.split("(line ")[1].split(")")[0])
    assert at <= byte <= at + 2
    assert line == data.count(b"\n", 0, at) + 1


def test_deep_nesting_is_refused_before_it_costs_memory(tmp_path):
    path = tmp_path / "Records.json"
    path.write_bytes(b'{"locations": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}")
    tracemalloc.start()
    try:
        with pytest.raises(ImportRefused) as refused:
            read(GoogleRecordsImporter, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert "nested more than 128 levels" in refused.value.problem
    assert peak < 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("cls", "opening", "closing"),
    [
        (GoogleRecordsImporter, b'{"locations": [', b"]}"),
        (GoogleSemanticImporter, b'{"timelineObjects": [', b"]}"),
        (GoogleTimelineImporter, b'{"semanticSegments": [', b"]}"),
        (GoogleTimelineImporter, b'{"rawSignals": [{"position": ', b"}]}"),
        (GoogleIosImporter, b'[{"startTime": ', b"}]"),
    ],
)
def test_deep_nesting_is_refused_quickly_in_every_format(tmp_path, cls, opening, closing):
    # ijson's memory grows with the square of the depth: 20,000 levels would take ~1 GB
    path = tmp_path / "deep.json"
    path.write_bytes(opening + b'[{"a": ' * 10_000 + b"1" + b"}]" * 10_000 + closing)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImportRefused) as refused:
            read(cls, path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert refused.value.file == str(path)
    assert "JSON nested more than 128 levels deep near byte 0" in refused.value.problem
    assert elapsed < 2
    assert peak < 4 * 1024 * 1024


def test_brackets_and_escaped_quotes_inside_strings_do_not_count_as_nesting(tmp_path):
    # a name full of brackets and escapes, placed across the 64 KiB chunk boundary
    data = fx.records()
    data["locations"][0]["padding"] = "x" * 65_400
    data["locations"][0]["name"] = "[" * 300 + '\\"{' * 300 + "\\" * 7
    path = tmp_path / "Records.json"
    path.write_text(json.dumps(data))

    assert len(read(GoogleRecordsImporter, path)) == 3


def test_nothing_is_yielded_past_a_refusal(tmp_path):
    path = fx.write_broken(tmp_path)["missing_time.json"]
    rows: list[Row] = []

    with pytest.raises(ImportRefused):
        rows.extend(GoogleRecordsImporter().rows(Source.from_path(path)))
    assert len(rows) == 1  # record 0 only (record 1 has no position); the writer rolls back


def test_memory_stays_flat_on_a_big_records_file(tmp_path):
    path = fx.write_records_bulk(tmp_path / "Records.json", 30_000)  # ~11 MB
    tracemalloc.start()
    try:
        count = sum(1 for _ in GoogleRecordsImporter().rows(Source.from_path(path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == 30_000
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for a {path.stat().st_size} byte file"
