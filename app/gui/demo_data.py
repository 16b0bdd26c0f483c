"""Synthetic but realistic input files for the demo vault, read by the real importers.

- ``export.xml``: an Apple Health export (HealthKit export version 14 layout) with steps,
  walking distance, active energy and heart rate through each day, resting heart rate, sleep,
  body mass and a few workouts with activity summaries;
- ``walks.gpx``: GPX 1.1 tracks of evening walks around Munich with Garmin heart rate;
- ``movie_ratings.csv``: a preferences file (date, title, genre, rating).

Everything is drawn from a seeded random generator, so the demo looks the same every time.
No real person's data is involved.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

TZ = timezone(timedelta(hours=1))
Q = "HKQuantityTypeIdentifier"
PHONE = "iPhone"
WATCH = "Apple Watch"
HOME = (48.1372, 11.5756)  # Marienplatz, Munich
MOVIES = [
    ("Arrival", "science fiction"),
    ("Paddington 2", "family"),
    ("Parasite", "thriller"),
    ("The Grand Budapest Hotel", "comedy"),
    ("Spirited Away", "animation"),
    ("Mad Max: Fury Road", "action"),
    ("Portrait of a Lady on Fire", "drama"),
    ("Knives Out", "mystery"),
    ("Dune", "science fiction"),
    ("Amélie", "comedy"),
    ("Everything Everywhere All at Once", "science fiction"),
    ("Past Lives", "drama"),
]
PROLOG = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [
<!-- HealthKit Export Version: 14 -->
<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation|Workout|ActivitySummary)*)>
<!ATTLIST HealthData locale CDATA #REQUIRED>
<!ELEMENT ExportDate EMPTY>
<!ATTLIST ExportDate value CDATA #REQUIRED>
<!ELEMENT Me EMPTY>
<!ELEMENT Record ((MetadataEntry|HeartRateVariabilityMetadataList)*)>
<!ELEMENT Workout ((MetadataEntry|WorkoutEvent|WorkoutRoute|WorkoutStatistics)*)>
<!ELEMENT ActivitySummary EMPTY>
<!ELEMENT MetadataEntry EMPTY>
<!ATTLIST MetadataEntry key CDATA #REQUIRED value CDATA #REQUIRED>
]>
"""


def apple_time(moment: datetime) -> str:
    """'2024-01-01 08:00:00 +0100', as the Health app writes dates."""
    return moment.astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S %z")


def _record(kind: str, start: datetime, end: datetime, value: str, unit: str | None, src: str):
    unit_attr = f' unit="{unit}"' if unit else ""
    return (
        f' <Record type="{kind}" sourceName="{src}" sourceVersion="17.2"{unit_attr}'
        f' creationDate="{apple_time(end)}" startDate="{apple_time(start)}"'
        f' endDate="{apple_time(end)}" value="{value}"/>\n'
    )


def _day_records(day: datetime, rng: random.Random, heart_every: int) -> Iterator[str]:
    """One day of records: hourly movement, heart rate, resting rate, sleep."""
    weekend = day.weekday() >= 5
    energy_total = 0.0
    for hour in range(7, 23):
        start = day + timedelta(hours=hour)
        end = start + timedelta(minutes=59)
        busy = 1.6 if hour in (8, 12, 18, 19) else 0.7
        busy *= 1.3 if weekend and 10 <= hour <= 16 else 1.0
        steps = max(0, int(rng.gauss(520 * busy, 180)))
        yield _record(Q + "StepCount", start, end, str(steps), "count", PHONE)
        yield _record(
            Q + "DistanceWalkingRunning", start, end, f"{steps * 0.00072:.3f}", "km", PHONE
        )
        energy = steps * 0.04 + rng.uniform(2, 8)
        energy_total += energy
        yield _record(Q + "ActiveEnergyBurned", start, end, f"{energy:.1f}", "kcal", WATCH)
    minute = 6 * 60
    while minute < 23 * 60:
        moment = day + timedelta(minutes=minute)
        hour = moment.hour + moment.minute / 60
        rate = 62 + 10 * math.sin((hour - 6) / 17 * math.pi) + rng.gauss(0, 4)
        rate += 35 if day.weekday() in (1, 3, 6) and 18.5 <= hour <= 19.3 else 0
        yield _record(Q + "HeartRate", moment, moment, f"{rate:.0f}", "count/min", WATCH)
        minute += heart_every
    yield _record(
        Q + "RestingHeartRate",
        day + timedelta(hours=7),
        day + timedelta(hours=7),
        f"{rng.gauss(57, 2):.0f}",
        "count/min",
        WATCH,
    )
    asleep = day - timedelta(hours=rng.uniform(0.5, 1.8))
    wake = day + timedelta(hours=6.5 + rng.uniform(0, 1.2) + (1 if weekend else 0))
    yield _record(
        "HKCategoryTypeIdentifierSleepAnalysis",
        asleep,
        wake,
        "HKCategoryValueSleepAnalysisAsleepCore",
        None,
        WATCH,
    )
    if day.weekday() in (1, 3, 6):  # a run on Tuesdays, Thursdays and Sundays
        start = day + timedelta(hours=18, minutes=30)
        minutes = rng.uniform(28, 48)
        end = start + timedelta(minutes=minutes)
        km = minutes / rng.uniform(5.4, 6.2)
        yield (
            f' <Workout workoutActivityType="HKWorkoutActivityTypeRunning"'
            f' duration="{minutes:.2f}" durationUnit="min" totalDistance="{km:.2f}"'
            f' totalDistanceUnit="km" totalEnergyBurned="{km * 62:.0f}"'
            f' totalEnergyBurnedUnit="kcal" sourceName="{WATCH}" sourceVersion="10.1"'
            f' creationDate="{apple_time(end)}" startDate="{apple_time(start)}"'
            f' endDate="{apple_time(end)}"/>\n'
        )
    if day.weekday() == 0:
        yield _record(
            Q + "BodyMass",
            day + timedelta(hours=7, minutes=5),
            day + timedelta(hours=7, minutes=5),
            f"{74 + rng.gauss(0, 0.4):.1f}",
            "kg",
            PHONE,
        )
    yield (
        f' <ActivitySummary dateComponents="{day:%Y-%m-%d}"'
        f' activeEnergyBurned="{energy_total:.1f}" activeEnergyBurnedGoal="500"'
        ' activeEnergyBurnedUnit="kcal" appleExerciseTime="'
        f'{rng.randint(10, 60)}" appleExerciseTimeGoal="30" appleStandHours="'
        f'{rng.randint(8, 14)}" appleStandHoursGoal="12"/>\n'
    )


def first_day(days: int, end: datetime | None = None) -> datetime:
    """Local midnight ``days`` days before ``end`` (default: today)."""
    end = end or datetime.now(TZ)
    return (end - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)


def write_health_export(
    path: Path, days: int = 120, heart_every: int = 10, seed: int = 7, end: datetime | None = None
) -> Path:
    """Write an Apple Health ``export.xml`` covering ``days`` days up to ``end``."""
    rng = random.Random(seed)
    start = first_day(days, end)
    with open(path, "w", encoding="utf-8") as f:
        f.write(PROLOG)
        f.write('<HealthData locale="en_DE">\n')
        f.write(f' <ExportDate value="{apple_time(start + timedelta(days=days))}"/>\n')
        f.write(' <Me HKCharacteristicTypeIdentifierBiologicalSex="HKBiologicalSexNotSet"/>\n')
        for n in range(days):
            f.writelines(_day_records(start + timedelta(days=n), rng, heart_every))
        f.write("</HealthData>\n")
    return path


def write_walks_gpx(
    path: Path, days: int = 60, seed: int = 11, end: datetime | None = None
) -> Path:
    """Write a GPX 1.1 file with one evening walk every other day, points every 10 s."""
    rng = random.Random(seed)
    start = first_day(days, end)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="Tessera demo"'
        ' xmlns="http://www.topografix.com/GPX/1/1"'
        ' xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1">\n'
    ]
    for n in range(0, days, 2):
        begin = (start + timedelta(days=n, hours=19)).astimezone(UTC)
        lat, lon = HOME[0] + rng.gauss(0, 0.01), HOME[1] + rng.gauss(0, 0.015)
        heading = rng.uniform(0, 2 * math.pi)
        out.append(f" <trk><name>Evening walk {begin:%Y-%m-%d}</name><trkseg>\n")
        for step in range(rng.randint(180, 300)):
            heading += rng.gauss(0, 0.25)
            lat += math.cos(heading) * 0.00011
            lon += math.sin(heading) * 0.00016
            moment = begin + timedelta(seconds=10 * step)
            out.append(
                f'  <trkpt lat="{lat:.6f}" lon="{lon:.6f}"><ele>{519 + rng.gauss(0, 2):.1f}</ele>'
                f"<time>{moment:%Y-%m-%dT%H:%M:%SZ}</time><extensions><gpxtpx:TrackPointExtension>"
                f"<gpxtpx:hr>{int(rng.gauss(104, 6))}</gpxtpx:hr></gpxtpx:TrackPointExtension>"
                "</extensions></trkpt>\n"
            )
        out.append(" </trkseg></trk>\n")
    out.append("</gpx>\n")
    path.write_text("".join(out), encoding="utf-8")
    return path


def write_ratings_csv(path: Path, seed: int = 3, end: datetime | None = None) -> Path:
    """Write ``movie_ratings.csv``: one rating about every ten days, quoted where needed."""
    rng = random.Random(seed)
    day = first_day(len(MOVIES) * 12 + 2, end)
    lines = ["date,title,genre,rating"]
    for title, genre in MOVIES:
        day += timedelta(days=rng.randint(7, 12))
        quoted = f'"{title}"' if "," in title or ":" in title else title
        lines.append(f"{day:%Y-%m-%d},{quoted},{genre},{rng.randint(2, 5)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_demo_files(folder: Path) -> list[Path]:
    """All demo inputs in ``folder``, in the order they should be imported."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_health_export(folder / "export.xml"),
        write_walks_gpx(folder / "walks.gpx"),
        write_ratings_csv(folder / "movie_ratings.csv"),
    ]
