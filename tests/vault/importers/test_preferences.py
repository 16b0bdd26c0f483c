"""The preferences importers: CSV/TSV and JSON records, dataset names, keys, refused input."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures import preferences as fixtures
from vault.core import Vault
from vault.errors import ImportRefused
from vault.importers.base import Importer, Row, Source
from vault.importers.preferences import (
    PreferencesCsvImporter,
    PreferencesJsonImporter,
    dataset_name,
    snake_case,
)

NOW = 1_700_000_000.0


def _importer(path: Path, dataset: str | None = None, now: float = NOW) -> Importer:
    csv = path.suffix.lower() in (".csv", ".tsv")
    cls = PreferencesCsvImporter if csv else PreferencesJsonImporter
    return cls(dataset, now=now)


def _rows(path: Path, dataset: str | None = None, now: float = NOW) -> list[Row]:
    return list(_importer(path, dataset, now).rows(Source.from_path(path)))


def _member(member: str) -> Source:
    """A source for an archive member (its bytes do not matter here)."""
    return Source(f"archive.zip:{member}", lambda: io.BytesIO(b""), 0, member=member)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


def test_excel_csv_with_bom_crlf_and_quoted_newlines(tmp_path: Path) -> None:
    rows = _rows(fixtures.ratings_csv(tmp_path))

    assert [r.dataset for r in rows] == ["preferences.movie_ratings"] * 3
    heat, alien, cats = rows
    assert heat.extra == {
        "title": "Heat",
        "rating": 4.5,
        "watched_at": "2024-03-01T21:30:00+01:00",
        "review": 'Long, but "worth it"',
    }
    assert alien.extra["review"] == "Line one\r\nline two"
    assert (heat.text, heat.value, heat.source) == ("Heat", 4.5, "Movie Ratings.csv")
    # watched_at is a time column: UTC start, offset kept; a bare date is midnight UTC
    assert (heat.start, heat.offset) == (_epoch("2024-03-01T20:30:00+00:00"), 60)
    assert (alien.start, alien.offset) == (_epoch("2024-03-02T20:00:00+00:00"), 0)
    assert (cats.start, cats.offset) == (_epoch("2024-03-03T00:00:00+00:00"), None)
    assert cats.extra["review"] is None


def test_semicolons_are_sniffed_and_ids_are_not_values(tmp_path: Path) -> None:
    rows = _rows(fixtures.semicolon_csv(tmp_path))

    assert [(r.text, r.value) for r in rows] == [
        ("Chez Marie", 8.0),
        ("Nordsee", 6.0),
        ("Da Enzo", 9.0),
    ]
    assert rows[0].extra["notes"] == 'cosy; ask for "the corner" table'
    assert rows[1].extra["notes"] == "fish, chips,\nand more fish"
    assert rows[0].extra["id"] == 17
    assert [r.extra["avg_price"] for r in rows] == [24.5, 9.9, 18]  # decimal commas


def test_rows_without_a_time_column_carry_the_import_time(tmp_path: Path) -> None:
    path = fixtures.semicolon_csv(tmp_path)
    before = time.time()

    rows = list(PreferencesCsvImporter().rows(Source.from_path(path)))

    assert {r.start for r in rows} == {rows[0].start}  # one moment for the whole import
    assert before <= rows[0].start <= time.time()
    assert rows[0].offset is None


def test_tsv_with_date_and_time_columns_and_an_unnamed_index(tmp_path: Path) -> None:
    rows = _rows(fixtures.tabs_tsv(tmp_path))

    assert [r.start for r in rows] == [
        _epoch("2024-05-01T08:15:00+00:00"),
        _epoch("2024-05-02T22:40:10+00:00"),
    ]
    # the pandas index column is named, kept, and not taken for the value
    assert rows[0].extra["column_1"] == 0
    assert [r.value for r in rows] == [12.0, 7.0]


def test_json_list_wrapped_list_and_lines_give_the_same_records(tmp_path: Path) -> None:
    listed = _rows(fixtures.list_json(tmp_path))
    wrapped = _rows(fixtures.wrapped_json(tmp_path))
    lines = _rows(fixtures.lines_jsonl(tmp_path))

    assert [r.key for r in listed] == [r.key for r in wrapped] == [r.key for r in lines]
    assert [r.extra for r in listed] == fixtures.RECORDS
    assert {r.dataset for r in listed + lines} == {"preferences.drinks"}
    assert {r.dataset for r in wrapped} == {"preferences.export"}
    oat, espresso, decaf = listed
    assert (oat.text, oat.value) == ("oat milk", 4.0)
    assert (oat.start, oat.offset) == (_epoch("2024-02-01T08:00:00+00:00"), 120)
    assert espresso.start == 1706781600.0  # epoch seconds
    assert espresso.extra["origin"] == {"country": "BR"}  # nested values kept as they are
    assert decaf.start == NOW


def test_reimport_gives_the_same_keys_whatever_the_clock(tmp_path: Path) -> None:
    path = fixtures.semicolon_csv(tmp_path)

    first = _rows(path, now=NOW)
    later = _rows(path, now=NOW + 86_400)

    assert [r.key for r in first] == [r.key for r in later]
    assert len({r.key for r in first}) == len(first)


def test_a_csv_and_a_json_of_the_same_data_are_the_same_records(tmp_path: Path) -> None:
    csv = tmp_path / "likes.csv"
    csv.write_text("item,rating\nespresso,5\ntea,3.5\n")
    listed = tmp_path / "likes.json"
    listed.write_text('[{"rating": 5, "item": "espresso"}, {"item": "tea", "rating": 3.5}]')

    assert [r.key for r in _rows(csv)] == [r.key for r in _rows(listed)]


@pytest.mark.parametrize(
    ("given", "member", "expected"),
    [
        (None, None, "preferences.movie_ratings"),
        ("foo", None, "preferences.foo"),
        ("preferences.Coffee Beans", None, "preferences.coffee_beans"),
        ("myRatings", None, "preferences.my_ratings"),
        (None, "Takeout/YouTube/Liked Videos.csv", "preferences.liked_videos"),
        (None, "exports/Café-Notes 2024.json", "preferences.cafe_notes_2024"),
    ],
)
def test_dataset_names(given: str | None, member: str | None, expected: str) -> None:
    source = _member(member) if member else Source.from_bytes("/home/me/Movie Ratings.csv", b"")

    assert dataset_name(source, given) == expected


def test_a_dataset_outside_preferences_is_refused(tmp_path: Path) -> None:
    path = fixtures.semicolon_csv(tmp_path)

    with pytest.raises(ImportRefused, match="preferences.<name>"):
        _rows(path, dataset="health.step_count")


def test_snake_case() -> None:
    assert snake_case("Movie Ratings (2024)") == "movie_ratings_2024"
    assert snake_case("HTTPLogs") == "http_logs"
    assert snake_case("日本") == ""


def test_a_time_column_that_holds_no_times_is_plain_data(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("route,time,km\nriver,42:10,8.2\nhill,55:03,9.1\n")

    rows = _rows(path)

    assert [r.start for r in rows] == [NOW, NOW]
    assert rows[0].extra["time"] == "42:10"
    assert [r.value for r in rows] == [8.2, 9.1]


def test_epoch_milliseconds_in_a_timestamp_column(tmp_path: Path) -> None:
    path = tmp_path / "taps.csv"
    path.write_text("timestamp,label\n1706781600123,like\n")

    assert _rows(path)[0].start == pytest.approx(1706781600.123)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("no_header.csv", "line 1: no header row ('2024-01-01' looks like data"),
        ("long_row.csv", "line 7: 5 fields, header has 3"),
        ("latin1.csv", "line 3: not UTF-8 text (byte 0xe9 at column 4)"),
        ("unclosed.csv", "line 2: unexpected end of data (a quoted field is never closed)"),
        ("bad_time.csv", "line 4: date 'yesterday' is not a time"),
        ("duplicate.csv", "line 1: column 'name' appears twice"),
        ("number.json", "expected a list of objects, got a number"),
        ("strings.json", "expected a list of objects, record 3 is a string"),
        ("two_lists.json", "found lists 'likes' and 'dislikes'"),
        ("truncated.json", "invalid JSON near byte 17 (line 1): parse error: premature EOF"),
        ("bad_line.jsonl", "line 3: invalid JSON (Expecting value at column"),
        ("scalar_line.jsonl", "expected one JSON object per line, line 2 is a string"),
    ],
)
def test_bad_input_is_refused_naming_file_and_line(tmp_path: Path, name: str, problem: str) -> None:
    path = fixtures.broken_files(tmp_path)[name]

    with pytest.raises(ImportRefused) as refused:
        _rows(path)

    assert refused.value.file == str(path)
    assert problem in refused.value.problem


def test_deeply_nested_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.json"
    path.write_bytes(b'[{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]")

    with pytest.raises(ImportRefused, match="nested more than"):
        _rows(path)


def test_sniffing(tmp_path: Path) -> None:
    def sniffs(cls: type[Importer], name: str, head: bytes) -> bool:
        return cls.sniff(Source.from_bytes(name, head), head)

    assert sniffs(PreferencesCsvImporter, "a.CSV", b"\xef\xbb\xbfname,rating\n")
    assert sniffs(PreferencesCsvImporter, "a.tsv", "name\tnote\ncaf\u00e9".encode()[:-1])
    assert not sniffs(PreferencesCsvImporter, "a.csv", b"PK\x03\x04\x00\x00binary")
    assert not sniffs(PreferencesCsvImporter, "a.txt", b"name,rating\n")
    assert sniffs(PreferencesJsonImporter, "a.json", b'\xef\xbb\xbf\n  [{"a": 1}]')
    assert sniffs(PreferencesJsonImporter, "a.jsonl", b'{"a": 1}\n')
    assert not sniffs(PreferencesJsonImporter, "a.json", b'"just a string"')
    assert not sniffs(PreferencesJsonImporter, "a.csv", b"[1]")


def test_archive_members_and_fhir_resources_are_not_sniffed_as_preferences() -> None:
    member = _member("Takeout/Settings.json")
    patient = Source.from_bytes("patient.json", b'{"resourceType": "Patient", "name": []}')

    assert not PreferencesJsonImporter.sniff(member, b'[{"a": 1}]')
    assert not PreferencesCsvImporter.sniff(member, b"a,b\n")
    assert not PreferencesJsonImporter.sniff(patient, patient.head())


def test_text_in_another_encoding_is_claimed_then_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("name,city\nJosé,Málaga\n".encode("utf-16"))
    source = Source.from_path(path)

    assert PreferencesCsvImporter.sniff(source, source.head())
    with pytest.raises(ImportRefused, match="UTF-16 text; save it as CSV UTF-8"):
        _rows(path)


@pytest.fixture
def my_formats_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan with the FHIR and preferences formats only, whatever else is being built."""
    from vault.importers import plan

    monkeypatch.setattr(plan, "FORMAT_MODULES", ["fhir", "preferences"])


@pytest.mark.usefixtures("my_formats_only")
def test_reimport_into_a_vault_adds_nothing(vault: Vault, tmp_path: Path) -> None:
    path = fixtures.ratings_csv(tmp_path)

    first = vault.import_path(path).to_dict()
    path.touch()  # a new modification time changes nothing
    second = vault.import_path(path, dataset="preferences.movie_ratings").to_dict()

    assert first["format"] == "preferences_csv"
    assert first["datasets"] == {"preferences.movie_ratings": {"added": 3, "skipped": 0}}
    assert second["datasets"] == {"preferences.movie_ratings": {"added": 0, "skipped": 3}}


@pytest.mark.usefixtures("my_formats_only")
def test_the_planner_sends_json_lists_here_and_bundles_to_fhir(
    vault: Vault, tmp_path: Path
) -> None:
    from tests.fixtures import fhir

    assert vault.import_path(fixtures.list_json(tmp_path)).format == "preferences_json"
    assert vault.import_path(fhir.synthea_bundle(tmp_path)).format == "fhir"
