"""The FHIR R4 Bundle importer: LOINC mapping, units, times, keys, skipped and refused input."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures import fhir as fixtures
from vault.core import Vault
from vault.errors import ImportRefused
from vault.importers.base import Row, Source
from vault.importers.fhir import FhirImporter
from vault.importers.fhir_codes import fhir_time, normalise_unit


def _rows(path: Path) -> list[Row]:
    return list(FhirImporter().rows(Source.from_path(path)))


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


@pytest.fixture
def rows(tmp_path: Path) -> list[Row]:
    return _rows(fixtures.synthea_bundle(tmp_path))


def _one(rows: list[Row], dataset: str) -> Row:
    found = [r for r in rows if r.dataset == dataset]
    assert len(found) == 1, (dataset, found)
    return found[0]


def test_vital_signs_land_in_the_apple_health_datasets(rows: list[Row]) -> None:
    expected = {
        "health.height": (164.2, "cm", "8302-2"),
        "health.body_mass": (71.3, "kg", "29463-7"),
        "health.body_mass_index": (26.45, "count", "39156-5"),
        "health.respiratory_rate": (14.0, "count/min", "9279-1"),
        "health.body_temperature": (36.9, "degC", "8310-5"),
        "health.oxygen_saturation": (0.97, "%", "2708-6"),  # Apple's scale
        "health.blood_glucose": (93.4, "mg/dL", "2339-0"),
    }
    for dataset, (value, unit, loinc) in expected.items():
        row = _one(rows, dataset)
        assert (row.value, row.unit, row.extra["loinc"]) == (value, unit, loinc)
        assert row.extra["status"] == "final"
        assert row.extra["encounter"] == fixtures.ENCOUNTER


def test_blood_pressure_panel_becomes_one_row_per_component(rows: list[Row]) -> None:
    systolic = _one(rows, "health.blood_pressure_systolic")
    diastolic = _one(rows, "health.blood_pressure_diastolic")

    assert (systolic.value, systolic.unit) == (128.0, "mmHg")
    assert (diastolic.value, diastolic.unit) == (82.0, "mmHg")
    assert systolic.start == diastolic.start
    panel_id = f"Observation/{fixtures._uid('bp')}"
    assert systolic.key == f"{panel_id}#8480-6"
    assert diastolic.key == f"{panel_id}#8462-4"
    assert systolic.extra["panel"] == diastolic.extra["panel"] == "85354-9"
    assert not any(r.extra and r.extra.get("loinc") == "85354-9" for r in rows)


def test_a_mapped_loinc_code_wins_over_a_generic_one_listed_first() -> None:
    resource = fixtures.observation(
        "listed", "8716-3", "Vital signs", "2020-01-01T00:00:00Z", valueQuantity={"value": 61}
    )
    resource["code"]["coding"].append({"system": fixtures.LOINC, "code": "8867-4"})
    data = json.dumps(fixtures.bundle([resource])).encode()

    (row,) = FhirImporter().rows(Source.from_bytes("two-codes.json", data))

    assert (row.dataset, row.value, row.extra["loinc"]) == ("health.heart_rate", 61.0, "8867-4")


def test_heart_rate_rows_and_entered_in_error_skipped(rows: list[Row]) -> None:
    heart = sorted((r for r in rows if r.dataset == "health.heart_rate"), key=lambda r: r.start)

    # 71 from the vitals, 54 over a period; the 250 entered-in-error is not imported
    assert [(r.value, r.unit) for r in heart] == [(54.0, "count/min"), (71.0, "count/min")]
    night = heart[0]
    assert night.start == _epoch("2019-03-14T02:00:00+00:00")
    assert night.end == _epoch("2019-03-14T02:05:00+00:00")


@pytest.mark.parametrize(
    ("ucum", "apple"),
    [("/min", "count/min"), ("mm[Hg]", "mmHg"), ("Cel", "degC"), ("kg", "kg"), ("%", "%")],
)
def test_units_follow_apple_health(ucum: str, apple: str) -> None:
    assert normalise_unit(ucum) == apple


def test_times_are_utc_and_keep_their_offset(rows: list[Row]) -> None:
    height = _one(rows, "health.height")
    assert height.start == _epoch("2019-03-14T13:21:05+00:00")
    assert height.offset == -240
    medications = {r.text: r for r in rows if r.dataset == "health.medications"}
    acetaminophen = medications["Acetaminophen 325 MG Oral Tablet"]
    assert acetaminophen.start == _epoch("2020-01-02T09:00:00+00:00")
    assert acetaminophen.offset == 60


def test_partial_and_plain_dates_mean_their_start_in_utc() -> None:
    assert fhir_time("2011-05") == (_epoch("2011-05-01T00:00:00+00:00"), None)
    assert fhir_time("2011") == (_epoch("2011-01-01T00:00:00+00:00"), None)
    assert fhir_time("2011-05-20") == (_epoch("2011-05-20T00:00:00+00:00"), None)


def test_other_observations_keep_their_display_and_loinc(rows: list[Row]) -> None:
    others = {r.extra["loinc"]: r for r in rows if r.dataset == "health.observations"}

    assert set(others) == {"72166-2", "72514-3"}
    smoking = others["72166-2"]
    assert smoking.text == "Tobacco smoking status"
    assert smoking.value is None
    assert smoking.extra["value_text"] == "Never smoked tobacco (finding)"
    pain = others["72514-3"]
    assert (pain.value, pain.unit, pain.offset) == (2.0, "{score}", 0)


def test_conditions_and_medications(rows: list[Row]) -> None:
    conditions = {r.text: r for r in rows if r.dataset == "health.conditions"}
    sinusitis = conditions["Viral sinusitis (disorder)"]
    assert sinusitis.extra == {
        "snomed": "444814009",
        "clinical_status": "resolved",
        "verification_status": "confirmed",
        "encounter": fixtures.ENCOUNTER,
    }
    assert sinusitis.end == _epoch("2019-03-28T13:21:05+00:00")
    hypertension = conditions["Essential hypertension (disorder)"]
    assert (hypertension.start, hypertension.end) == (_epoch("2011-05-01T00:00:00+00:00"), None)

    medications = {r.text: r for r in rows if r.dataset == "health.medications"}
    amoxicillin = medications["Amoxicillin 250 MG Oral Capsule"]
    assert amoxicillin.extra["rxnorm"] == "308182"
    assert amoxicillin.extra["status"] == "stopped"
    assert amoxicillin.extra["intent"] == "order"
    assert amoxicillin.extra["dosage"] == "Take one capsule three times a day"
    # resolved through medicationReference to the Medication entry before it
    assert medications["Acetaminophen 325 MG Oral Tablet"].extra["rxnorm"] == "1049221"
    statement = medications["lisinopril 10 MG Oral Tablet"]
    assert statement.end == _epoch("2012-05-20T00:00:00+00:00")
    assert statement.extra["dosage"] == "10 mg daily"


def test_other_resources_are_skipped_and_no_patient_details_stored(
    rows: list[Row], tmp_path: Path
) -> None:
    datasets = {r.dataset for r in rows}
    assert datasets <= {
        "health.height",
        "health.body_mass",
        "health.body_mass_index",
        "health.blood_pressure_systolic",
        "health.blood_pressure_diastolic",
        "health.heart_rate",
        "health.respiratory_rate",
        "health.body_temperature",
        "health.oxygen_saturation",
        "health.blood_glucose",
        "health.observations",
        "health.conditions",
        "health.medications",
    }
    assert len(rows) == 18
    # Nothing of the Patient resource, nor the patient reference, reaches a row. (The source
    # label names the file, which Synthea names after the patient: that is the user's choice.)
    stored = json.dumps([[r.text, r.extra, r.key] for r in rows])
    for private in ("Lorrie905", "Kautzer186", "Runolfsdottir", "1968-07-02", fixtures.PATIENT):
        assert private not in stored
    assert {r.source for r in rows} == {"FHIR bundle Lorrie905_Kautzer186.json"}


def test_keys_are_unique_and_stable_across_imports(rows: list[Row], tmp_path: Path) -> None:
    keys = [(r.dataset, r.key) for r in rows]
    assert len(set(keys)) == len(keys)

    again = _rows(fixtures.synthea_bundle(tmp_path / ".." / tmp_path.name))
    assert [(r.dataset, r.key) for r in again] == keys


def test_searchset_with_fullurls_meta_source_and_late_resource_type(tmp_path: Path) -> None:
    rows = _rows(fixtures.searchset_bundle(tmp_path))

    assert [r.dataset for r in rows] == [
        "health.height",
        "health.body_mass",
        "health.body_mass_index",
    ]
    assert all(r.key.startswith("https://fhir.example.org/r4/Observation/") for r in rows)
    assert {r.source for r in rows} == {"https://fhir.example.org/r4"}


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = fixtures.synthea_bundle(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    assert len(_rows(path)) == 18


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("truncated", "invalid JSON near byte 13"),
        ("garbage", "invalid JSON near byte 55 (line 3)"),
        ("patient", "not a FHIR Bundle (resourceType is 'Patient')"),
        ("no_type", "not a FHIR Bundle (resourceType is missing)"),
        ("list", "not a FHIR Bundle (the top level is a list)"),
        ("entry_string", "Bundle.entry[2] is a string, not an object"),
        ("untyped", "Bundle.entry[1].resource has no resourceType"),
        ("bad_date", "Bundle.entry[3] (Observation/"),
    ],
)
def test_bad_input_is_refused_naming_file_and_place(
    tmp_path: Path, name: str, problem: str
) -> None:
    path = fixtures.broken_files(tmp_path)[name]

    with pytest.raises(ImportRefused) as refused:
        _rows(path)

    assert refused.value.file == str(path)
    assert problem in refused.value.problem


def test_truncated_bundle_points_at_its_end(tmp_path: Path) -> None:
    path = fixtures.broken_files(tmp_path)["truncated"]

    with pytest.raises(ImportRefused, match=f"near byte {path.stat().st_size} "):
        _rows(path)


def test_unparseable_observation_date_names_entry_and_id(tmp_path: Path) -> None:
    path = fixtures.broken_files(tmp_path)["bad_date"]

    with pytest.raises(ImportRefused) as refused:
        _rows(path)

    weight_id = fixtures._uid("weight")
    assert refused.value.problem == (
        f"Bundle.entry[3] (Observation/{weight_id}): effectiveDateTime 'last Tuesday'"
        " is not a FHIR date"
    )


def test_deep_nesting_is_refused_before_it_costs_memory() -> None:
    depth = 100_000
    bomb = b'{"resourceType": "Bundle", "entry": [' + b"[" * depth + b"]" * depth + b"]}"

    with pytest.raises(ImportRefused, match="nested more than 256 levels"):
        list(FhirImporter().rows(Source.from_bytes("bomb.json", bomb)))


def test_escaped_quotes_and_brackets_in_strings_do_not_count_as_nesting() -> None:
    text = 'a \\"quoted\\" [[[{{{ \\\\' * 5000
    bundle = fixtures.bundle([{"resourceType": "Basic", "id": "x", "note": text}])

    data = json.dumps(bundle).encode()
    assert list(FhirImporter().rows(Source.from_bytes("strings.json", data))) == []


def test_sniff_accepts_pretty_printed_bundles_only(tmp_path: Path) -> None:
    path = fixtures.synthea_bundle(tmp_path)
    source = Source.from_path(path)
    spaced = b'{\n  "resourceType" :\n    "Bundle",\n  "type": "collection"}'

    assert FhirImporter.sniff(source, source.head())
    assert FhirImporter.sniff(source, spaced)
    assert FhirImporter.sniff(source, b'{"entry": [{"resource": {"resourceType": "Observation"')
    assert not FhirImporter.sniff(source, b'{"resourceType": "Patient"}')
    assert not FhirImporter.sniff(source, b'{"locations": [{"latitudeE7": 1}]}')


@pytest.fixture
def my_formats_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan with the FHIR and preferences formats only, whatever else is being built."""
    from vault.importers import plan

    monkeypatch.setattr(plan, "FORMAT_MODULES", ["fhir", "preferences"])


@pytest.mark.usefixtures("my_formats_only")
def test_reimport_into_a_vault_adds_nothing(vault: Vault, tmp_path: Path) -> None:
    path = fixtures.synthea_bundle(tmp_path)

    first = vault.import_path(path).to_dict()
    second = vault.import_path(path).to_dict()

    assert first["format"] == "fhir"
    assert (first["added"], first["skipped"]) == (18, 0)
    assert (second["added"], second["skipped"]) == (0, 18)
    assert vault.stats("health.blood_pressure_systolic")["records"] == 1


@pytest.mark.usefixtures("my_formats_only")
def test_a_refused_bundle_leaves_the_vault_as_it_was(vault: Vault, tmp_path: Path) -> None:
    path = fixtures.broken_files(tmp_path)["bad_date"]  # two good entries come first

    with pytest.raises(ImportRefused, match="Bundle.entry\\[3\\]"):
        vault.import_path(path)

    assert vault.datasets() == []


def test_memory_stays_flat_with_bundle_size(tmp_path: Path) -> None:
    path = fixtures.large_bundle(tmp_path / "large.json", 5_000)
    assert path.stat().st_size > 5 * 1024 * 1024

    tracemalloc.start()
    try:
        count = sum(1 for _ in FhirImporter().rows(Source.from_path(path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == 5_000
    assert peak < 2 * 1024 * 1024  # a few entries and buffers, never the file
