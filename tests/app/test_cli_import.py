"""`tessera import` and the data commands from the command line, including hostile input.

Every bad input exits 1 with one line naming the file, prints no traceback, and leaves the
vault exactly as it was (same datasets, same counts, `verify` still ok).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult
from tests.fixtures import apple_health

PREFS = "item,rating\nquiet trains,5\nlate breakfast,4\n"


@pytest.fixture
def ready(tessera: Callable[..., CliResult], tmp_path: Path) -> Callable[..., CliResult]:
    """A vault with one preferences dataset already imported."""
    assert tessera("init").code == 0
    prefs = tmp_path / "favourites.csv"
    prefs.write_text(PREFS)
    assert tessera("import", str(prefs)).code == 0
    return tessera


def state(tessera: Callable[..., CliResult]) -> tuple[list, dict]:
    datasets = json.loads(tessera("datasets", "--json").out)
    report = json.loads(tessera("verify", "--json").out)
    return datasets, report


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def hostile_inputs(tmp: Path) -> dict[str, Path]:
    """name -> a bad input file that must be refused."""
    (tmp / "a-folder").mkdir()
    (tmp / "empty.xml").write_bytes(b"")
    (tmp / "bad.json").write_text('{"locations": [ {"latitudeE7": 1,')
    (tmp / "Records.json").write_text('{"locations": {"not": "a list"}}')
    (tmp / "track.gpx").write_text(
        '<?xml version="1.0"?><gpx version="1.1"><trk><trkseg>'
        '<trkpt lat="48.1" lon="11.5"><time>2024-01-01T08:00:00Z</time></trkpt>'
        "</trkseg></trk></gpx>"
    )
    return {
        "truncated xml": apple_health.write_truncated(tmp / "truncated.xml"),
        "billion laughs": apple_health.write_billion_laughs(tmp / "laughs.xml"),
        "xxe": apple_health.write_xxe(tmp / "xxe.xml"),
        "zip traversal": _zip(tmp / "evil.zip", {"../../etc/evil.json": b"[]"}),
        "zip bomb": _zip(tmp / "bomb.zip", {"apple_health_export/export.xml": b"\0" * 3_000_000}),
        "invalid json": tmp / "bad.json",
        "json of the wrong shape": tmp / "Records.json",
        "gpx without namespace": tmp / "track.gpx",
        "empty file": tmp / "empty.xml",
        "directory": tmp / "a-folder",
        "missing file": tmp / "no-such-file.xml",
    }


def test_hostile_inputs_are_refused_and_change_nothing(ready, tmp_path: Path) -> None:
    before = state(ready)
    for label, path in hostile_inputs(tmp_path).items():
        extra = ["--max-inflate", "1000000"] if label == "zip bomb" else []
        result = ready("import", str(path), *extra)
        assert result.code == 1, (label, result.out, result.err)
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, (label, result.err)
        assert path.name in lines[0], (label, lines[0])
        assert "Traceback" not in result.err + result.out
        assert state(ready) == before, label


def test_xxe_never_reads_the_target(ready, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    result = ready("import", str(apple_health.write_xxe(tmp_path / "x.xml", str(secret))))
    assert result.code == 1
    assert "TOP-SECRET-CONTENT" not in result.out + result.err
    exported = tmp_path / "out.json"
    for dataset in json.loads(ready("datasets", "--json").out):
        ready("export", dataset["name"], "--out", str(exported), "--format", "json")
        assert "TOP-SECRET" not in exported.read_text()


def test_apple_health_zip_import_is_idempotent_and_summarised(ready, tmp_path: Path) -> None:
    export = apple_health.write_export_zip(tmp_path / "export.zip", n_records=40)
    first = json.loads(ready("import", str(export), "--json").out)
    assert set(first) == {"format", "file", "datasets", "added", "skipped", "seconds"}
    assert first["format"] == "apple_health" and first["added"] > 40
    assert "health.step_count" in first["datasets"]
    again = json.loads(ready("import", str(export), "--json").out)
    assert again["added"] == 0 and again["skipped"] == first["added"]


def test_datasets_stats_export_delete_and_their_log(ready, tmp_path: Path) -> None:
    export = apple_health.write_export_zip(tmp_path / "export.zip", n_records=40)
    ready("import", str(export))
    rows = json.loads(ready("datasets", "--json").out)
    names = {r["name"] for r in rows}
    assert {"health.step_count", "preferences.favourites"} <= names
    assert all(r["first"] is None or r["first"].endswith("Z") for r in rows)
    stats = json.loads(ready("stats", "health.step_count", "--json").out)
    assert set(stats) >= {"name", "records", "first", "last", "sum", "min", "max", "mean", "unit"}
    assert stats["unit"] == "count" and stats["min"] <= stats["mean"] <= stats["max"]
    if "location.points" in names:
        bbox = json.loads(ready("stats", "location.points", "--json").out)["bbox"]
        assert bbox[0] <= bbox[2] and bbox[1] <= bbox[3]
    out = tmp_path / "steps.csv"
    exported = ready("export", "health.step_count", "--out", str(out), "--format", "csv")
    assert exported.code == 0
    assert out.read_text().count("\n") == stats["records"] + 1
    assert ready("delete", "preferences.favourites", "--yes").code == 0
    log = json.loads(ready("log", "preferences.favourites", "--json").out)
    assert [e["action"] for e in log] == ["import", "delete"]
    step_log = json.loads(ready("log", "health.step_count", "--json").out)
    assert [e["action"] for e in step_log][-1] == "export"
    assert set(step_log[0]) == {
        "seq",
        "time",
        "actor",
        "action",
        "purpose",
        "consent",
        "task",
        "rows",
        "digest",
    }
    assert json.loads(ready("verify", "--json").out)["ok"]


def test_proof_round_trip_from_the_command_line(ready, tmp_path: Path) -> None:
    proof = ready("log", "preferences.favourites", "--proof", "0")
    assert proof.code == 0
    path = tmp_path / "proof.json"
    path.write_text(proof.out)
    assert ready("log", "check-proof", str(path)).code == 0
    edited = json.loads(proof.out)
    edited["entry"]["rows"] = 99
    path.write_text(json.dumps(edited))
    checked = ready("log", "check-proof", str(path))
    assert checked.code == 1 and "proof.json" in checked.err


def test_wrong_passphrase_exits_3_and_unknown_dataset_exits_1(ready) -> None:
    wrong = ready("datasets", env={"TESSERA_PASSPHRASE": "nope nope nope"})
    assert wrong.code == 3 and wrong.err.strip() == "error: wrong passphrase"
    missing = ready("stats", "health.nothing")
    assert missing.code == 1 and "health.nothing" in missing.err


def test_usage_errors_exit_2(ready) -> None:
    assert ready("import").code == 2
    assert ready("export", "preferences.favourites").code == 2
