"""Location points: one natural key for a fix, whether Apple Health, GPX or Google recorded it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.fixtures import apple_health as health_fx
from tests.fixtures import gpx as gpx_fx
from vault.core import Vault
from vault.importers.location import RecordProblem, decimal_position, point_row

# The first point of the fixture's Apple Watch route: 18:15:00 in Berlin, 17:15:00 UTC.
ROUTE_START = datetime(2024, 1, 3, 18, 15, tzinfo=timezone(timedelta(hours=1)))
ROUTE_POINTS = 3


def _apple_export_with_route(folder: Path) -> Path:
    (folder / "workout-routes").mkdir()
    (folder / health_fx.ROUTE_PATH.lstrip("/")).write_text(
        health_fx.route_gpx(ROUTE_START, ROUTE_POINTS)
    )
    return health_fx.write_export_xml(folder / "export.xml")


def _garmin_gpx(path: Path) -> Path:
    """The same fix written by another device: other digits, zone and extensions."""
    path.write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="Garmin Connect"'
        f' xmlns="{gpx_fx.GPX11}" xmlns:t="{gpx_fx.TPX1}"><trk><name>Ride</name><trkseg>\n'
        '<trkpt lat="52.5200080" lon="13.4049540"><ele>35</ele>'
        "<time>2024-01-03T18:15:00+01:00</time><extensions><t:TrackPointExtension>"
        "<t:hr>131</t:hr></t:TrackPointExtension></extensions></trkpt>\n"
        "</trkseg></trk></gpx>\n"
    )
    return path


def _google_records(path: Path) -> Path:
    fix = {
        "latitudeE7": 525200080,
        "longitudeE7": 134049540,
        "accuracy": 5,
        "timestamp": "2024-01-03T17:15:00.000Z",
    }
    path.write_text(json.dumps({"locations": [fix]}))
    return path


def test_one_fix_from_an_apple_route_a_gpx_and_google_is_one_record(
    vault: Vault, tmp_path: Path
) -> None:
    apple = vault.import_path(_apple_export_with_route(tmp_path)).to_dict()
    points = vault.stats("location.points")["records"]

    garmin = vault.import_path(_garmin_gpx(tmp_path / "ride.gpx")).to_dict()
    google = vault.import_path(_google_records(tmp_path / "Records.json")).to_dict()

    assert apple["datasets"]["location.points"]["added"] >= ROUTE_POINTS
    assert (garmin["format"], garmin["added"], garmin["skipped"]) == ("gpx", 0, 1)
    assert (google["format"], google["added"], google["skipped"]) == ("google_records", 0, 1)
    assert vault.stats("location.points")["records"] == points


def test_point_keys_name_the_millisecond_and_the_e7_position() -> None:
    when = (1704302100.0004, 60)

    row = point_row(when, (52.52000804, -13.40495396), "x", accuracy=4.0, extra={})

    assert row.key == "1704302100000/525200080/-134049540"
    assert (row.dataset, row.value, row.unit, row.offset, row.extra) == (
        "location.points",
        4.0,
        "m",
        60,
        None,
    )


@pytest.mark.parametrize(
    ("lat", "lon", "problem"),
    [
        (None, "2", "lat is not a number: None"),
        ("1", "east", "lon is not a number: 'east'"),
        ("nan", "2", "lat is not a number: 'nan'"),
        ("90.5", "2", "latitude 90.5 out of range"),
        ("1", "-180.01", "longitude -180.01 out of range"),
    ],
)
def test_decimal_positions_are_checked(lat: str | None, lon: str, problem: str) -> None:
    with pytest.raises(RecordProblem, match=problem):
        decimal_position(lat, lon)


def test_decimal_positions_on_the_globe_pass() -> None:
    assert decimal_position(" -90 ", "180.0") == (-90.0, 180.0)
