"""`tessera gui --screenshots DIR --demo` renders every main screen at 1280x800."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = "import sys; from app.cli import main; main(sys.argv[1:])"
REQUIRED = [
    "01-unlock",
    "02-overview",
    "03-data",
    "04-dataset-chart",
    "05-import-progress",
    "06-requests",
    "07-request-detail",
    "08-consents",
    "09-history-verify",
    "10-tasks",
    "11-rewards",
    "12-settings",
]


@pytest.mark.slow
def test_screenshots_with_demo(tmp_path: Path) -> None:
    from PySide6.QtGui import QImage

    out = tmp_path / "shots"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TESSERA_VAULT": str(tmp_path / "v")}
    result = subprocess.run(
        [sys.executable, "-c", CLI, "gui", "--screenshots", str(out), "--demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in REQUIRED:
        image = QImage(str(out / f"{name}.png"))
        assert not image.isNull(), name
        assert (image.width(), image.height()) == (1280, 800), name
    assert not (tmp_path / "v").exists()  # the demo never touches the real vault folder
