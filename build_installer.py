"""Build the one-folder desktop bundle of Tessera with PyInstaller, and smoke-test it.

    python build_installer.py            # build dist/Tessera/ and the archive + SHA-256
    python build_installer.py --smoke    # build, then run the bundle from elsewhere
    python build_installer.py --smoke --skip-build

The bundle holds the `tessera` executable (the desktop app without arguments, the command line
with them), the Qt plugins it needs, SQLCipher, ONNX Runtime, didkit, the assets and the icon.
torch and every test or development tool stay out. The same script builds a `.app` on macOS and
a zip on Windows: everything platform-specific is chosen from `sys.platform` below.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DIST = ROOT / "dist"
BUNDLE = DIST / "Tessera"
NAME = "Tessera"

# Never in the bundle: the org-side SDK's torch, test and dev tools, and keyrings.alt (its
# plaintext backends must not even be importable by the vault app).
EXCLUDES = [
    "torch",
    "torchvision",
    "onnxscript",
    "onnx_ir",
    "pytest",
    "_pytest",
    "pytestqt",
    "hypothesis",
    "ruff",
    "healthkit_to_sqlite",
    "sqlite_utils",
    "keyrings",
    "IPython",
    "matplotlib",
    "tkinter",
    "PyInstaller",
    "sympy",
    "agents.sdk",
    # the exchange's PostgreSQL driver: organizations run the exchange, not the desktop app
    "psycopg",
    "psycopg_binary",
    "psycopg_pool",
    # Qt modules Tessera does not use
    "PySide6.QtWebEngineCore",
    "PySide6.QtWebEngineWidgets",
    "PySide6.Qt3DCore",
    "PySide6.QtQuick",
    "PySide6.QtQml",
    "PySide6.QtMultimedia",
    "PySide6.QtPdf",
    "PySide6.QtNetwork",
    "PySide6.QtSql",
    "PySide6.QtTest",
    "PySide6.QtDesigner",
    "PySide6.QtSvgWidgets",
]
PACKAGES = ["app", "vault", "agents", "identity"]  # commands load lazily: collect them all


def version() -> str:
    """The project version from vault/__init__.py."""
    namespace: dict[str, str] = {}
    exec((ROOT / "vault" / "__init__.py").read_text(), namespace)  # noqa: S102 - our own file
    return namespace["__version__"]


def platform_tag() -> str:
    """'linux-x86_64', 'macos-arm64', 'windows-amd64'."""
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    return f"{system}-{platform.machine().lower()}"


def executable() -> Path:
    """Path of the bundled executable."""
    if sys.platform == "darwin":
        return DIST / f"{NAME}.app" / "Contents" / "MacOS" / "tessera"
    return BUNDLE / ("tessera.exe" if sys.platform == "win32" else "tessera")


def build() -> None:
    """Run PyInstaller and add the desktop entry (Linux)."""
    import PyInstaller.__main__

    sep = os.pathsep
    icon = ROOT / "assets" / ("tessera.ico" if sys.platform == "win32" else "tessera.png")
    args = [
        str(ROOT / "app" / "launcher.py"),
        "--name",
        "tessera",
        "--contents-directory",
        "lib",
        "--onedir",
        "--noconfirm",
        "--clean",
        "--log-level",
        "WARN",
        "--distpath",
        str(DIST),
        "--workpath",
        str(ROOT / "build" / "pyinstaller"),
        "--specpath",
        str(ROOT / "build"),
        "--add-data",
        f"{ROOT / 'assets'}{sep}assets",
        "--collect-binaries",
        "sqlcipher3",
        "--collect-binaries",
        "onnxruntime",
        "--collect-data",
        "onnxruntime",
        "--collect-binaries",
        "didkit",
        "--collect-data",
        "zxcvbn",
        "--copy-metadata",
        "keyring",
        "--hidden-import",
        "keyring.backends.SecretService",
        "--hidden-import",
        "PySide6.QtOpenGL",  # pyqtgraph imports these two by name
        "--hidden-import",
        "PySide6.QtOpenGLWidgets",
        "--hidden-import",
        "keyring.backends.macOS",
        "--hidden-import",
        "keyring.backends.Windows",
    ]
    for package in PACKAGES:
        args += ["--collect-submodules", package]
    for module in EXCLUDES:
        args += ["--exclude-module", module]
    if icon.exists():
        args += ["--icon", str(icon)]
    if sys.platform == "darwin":
        args += ["--windowed", "--osx-bundle-identifier", "org.tessera.vault"]
    PyInstaller.__main__.run(args)
    produced = DIST / "tessera"
    if BUNDLE.exists():
        shutil.rmtree(BUNDLE)
    if sys.platform != "darwin":
        produced.rename(BUNDLE)
    if sys.platform.startswith("linux"):
        _strip_debug_symbols()
        _desktop_entry()


# Wheels that ship their extension with debug symbols (about 20 MB saved). Not PyInstaller's
# --strip: it strips auditwheel-patched libraries too (numpy's OpenBLAS) and breaks them.
UNSTRIPPED = ("sqlcipher3", "didkit", "cryptography")


def _strip_debug_symbols() -> None:
    strip = shutil.which("strip")
    if strip is None:
        return
    for package in UNSTRIPPED:
        for library in (BUNDLE / "lib" / package).rglob("*.so"):
            subprocess.run([strip, "--strip-unneeded", str(library)], check=True)


def _desktop_entry() -> None:
    (BUNDLE / "tessera.png").write_bytes((ROOT / "assets" / "tessera.png").read_bytes())
    (BUNDLE / "tessera.desktop").write_text(
        "[Desktop Entry]\nType=Application\nName=Tessera\n"
        "Comment=Your personal data vault\nExec=tessera\nIcon=tessera\n"
        "Categories=Utility;Security;\nTerminal=false\n",
        encoding="utf-8",
    )


def archive() -> Path:
    """Pack the bundle as tar.gz (zip on Windows) and write its SHA-256 file."""
    base = DIST / f"{NAME}-{version()}-{platform_tag()}"
    source = DIST / f"{NAME}.app" if sys.platform == "darwin" else BUNDLE
    if sys.platform == "win32":
        path = base.with_suffix(".zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
            for file in sorted(source.rglob("*")):
                out.write(file, file.relative_to(source.parent))
    else:
        path = Path(f"{base}.tar.gz")
        with tarfile.open(path, "w:gz") as out:
            out.add(source, arcname=source.name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return path


def size_report() -> dict[str, object]:
    """Unpacked size of the bundle and its largest parts."""
    # symlinks (PyInstaller links shared libraries into lib/) would count twice
    files = [p for p in BUNDLE.rglob("*") if p.is_file() and not p.is_symlink()]
    total = sum(p.stat().st_size for p in files)
    largest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:8]
    return {
        "bundle_mb": round(total / 1e6, 1),
        "largest": {str(p.relative_to(BUNDLE)): round(p.stat().st_size / 1e6, 1) for p in largest},
    }


def _clean_env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "QT_QPA_PLATFORM": "offscreen",
        "TESSERA_VAULT": str(home / "vault"),
        "TESSERA_PASSPHRASE": "smoke test passphrase",
        "TESSERA_KDF_TIME_COST": "1",
    }


def _run(args: list[str], env: dict[str, str], cwd: Path, expect: int = 0) -> str:
    result = subprocess.run(
        [str(executable()), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if result.returncode != expect:
        raise SystemExit(
            f"smoke: `tessera {' '.join(args)}` exited {result.returncode}, expected {expect}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return result.stdout


def _smoke_models(folder: Path) -> tuple[Path, Path]:
    """A small valid ONNX model and one with an external-data tensor (hostile)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((3, 2), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "smoke",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])],
        [weight],
    )
    good = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    good.ir_version = 8
    (folder / "good.onnx").write_bytes(good.SerializeToString())
    hostile = onnx.ModelProto()
    hostile.CopyFrom(good)
    tensor = hostile.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/passwd")
    (folder / "hostile.onnx").write_bytes(hostile.SerializeToString())
    return folder / "good.onnx", folder / "hostile.onnx"


def _first_window_ms(env: dict[str, str], cwd: Path, shots: Path) -> int:
    """Run `gui --screenshots`; return ms from launch until the first window was painted.

    The first screenshot (the unlock window) is written the moment that window has painted,
    so its appearance marks a cold start to the first window.
    """
    first = shots / "01-unlock.png"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(executable()), "gui", "--screenshots", str(shots)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    painted = None
    while proc.poll() is None and painted is None:
        if first.exists():
            painted = time.perf_counter()
        time.sleep(0.005)
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise SystemExit(
            f"smoke: `tessera gui --screenshots` exited {proc.returncode}:\n{err[-2000:]}"
        )
    if painted is None:
        painted = time.perf_counter()
    return round((painted - started) * 1000)


def smoke() -> dict[str, object]:
    """Run the built bundle from a temp folder with a clean environment; fail on any error."""
    with tempfile.TemporaryDirectory(prefix="tessera-smoke-") as tmp:
        home = Path(tmp)
        env = _clean_env(home)
        started = time.perf_counter()
        out = _run(["--version"], env, home)
        cold_version_ms = round((time.perf_counter() - started) * 1000)
        assert version() in out, out
        _run(["init"], env, home)
        gpx = home / "walk.gpx"
        gpx.write_text(
            '<?xml version="1.0"?><gpx version="1.1" creator="smoke"'
            ' xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
            '<trkpt lat="48.1371" lon="11.5754"><time>2024-01-01T08:00:00Z</time></trkpt>'
            '<trkpt lat="48.1372" lon="11.5756"><time>2024-01-01T08:01:00Z</time></trkpt>'
            "</trkseg></trk></gpx>",
            encoding="utf-8",
        )
        summary = json.loads(_run(["import", str(gpx), "--json"], env, home))
        assert summary["added"] == 2, summary
        assert json.loads(_run(["verify", "--json"], env, home))["ok"]
        good, hostile = _smoke_models(home)
        _run(["task", "validate", str(good)], env, home)
        _run(["task", "validate", str(hostile)], env, home, expect=1)
        shots = home / "shots"
        first_window_ms = _first_window_ms(env, home, shots)
        pngs = sorted(p.name for p in shots.glob("*.png"))
        assert pngs, "no screenshots were written"
        return {
            "smoke": "ok",
            "cold_version_ms": cold_version_ms,
            "cold_first_window_ms": first_window_ms,
            "screenshots": len(pngs),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="smoke-test the bundle")
    parser.add_argument("--skip-build", action="store_true", help="reuse dist/Tessera")
    args = parser.parse_args()
    report: dict[str, object] = {"version": version(), "platform": platform_tag()}
    if not args.skip_build:
        started = time.perf_counter()
        build()
        report["archive"] = str(archive().relative_to(ROOT))
        report["build_s"] = round(time.perf_counter() - started, 1)
    if not executable().exists():
        raise SystemExit(f"no bundle at {executable()}: build it first")
    report.update(size_report())
    if args.smoke:
        report.update(smoke())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
