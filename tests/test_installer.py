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
