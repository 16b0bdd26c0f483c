"""The desktop bundle's smoke test: runs when dist/Tessera exists; CI builds it once.

`python build_installer.py --smoke` runs the bundle from another folder with a clean
environment (no .venv, no source tree): --version, init, import, verify, task validate of a
good and a hostile model, two DP-SGD rounds of a small task, and GUI screenshots offscreen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "dist" / "Tessera" / "tessera"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_bundle_smoke() -> None:
    build = os.environ.get("CI") == "true" or os.environ.get("TESSERA_BUILD_INSTALLER") == "1"
    if not build and not BUNDLE.exists():
        pytest.skip("no bundle in dist/Tessera (run `make installer`; CI builds it)")
    args = [sys.executable, str(ROOT / "build_installer.py"), "--smoke"]
    if not build:
        args.append("--skip-build")
    result = subprocess.run(args, capture_output=True, text=True, timeout=1400, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["smoke"] == "ok"
    assert report["screenshots"] >= 12
    assert report["bundle_mb"] < 300, report["largest"]


QT_ICU_CHECK = """
from PySide6.QtCore import QCollator, QLocale, QStringDecoder, QTimeZone
order = lambda locale: sorted(["z", "ä", "a"], key=QCollator(QLocale(locale)).sortKey)
assert order("de_DE") == ["a", "ä", "z"], order("de_DE")
assert order("sv_SE") == ["a", "z", "ä"], order("sv_SE")
assert QLocale("tr_TR").toUpper("i") == "İ"
berlin = QTimeZone(b"Europe/Berlin")
name = berlin.displayName(QTimeZone.StandardTime, QTimeZone.LongName, QLocale("en_US"))
assert name == "Central European Standard Time", name
print(QStringDecoder("Shift-JIS").isValid())
"""


def test_slimmed_icu_data_keeps_what_qt_uses(tmp_path: Path) -> None:
    """Collation, case mapping and zone names work on the rebuilt ICU data; legacy codecs go."""
    import shutil

    import PySide6

    import build_installer

    if not all(shutil.which(tool) for tool in ("icupkg", "genccode", "cc", "objcopy", "nm")):
        pytest.skip("ICU's tools (icu-devtools) or a C compiler are missing")
    original = next((Path(PySide6.__file__).parent / "Qt" / "lib").glob("libicudata.so.*"))
    slim = tmp_path / original.name
    shutil.copyfile(original, slim)
    build_installer._slim_icu_data(slim)
    assert slim.stat().st_size < original.stat().st_size / 2
    # preloaded, the slim library answers Qt's DT_NEEDED for its soname instead of the wheel's
    env = {**os.environ, "LD_PRELOAD": str(slim), "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run(
        [sys.executable, "-c", QT_ICU_CHECK], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"  # the legacy codecs were left out
