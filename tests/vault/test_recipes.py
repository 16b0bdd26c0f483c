"""The feature-recipe catalogue: registry rules and each recipe's math."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vault.recipes import (
    RecipeRefused,
    Record,
    catalogue,
    get_recipe,
    local_day,
    recipe_names,
)
from vault.recipes import daily_activity as da
from vault.recipes import heart_rate_windows as hw
from vault.recipes import mobility_daily as mob
from vault.recipes import preferences_vector as pv

DAY = 86_400
D0 = 19_723 * DAY  # 2024-01-01T00:00:00Z, a Monday


# ------------------------------------------------------------------------------ registry


def test_catalogue_has_the_four_recipes_with_versions():
    assert recipe_names() == [
        "daily_activity",
        "heart_rate_windows",
        "mobility_daily",
        "preferences_vector",
    ]
    assert get_recipe("daily_activity") is get_recipe("daily_activity@1")
    assert all(entry["version"] >= 1 for entry in catalogue())


@pytest.mark.parametrize("name", ["no_such_recipe", "daily_activity@9", "daily_activity@x"])
def test_unknown_recipe_or_version_is_refused(name):
    with pytest.raises(RecipeRefused):
        get_recipe(name)


def test_a_request_may_only_name_a_label_and_datasets_of_its_recipe():
    recipe = get_recipe("daily_activity")
    recipe.check(["health.step_count"], ["steps"], "next_day_active")
    with pytest.raises(RecipeRefused, match="no label"):
        recipe.check(["health.step_count"], [], "income")
    with pytest.raises(RecipeRefused, match="does not read dataset"):
        recipe.check(["location.points"], [], "next_day_active")
    with pytest.raises(RecipeRefused, match="no field"):
        recipe.check(["health.step_count"], ["home_address"], "next_day_active")


def test_local_day_uses_the_records_own_offset():
    # 23:30 UTC on Jan 1 is already Jan 2 in UTC+1
    assert local_day(D0 + 23.5 * 3600, 60) == local_day(D0, 0) + 1
    assert local_day(D0 + 23.5 * 3600, None) == local_day(D0, 0)


# -------------------------------------------------------------------------- daily_activity


def test_unit_conversions():
    assert da.to_km(1500, "m") == pytest.approx(1.5)
    assert da.to_km(1, "mi") == pytest.approx(1.609344)
    assert da.to_kcal(1, "kJ") == pytest.approx(0.239006)
    assert math.isnan(da.to_km(1, "furlong"))


def test_daily_total_takes_the_largest_source_not_the_sum():
    records = [
        Record(D0 + 3600, value=3000, source="iPhone"),
        Record(D0 + 7200, value=2000, source="iPhone"),
        Record(D0 + 3600, value=4500, source="Watch"),
        Record(D0 + DAY + 10, value=100, source="Watch"),
    ]
    day = local_day(D0, None)
    assert da.daily_total(records) == {day: 5000, day + 1: 100}


def test_sleep_counts_asleep_time_once_on_the_waking_day():
    night = D0 + 22 * 3600
    records = [
        Record(night, night + 3 * 3600, text="HKCategoryValueSleepAnalysisAsleepCore"),
        Record(night + 2 * 3600, night + 7 * 3600, text="HKCategoryValueSleepAnalysisAsleepDeep"),
        Record(night, night + 9 * 3600, text="HKCategoryValueSleepAnalysisInBed"),
    ]
    assert da.sleep_hours(records) == {local_day(D0, None) + 1: pytest.approx(7.0)}


def test_union_seconds():
    assert da.union_seconds([(0, 10), (5, 15), (20, 30)]) == 25
    assert da.union_seconds([]) == 0


def _activity_rows(step_days: list[float]) -> dict[str, list[Record]]:
    return {
        da.STEPS: [Record(D0 + i * DAY + 3600, value=s) for i, s in enumerate(step_days)],
        da.HEART_RATE: [Record(D0 + i * DAY + 60, value=70 + i) for i in range(len(step_days))],
        da.SLEEP: [
            Record(D0 + i * DAY, D0 + i * DAY + 8 * 3600, text="HKCategoryValueSleepAnalysisAsleep")
            for i in range(len(step_days))
        ],
    }


def test_daily_activity_features_labels_and_scaling():
    recipe = get_recipe("daily_activity")
    out = recipe.build(_activity_rows([9000, 4000, 12000]), [], "next_day_active")
    # the last day has no next day: no label, no example
    assert out.keys == ["2024-01-01", "2024-01-02"]
    assert out.x.dtype == np.float32 and out.x.shape == (2, 6)
    assert out.y.dtype == np.int64 and out.y.tolist() == [0, 1]
    np.testing.assert_allclose(out.x[0], [0.9, 0, 0, 0, 0.70, 0.8], rtol=1e-6)


def test_labels_hide_the_fields_that_give_them_away_and_unasked_fields_are_zero():
    recipe = get_recipe("daily_activity")
    rows = _activity_rows([9000, 4000])
    active = recipe.build(rows, [], "active_day")
    assert active.x[:, 0].tolist() == [0, 0]  # steps hidden
    assert active.y.tolist() == [1, 0]
    only_sleep = recipe.build(rows, ["sleep_hours"], "active_day")
    assert np.count_nonzero(only_sleep.x[:, :5]) == 0
    sleep = recipe.build(rows, [], "sleep_hours")
    assert sleep.y.dtype == np.float32 and sleep.y.tolist() == [8.0, 8.0]
    assert sleep.x[:, 5].tolist() == [0, 0]


# ---------------------------------------------------------------------- heart_rate_windows


def test_spread_steps_over_bins_and_sources():
    records = [
        Record(D0, D0 + 600, value=600, source="Watch"),  # 300 per 5-minute bin
        Record(D0, D0 + 300, value=100, source="iPhone"),
    ]
    bins = hw.spread_steps(records)
    first = D0 // hw.BIN_SECONDS
    assert bins == {first: pytest.approx(300), first + 1: pytest.approx(300)}


def test_fill_gaps_forward_then_backward():
    out = hw.fill_gaps(np.array([np.nan, 60, np.nan, 80, np.nan]))
    assert out.tolist() == [60, 60, 60, 80, 80]
    assert hw.fill_gaps(np.array([np.nan, np.nan])).tolist() == [0, 0]


def test_heart_rate_windows_shape_and_activity_label():
    hr = [Record(D0 + b * 300 + 10, value=60.0 + b) for b in range(12)]
    hr += [Record(D0 + 3600 + b * 300, value=100.0) for b in range(0, 12, 2)]
    hr += [Record(D0 + 7200, value=90.0)]  # one sample: too sparse a window
    steps = [Record(D0 + 3600, D0 + 7200, value=3600)]
    out = get_recipe("heart_rate_windows").build(
        {hw.HEART_RATE: hr, hw.STEPS: steps}, [], "activity_level"
    )
    assert out.x.shape == (2, 12, 2) and out.x.dtype == np.float32
    assert out.y.tolist() == [0, 2]
    assert np.count_nonzero(out.x[:, :, 1]) == 0  # steps hidden for this label
    np.testing.assert_allclose(out.x[0, :, 0], (60 + np.arange(12)) / 100, rtol=1e-6)
    nxt = get_recipe("heart_rate_windows").build({hw.HEART_RATE: hr}, [], "next_window_heart_rate")
    assert nxt.y.tolist() == [100.0, 90.0]
    assert hw.activity_level(99) == 0 and hw.activity_level(500) == 1


# -------------------------------------------------------------------------- mobility_daily


def test_haversine_one_degree_of_latitude():
    assert mob.haversine_km(0.0, 0.0, 1.0, 0.0) == pytest.approx(111.19, rel=1e-3)


def test_radius_of_gyration_of_symmetric_points():
    # four points 1 km north, south, east and west of a centre: r_g = 1 km
    d = 1 / 111.195
    lats = np.array([d, -d, 0.0, 0.0]) + 48.0
    east = d / math.cos(math.radians(48.0))
    lons = np.array([0.0, 0.0, east, -east]) + 11.0
    assert mob.radius_of_gyration_km(lats, lons) == pytest.approx(1.0, rel=1e-3)
    assert mob.radius_of_gyration_km(np.array([5.0]), np.array([5.0])) == 0.0


def test_radius_of_gyration_across_the_antimeridian():
    d = 1 / 111.195
    assert mob.radius_of_gyration_km(
        np.array([0.0, 0.0]), np.array([180 - d, -180 + d])
    ) == pytest.approx(1.0, rel=1e-3)


def test_dwell_is_capped_and_places_counted():
    assert mob.dwell_seconds(np.array([0, 600, 10_000])).tolist() == [600, 3600, 0]
    spent = mob.places(
        np.array([48.0, 48.0, 48.1]), np.array([11.0, 11.0, 11.0]), np.array([0, 900, 1800])
    )
    assert sorted(spent.values()) == [0, 1800]


def test_mobility_daily_features_and_weekend_label():
    # Saturday 2024-01-06: home 8 hours, then a trip 1 degree north
    sat = D0 + 5 * DAY
    points = [Record(sat + h * 3600, lat=48.0, lon=11.0) for h in range(9)]
    points.append(Record(sat + 10 * 3600, lat=49.0, lon=11.0))
    points.append(Record(D0 + 6 * DAY, lat=48.0, lon=11.0))  # one point: no example
    out = get_recipe("mobility_daily").build({mob.POINTS: points}, [], "weekend")
    assert out.keys == ["2024-01-06"] and out.y.tolist() == [1]
    distance, stays, _rg, top = out.x[0]
    assert distance == pytest.approx(11.119, rel=1e-3)  # 111.19 km / 10
    assert stays == pytest.approx(0.1)  # one place stayed at, / 10
    assert top == pytest.approx(9 / 24)  # 8 h, plus the last hour before leaving (capped)
    assert mob.is_weekend(local_day(sat, None)) and not mob.is_weekend(local_day(D0, None))


# ---------------------------------------------------------------------- preferences_vector


def test_preferences_vector_numeric_and_one_hot():
    rows = {
        "preferences.movies": [
            Record(D0, extra={"rating": 4, "genre": "comedy", "liked": "yes"}),
            Record(D0 + 1, extra={"rating": "3.5", "genre": "drama", "liked": "no"}),
            Record(D0 + 2, extra={"rating": None, "genre": "comedy"}),  # no label: dropped
        ]
    }
    recipe = get_recipe("preferences_vector")
    recipe.check(["preferences.movies"], ["rating", "genre=comedy"], "liked=yes")
    out = recipe.build(rows, ["rating", "genre=comedy", "genre=drama"], "liked=yes")
    assert out.x.tolist() == [[4, 1, 0], [3.5, 0, 1]]
    assert out.y.dtype == np.int64 and out.y.tolist() == [1, 0]
    assert recipe.shape(["a", "b"]) == [2]


def test_preferences_vector_refuses_leaks_and_other_datasets():
    recipe = get_recipe("preferences_vector")
    with pytest.raises(RecipeRefused, match="also a field"):
        recipe.check(["preferences.movies"], ["genre=drama"], "genre=comedy")
    with pytest.raises(RecipeRefused, match="exactly one"):
        recipe.check(["health.step_count"], ["rating"], "liked=yes")
    with pytest.raises(RecipeRefused, match="fields"):
        recipe.check(["preferences.movies"], [], "liked=yes")
    assert pv.encode({"n": True}, "n") == 1.0 and pv.cell_text(2.0) == "2"
