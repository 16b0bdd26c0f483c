"""GPX importer: 1.0 and 1.1, tracks/routes/waypoints, Garmin extensions, hostile input."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures import gpx as fx
from vault.errors import ImportRefused
from vault.importers.base import Row, Source
from vault.importers.gpx import GpxImporter


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def read(path: Path) -> list[Row]:
    return list(GpxImporter().rows(Source.from_path(path)))


def refusal(path: Path) -> str:
    with pytest.raises(ImportRefused) as refused:
        read(path)
    assert refused.value.file == str(path)
    return refused.value.problem


def test_gpx11_track_with_garmin_extensions(tmp_path):
    first, second, third = read(fx.write_gpx(tmp_path, "garmin_11.gpx"))

    assert first.dataset == "location.points"
    assert (first.start, first.offset) == (utc("2024-05-04T06:00:05"), 0)
    assert (first.lat, first.lon) == (48.1371234, 11.5754321)
    assert first.source == "Garmin Connect"
    assert first.extra == {
        "kind": "track",
        "altitude": 519.2,
        "air_temperature": 14.0,
        "heart_rate": 118,
        "cadence": 72,
        "track": "Morning Ride",
        "segment": 0,
    }
    assert first.key == "1714802405000/481371234/115754321"
    # +02:00 is converted to UTC and the offset kept
    assert (second.start, second.offset) == (utc("2024-05-04T06:00:10"), 120)
    # TrackPointExtension v2, under Garmin Connect's ns3 prefix, in a second segment
    assert third.extra["heart_rate"] == 140 and third.extra["speed"] == 5.5
    assert third.extra["segment"] == 1
    assert (third.lat, third.lon) == (-33.8688197, 151.2092955)


def test_gpx10_routes_and_waypoints_take_the_document_time(tmp_path):
    rows = read(fx.write_gpx(tmp_path, "plain_10.gpx"))

    kinds = [row.extra["kind"] for row in rows]
    assert kinds == ["waypoint", "route", "route", "track", "track"]
    waypoint, hut, summit, ascent, _ = rows
    assert waypoint.start == utc("2023-07-01T10:00:00")
    assert waypoint.extra == {
        "kind": "waypoint",
        "altitude": 2962,
        "name": "Zugspitze",
        "sym": "Summit",
        "time_from": "metadata",
    }
    assert (hut.extra["name"], hut.extra["route"]) == ("Hut", "Hut to summit")
    # same place, same borrowed time as the waypoint: still two records
    assert len({waypoint.key, hut.key, summit.key}) == 3
    assert ascent.start == utc("2023-07-01T08:00:00") and "time_from" not in ascent.extra
    assert ascent.extra["speed"] == 1.2 and ascent.extra["course"] == 45.0
    assert ascent.extra["satellites"] == 9 and ascent.extra["hdop"] == 0.9
    assert ascent.source == "GPSBabel - https://www.gpsbabel.org"


def test_apple_route_extensions_and_garmin_extensions_in_gpx10(tmp_path):
    path = tmp_path / "route.gpx"
    path.write_text(
        f'<gpx version="1.1" creator="Apple Health Export" xmlns="{fx.GPX11}"><trk><trkseg>'
        '<trkpt lat="1" lon="2"><ele>3.5</ele><time>2024-01-01T00:00:00Z</time><extensions>'
        "<speed>1.25</speed><course>90</course><hAcc>4.5</hAcc><vAcc>2</vAcc>"
        "</extensions></trkpt></trkseg></trk></gpx>"
    )
    old = tmp_path / "old.gpx"
    old.write_text(
        f'<gpx version="1.0" creator="x" xmlns="{fx.GPX10}" xmlns:t="{fx.TPX1}"><trk><trkseg>'
        '<trkpt lat="1" lon="2"><time>2024-01-01T00:00:00Z</time>'
        "<t:TrackPointExtension><t:hr>99</t:hr></t:TrackPointExtension></trkpt>"
        "</trkseg></trk></gpx>"
    )

    (apple,) = read(path)
    assert (apple.value, apple.unit) == (4.5, "m")
    assert apple.extra["speed"] == 1.25 and apple.extra["course"] == 90
    assert apple.extra["vertical_accuracy"] == 2 and apple.extra["altitude"] == 3.5
    (garmin,) = read(old)
    assert garmin.extra["heart_rate"] == 99


def test_keys_are_stable_across_imports(tmp_path):
    path = fx.write_gpx(tmp_path, "plain_10.gpx")

    assert [row.key for row in read(path)] == [row.key for row in read(path)]


def test_points_without_any_time_are_skipped_or_refused(tmp_path):
    assert "none of its 2 points has a time" in refusal(fx.write_gpx(tmp_path, "untimed.gpx"))

    mixed = tmp_path / "mixed.gpx"
    mixed.write_text(
        f'<gpx version="1.1" creator="x" xmlns="{fx.GPX11}"><wpt lat="1" lon="2"/>'
        '<trk><trkseg><trkpt lat="1" lon="2"><time>2024-01-01T00:00:00Z</time></trkpt>'
        "</trkseg></trk></gpx>"
    )
    importer = GpxImporter()
    rows = list(importer.rows(Source.from_path(mixed)))
    assert [row.extra["kind"] for row in rows] == ["track"]
    assert importer.skipped == 1


def test_gpx_without_namespace_is_refused(tmp_path):
    assert refusal(fx.write_gpx(tmp_path, "no_namespace.gpx")) == (
        "GPX without the GPX 1.0/1.1 namespace"
    )


def test_gpx_with_another_namespace_is_refused(tmp_path):
    path = tmp_path / "gpx2.gpx"
    path.write_text('<gpx xmlns="http://www.topografix.com/GPX/2/0" version="2.0"/>')

    assert refusal(path).startswith("GPX without the GPX 1.0/1.1 namespace (found ")


@pytest.mark.parametrize("name", ["billion_laughs.gpx", "external_entity.gpx"])
def test_entity_declarations_are_refused(tmp_path, name):
    assert "<!ENTITY" in refusal(fx.write_gpx(tmp_path, name))


def test_entity_declarations_behind_a_decoy_root_are_refused_too(tmp_path):
    # a '<gpx>' in a comment does not end the scan of the prolog
    path = tmp_path / "decoy.gpx"
    path.write_text(
        '<?xml version="1.0"?>\n<!-- <gpx> -->\n<!DOCTYPE gpx [<!ENTITY a "aaaa">]>\n'
        f'<gpx version="1.1" creator="&a;" xmlns="{fx.GPX11}"></gpx>\n'
    )

    assert "<!ENTITY" in refusal(path)


def test_malformed_xml_is_refused_naming_the_line(tmp_path):
    problem = refusal(fx.write_gpx(tmp_path, "mismatched.gpx"))

    assert problem.startswith("malformed XML at line 6:")
    assert "mismatch" in problem


def test_truncated_xml_is_refused_naming_the_line(tmp_path):
    path = fx.write_gpx(tmp_path, "truncated.gpx")

    problem = refusal(path)
    assert problem.startswith(f"malformed XML at line {path.read_text().count(chr(10)) + 1}:")


def test_impossible_coordinates_are_refused_naming_the_line(tmp_path):
    problem = refusal(fx.write_gpx(tmp_path, "bad_latitude.gpx"))

    assert problem == "line 4: <trkpt> latitude 95.0 out of range"


@pytest.mark.parametrize(
    ("point", "problem"),
    [
        ('<trkpt lat="north" lon="2"><time>2024-01-01T00:00:00Z</time></trkpt>', "lat is not"),
        ('<trkpt lon="2"><time>2024-01-01T00:00:00Z</time></trkpt>', "lat is not a number"),
        ('<trkpt lat="1" lon="2"><time>yesterday</time></trkpt>', "not an ISO 8601 time"),
        ('<trkpt lat="1" lon="2"><ele>nan</ele><time>2024-01-01T00:00:00Z</time></trkpt>', "ele"),
    ],
)
def test_bad_points_are_refused(tmp_path, point, problem):
    path = tmp_path / "bad.gpx"
    path.write_text(
        f'<gpx version="1.1" creator="x" xmlns="{fx.GPX11}">\n'
        f"<trk><trkseg>\n{point}\n</trkseg></trk></gpx>"
    )

    message = refusal(path)
    assert message.startswith("line 3: <trkpt>") and problem in message


def test_sniff_recognises_gpx_and_nothing_else(tmp_path):
    for name in ("garmin_11.gpx", "plain_10.gpx", "no_namespace.gpx", "billion_laughs.gpx"):
        source = Source.from_path(fx.write_gpx(tmp_path, name))
        assert GpxImporter.sniff(source, source.head()), name
    others = {
        "export.xml": b'<?xml version="1.0"?>\n<!DOCTYPE HealthData [<!ELEMENT HealthData ANY>]>\n'
        b'<HealthData locale="en_US"><WorkoutRoute><FileReference path="/workout-routes/r.gpx"/>'
        b"</WorkoutRoute></HealthData>",
        "kml.xml": b'<kml xmlns="http://www.opengis.net/kml/2.2"><Document><name>gpx</name></Document></kml>',
        "data.json": b'{"gpx": "<gpx version=\\"1.1\\">"}',
    }
    for name, data in others.items():
        source = Source.from_bytes(name, data)
        assert not GpxImporter.sniff(source, source.head()), name


def test_memory_stays_flat_on_a_long_track(tmp_path):
    path = fx.write_long_track(tmp_path / "long.gpx", 20_000)  # ~1.8 MB
    tracemalloc.start()
    try:
        count = sum(1 for _ in GpxImporter().rows(Source.from_path(path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == 20_000
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"
