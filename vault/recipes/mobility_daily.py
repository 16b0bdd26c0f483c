"""``mobility_daily@1``: one example per local day of movement, from ``location.points``.

Fields: ``distance_km`` (path length, km / 10), ``distinct_places`` (places where the person
stayed 10 minutes or more, / 10), ``radius_of_gyration_km`` (km / 10), ``top_place_hours``
(hours at the day's most visited place, / 24). A place is a cell of a grid about 280 m wide;
the time spent at a point is the time until the next point, capped at one hour so that a
phone that stopped recording does not make a stay of a whole night. Days with fewer than two
points are left out.

Radius of gyration as in González, Hidalgo and Barabási, "Understanding individual human
mobility patterns", Nature 453 (2008): the root mean square distance of the day's positions
from their centre of mass.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from vault.recipes import Features, Label, Recipe, Record, Rows, day_text, local_day, register

POINTS = "location.points"
EARTH_RADIUS_KM = 6371.0088
CELL_DEGREES = 0.0025
MAX_DWELL_SECONDS = 3600.0
MIN_STAY_SECONDS = 600.0


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray):
    """Great-circle distance(s) in km between points given in degrees."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def path_length_km(lats: np.ndarray, lons: np.ndarray) -> float:
    """Sum of the distances between consecutive points."""
    if len(lats) < 2:
        return 0.0
    return float(np.sum(haversine_km(lats[:-1], lons[:-1], lats[1:], lons[1:])))


def radius_of_gyration_km(lats: np.ndarray, lons: np.ndarray) -> float:
    """Root mean square distance (km) of the points from their centre of mass."""
    if len(lats) == 0:
        return 0.0
    lat0 = float(np.mean(lats))
    # a local equirectangular projection is exact enough at the scale of one day's travel;
    # the centre's longitude is the circular mean so that +-180 degrees do not average to 0
    lon0 = math.degrees(
        math.atan2(np.mean(np.sin(np.radians(lons))), np.mean(np.cos(np.radians(lons))))
    )
    dlon = (np.asarray(lons) - lon0 + 180.0) % 360.0 - 180.0
    x = np.radians(dlon) * math.cos(math.radians(lat0)) * EARTH_RADIUS_KM
    y = np.radians(np.asarray(lats) - lat0) * EARTH_RADIUS_KM
    return float(np.sqrt(np.mean(x**2 + y**2)))


def place_cell(lat: float, lon: float) -> tuple[int, int]:
    """The grid cell (about 280 m wide everywhere) holding a position."""
    row = math.floor(lat / CELL_DEGREES)
    width = CELL_DEGREES / max(math.cos(math.radians((row + 0.5) * CELL_DEGREES)), 0.01)
    return row, math.floor(lon / width)


def dwell_seconds(times: np.ndarray) -> np.ndarray:
    """Time at each point: until the next point, capped at one hour; the last point gets 0."""
    if len(times) == 0:
        return np.zeros(0)
    gaps = np.diff(np.asarray(times, dtype=np.float64), append=times[-1])
    return np.clip(gaps, 0.0, MAX_DWELL_SECONDS)


def places(lats: np.ndarray, lons: np.ndarray, times: np.ndarray) -> dict[tuple[int, int], float]:
    """Seconds spent per grid cell."""
    spent: dict[tuple[int, int], float] = defaultdict(float)
    for lat, lon, dwell in zip(lats, lons, dwell_seconds(times), strict=True):
        spent[place_cell(float(lat), float(lon))] += float(dwell)
    return spent


def day_features(points: Sequence[Record]) -> list[float]:
    """[distance km, distinct places, radius of gyration km, hours at the top place]."""
    ordered = sorted(points, key=lambda r: r.start)
    lats = np.array([r.lat for r in ordered], dtype=np.float64)
    lons = np.array([r.lon for r in ordered], dtype=np.float64)
    times = np.array([r.start for r in ordered], dtype=np.float64)
    spent = places(lats, lons, times)
    stays = sum(1 for seconds in spent.values() if seconds >= MIN_STAY_SECONDS)
    return [
        path_length_km(lats, lons),
        float(stays),
        radius_of_gyration_km(lats, lons),
        max(spent.values(), default=0.0) / 3600.0,
    ]


def is_weekend(day: int) -> bool:
    """Saturday or Sunday (day 0, 1970-01-01, was a Thursday)."""
    return (day + 3) % 7 >= 5


@register
class MobilityDaily(Recipe):
    """Per day: distance travelled, distinct places, radius of gyration, time at top place."""

    name = "mobility_daily"
    version = 1
    summary = "one row per day: distance travelled, places visited, how far you roam"
    reads = {POINTS: ("start", "lat", "lon")}
    fields = ("distance_km", "distinct_places", "radius_of_gyration_km", "top_place_hours")
    labels = {
        "weekend": Label("weekend", "int64", 2, "whether the day is a Saturday or Sunday"),
        "next_day_radius_km": Label(
            "next_day_radius_km", "float32", None, "the next day's radius of gyration in km"
        ),
    }

    def compute(self, rows: Rows, label: str, fields: Sequence[str]) -> Features:
        """Every field per day with two or more points, and ``label``."""
        by_day: dict[int, list[Record]] = defaultdict(list)
        for record in rows.get(POINTS, ()):
            if record.lat is not None and record.lon is not None:
                by_day[local_day(record.start, record.offset)].append(record)
        days = sorted(d for d, pts in by_day.items() if len(pts) >= 2)
        raw = {d: day_features(by_day[d]) for d in days}
        scale = np.array([0.1, 0.1, 0.1, 1 / 24])
        x = np.array([raw[d] for d in days], dtype=np.float64).reshape(-1, 4) * scale
        if label == "weekend":
            y = [float(is_weekend(d)) for d in days]
        else:
            y = [raw[d + 1][2] if d + 1 in raw else float("nan") for d in days]
        return Features(x, np.array(y, dtype=np.float64), [day_text(d) for d in days])
