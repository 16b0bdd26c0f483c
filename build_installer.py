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
import contextlib
import fnmatch
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    # pyqtgraph's 3-D widgets (PyOpenGL); its 2-D charts stay
    "pyqtgraph.opengl",
    # dp-accounting's PLD half: agents/accounting.py loads only the RDP accountant, which needs
    # scipy.special alone (the rest of SciPy, about 40 MB, is left out in build())
    "dp_accounting.pld",
    "dp_accounting.mechanism_calibration",
    "scipy.special.cython_special",
    "readline",
    # lxml's other APIs: the importers use lxml.etree only
    "lxml.objectify",
    "lxml.html",
    "lxml.isoschematron",
    "lxml.sax",
    # packaging tools and rich's syntax highlighter (Tessera prints no highlighted code)
    "setuptools",
    "pkg_resources",
    "distutils",
    "_distutils_hack",
    "pygments",
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


def _own_modules(excludes: list[str]) -> list[str]:
    """Every module of PACKAGES (the CLI loads its commands lazily) but the excluded ones."""
    import pkgutil

    modules = []
    for package in PACKAGES:
        modules.append(package)
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if not any(info.name == x or info.name.startswith(f"{x}.") for x in excludes):
                modules.append(info.name)
    return modules


def _scipy_unused() -> list[str]:
    """Every SciPy subpackage but special (and the _lib it imports)."""
    import pkgutil

    import scipy

    keep = {"special", "_lib"}
    return [
        f"scipy.{m.name}"
        for m in pkgutil.iter_modules(scipy.__path__)
        if m.ispkg and m.name not in keep
    ]


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
        "PySide6.QtOpenGL",  # pyqtgraph's charts import these two by name
        "--hidden-import",
        "PySide6.QtOpenGLWidgets",
        "--hidden-import",
        "keyring.backends.macOS",
        "--hidden-import",
        "keyring.backends.Windows",
    ]
    excludes = EXCLUDES + _scipy_unused()
    for module in _own_modules(excludes):
        args += ["--hidden-import", module]
    for module in excludes:
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
        _slim_linux()
        _desktop_entry()


# Parts of the wheels that Tessera never loads, as globs under lib/ (Linux).
UNUSED = [
    # ONNX Runtime's C API library (35 MB): the Python binding has ONNX Runtime built in
    "onnxruntime/capi/libonnxruntime.so*",
    # Qt's own translations: Tessera's interface is English only
    "PySide6/Qt/translations",
    # GTK theming (it alone pulls in GTK 3, cairo and pango); Qt draws its own style
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
    # OpenGL buffer integrations: Tessera paints in software
    "PySide6/Qt/plugins/xcbglintegrations",
    "PySide6/Qt/plugins/wayland-graphics-integration-client",
    # embedded, framebuffer and remote displays, raw input devices: a desktop app runs on
    # X11 or Wayland (offscreen for screenshots)
    "PySide6/Qt/plugins/egldeviceintegrations",
    "PySide6/Qt/plugins/generic",
    *(
        f"PySide6/Qt/plugins/platforms/libq{name}.so"
        for name in ("eglfs", "linuxfb", "minimal", "minimalegl", "vkkhrdisplay", "vnc")
    ),
    # image formats Tessera never shows (PNG is built in; SVG, ICO and JPEG stay)
    *(
        f"PySide6/Qt/plugins/imageformats/libq{name}.so"
        for name in ("gif", "icns", "tga", "tiff", "wbmp", "webp")
    ),
]
# ICU data items Qt never asks for. Qt calls ICU only for case mapping, collation, time-zone
# names and legacy text codecs (`nm -D --undefined-only` of its libraries: u_strTo*, ucol_*,
# ucal_*, ucnv_*); Qt 6 on Unix treats the locale's 8-bit encoding as UTF-8 itself, and
# Tessera decodes files in Python, so the legacy codecs (*.cnv) go as well.
ICU_UNUSED = ("brkitr/*", "unit/*", "curr/*", "lang/*", "translit/*", "rbnf/*", "*.cnv",
              "unames.icu", "confusables.cfu", "*.spp", "uts46.nrm")  # fmt: skip
# Loaded with dlopen, not through DT_NEEDED: never pruned as unlinked.
DLOPENED = ("libpython",)
# Libraries that ship with debug symbols: pyenv-style Python builds and some wheels (about
# 45 MB). Not PyInstaller's --strip: it strips auditwheel-patched libraries too (numpy's
# OpenBLAS) and breaks them.
UNSTRIPPED = ("sqlcipher3/**/*.so", "didkit/**/*.so", "cryptography/**/*.so", "libpython3*.so*",
              "python3*/lib-dynload/*.so", "PySide6/Qt/lib/libicu*.so.*")  # fmt: skip


def _slim_linux() -> None:
    lib = BUNDLE / "lib"
    for pattern in UNUSED:
        for path in lib.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    _prune_unlinked_libraries(lib)
    for library in (lib / "PySide6" / "Qt" / "lib").glob("libicudata.so.*"):
        _slim_icu_data(library)
    _link_duplicates(lib)
    strip = shutil.which("strip")
    if strip is not None:
        for pattern in UNSTRIPPED:
            for library in lib.glob(pattern):
                if library.is_file() and not library.is_symlink():
                    subprocess.run([strip, "--strip-unneeded", str(library)], check=True)


def _slim_icu_data(library: Path) -> None:
    """Rebuild ICU's data library without ICU_UNUSED (32 -> 12 MB): icupkg, genccode, cc.

    Skipped, with a note, where ICU's tools (Debian: icu-devtools) or a C compiler are missing.
    """
    tools = {name: shutil.which(name) for name in ("icupkg", "genccode", "cc", "objcopy", "nm")}
    if not all(tools.values()):
        missing = ", ".join(name for name, path in tools.items() if not path)
        print(f"note: ICU data left whole ({missing} not found)", file=sys.stderr)
        return
    symbols = subprocess.run(
        [tools["nm"], "--dynamic", "--defined-only", str(library)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    entry = next(name for name in symbols if name.startswith("icudt") and name.endswith("_dat"))
    package = entry.removesuffix("_dat") + "l"  # icudt73l: the item prefix ICU looks up
    with tempfile.TemporaryDirectory(prefix="tessera-icu-") as tmp:
        work = Path(tmp)
        whole, slim = work / f"{package}.dat", work / "slim" / f"{package}.dat"
        slim.parent.mkdir()
        # the library holds nothing but the data blob, as its whole .rodata section
        subprocess.run(
            [tools["objcopy"], "-O", "binary", "--only-section=.rodata", str(library), str(whole)],
            check=True,
        )
        listed = subprocess.run(
            [tools["icupkg"], "-l", str(whole)], capture_output=True, text=True, check=True
        ).stdout.split()
        unused = [item for item in listed if any(fnmatch.fnmatch(item, p) for p in ICU_UNUSED)]
        (work / "unused.txt").write_text("\n".join(unused) + "\n", encoding="utf-8")
        # the output file's name is the package name recorded in it: it must stay icudtNNl
        subprocess.run([tools["icupkg"], "-r", str(work / "unused.txt"), str(whole), str(slim)],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([tools["genccode"], "-a", "gcc", "-e", entry.removesuffix("_dat"),
                        "-d", str(work), "-f", "icudata", str(slim)],
                       check=True, capture_output=True)  # fmt: skip
        built = work / library.name
        subprocess.run(
            [tools["cc"], "-shared", "-nostdlib", f"-Wl,-soname,{library.name}",
             "-Wl,-z,noexecstack", "-o", str(built), str(work / "icudata.S")],
            check=True,
        )  # fmt: skip
        shutil.copyfile(built, library)


def _link_duplicates(lib: Path) -> None:
    """Make byte-identical copies (wheels vendoring the same libgfortran) relative symlinks."""
    first: dict[tuple[int, str], Path] = {}
    for path in sorted(lib.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.stat().st_size < 1 << 16:
            continue
        key = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        if key in first:
            path.unlink()
            path.symlink_to(os.path.relpath(first[key], path.parent))
        else:
            first[key] = path


def _needed(path: Path) -> list[str]:
    """The DT_NEEDED names of an ELF file (readelf ships with binutils, as PyInstaller needs)."""
    out = subprocess.run(
        ["readelf", "--dynamic", "--wide", str(path)], capture_output=True, text=True, check=False
    ).stdout
    return [line.rsplit("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def _is_elf(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) == b"\x7fELF"


def _prune_unlinked_libraries(lib: Path) -> None:
    """Remove the shared libraries PyInstaller collected for what UNUSED took out.

    Candidates are the system libraries at the top of lib/ and Qt's own libraries; one stays
    if any file that stays (extension module, plugin, executable, or a kept library) lists it
    in DT_NEEDED, followed to a fixed point.
    """
    files = [p for p in [*lib.rglob("*"), executable()] if p.is_file() and not p.is_symlink()]
    elves = {p: _needed(p) for p in files if _is_elf(p)}
    candidates = {
        p for p in elves if p.parent in (lib, lib / "PySide6" / "Qt" / "lib")
        and p.name.startswith("lib") and ".so" in p.name  # not a Python extension module
        and not p.name.startswith(DLOPENED)
    }  # fmt: skip
    by_name: dict[str, list[Path]] = {}
    for path in candidates:
        by_name.setdefault(path.name, []).append(path)
    for link in lib.iterdir():  # lib/libQt6Core.so.6 -> PySide6/Qt/lib/libQt6Core.so.6
        if link.is_symlink() and link.resolve() in candidates:
            by_name.setdefault(link.name, []).append(link.resolve())
    kept = [p for p in elves if p not in candidates]
    reached: set[Path] = set()
    while kept:
        for name in elves[kept.pop()]:
            for target in by_name.get(name, []):
                if target not in reached:
                    reached.add(target)
                    kept.append(target)
    for path in candidates - reached:
        path.unlink()
    for link in lib.iterdir():
        if link.is_symlink() and not link.exists():
            link.unlink()


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


def _smoke_training(
    folder: Path, width: int | None = None, rows: int = 200, factored: bool = False
) -> tuple[Path, Path]:
    """A task package (the demo's linear model, no torch; ``width`` inputs, six by default;
    ``factored``: its weight's gradient as factors) and ``rows`` rows of training data."""
    import numpy as np

    from app.gui.demo_exchange import FEATURES, task_package

    width = width or FEATURES
    package, data = folder / f"task{width}.tpkg", folder / f"train{width}.npz"
    package.write_bytes(task_package("steps", width, factored))
    rng = np.random.default_rng(0)
    features = rng.standard_normal((rows, width)).astype(np.float32)
    np.savez(data, features=features, labels=features @ np.arange(width, dtype=np.float32))
    return package, data


def _smoke_rounds(
    package: Path, data: Path, rounds: int, env: dict[str, str], home: Path
) -> dict[str, Any]:
    """`tessera task run PACKAGE --data DATA --rounds N --local-steps 3 --json`, parsed."""
    args = ["task", "run", str(package), "--data", str(data), "--rounds", str(rounds)]
    return json.loads(_run([*args, "--local-steps", "3", "--json"], env, home))


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


@contextlib.contextmanager
def _x_server() -> Iterator[str | None]:
    """A throwaway Xvfb display (":N"), or None where Xvfb is not installed."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None or not sys.platform.startswith("linux"):
        yield None
        return
    read, write = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        with os.fdopen(read) as display:
            yield f":{display.readline().strip()}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _x11_screenshots(env: dict[str, str], cwd: Path) -> int | None:
    """Screenshots through Qt's X11 platform plugin on Xvfb (what a Linux desktop loads)."""
    with _x_server() as display:
        if display is None:
            return None
        shots = cwd / "shots-x11"
        _run(
            ["gui", "--screenshots", str(shots)],
            {**env, "QT_QPA_PLATFORM": "xcb", "DISPLAY": display},
            cwd,
        )
        return len(list(shots.glob("*.png")))


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
        # a real DP-SGD round: the bundle starts itself as the sandboxed child, runs ONNX
        # Runtime there and accounts privacy with dp-accounting
        # with its weight's gradient as factors (ghost clipping), as the SDK exports MLPs, so
        # SGD's update of the weight can run inside its gradient matmul (agents.dpsgd)
        package, data = _smoke_training(home, factored=True)
        trained = _smoke_rounds(package, data, 2, env, home)
        assert len(trained["rounds"]) == 2 and 0 < trained["epsilon_spent"] < 10, trained
        assert trained["noise_drawn_by"] == "in process", trained  # 7 parameters
        # SGD's update inside the weight's matmul: numpy's BLAS found through ctypes
        assert trained["fused_sgd_update"] is True, trained
        # a model big enough for the noise helper: the bundle starts itself as that too
        from agents.noise import HELPER_MIN_VALUES, cores_available

        package, data = _smoke_training(home, HELPER_MIN_VALUES, rows=16)
        wide = _smoke_rounds(package, data, 1, env, home)
        helper = "helper process" if cores_available() > 1 else "in process"
        assert wide["noise_drawn_by"] == helper and len(wide["rounds"]) == 1, wide
        shots = home / "shots"
        first_window_ms = _first_window_ms(env, home, shots)
        pngs = sorted(p.name for p in shots.glob("*.png"))
        assert pngs, "no screenshots were written"
        x11_screenshots = _x11_screenshots(env, home)
        assert x11_screenshots is None or x11_screenshots == len(pngs), x11_screenshots
        return {
            "smoke": "ok",
            "cold_version_ms": cold_version_ms,
            "cold_first_window_ms": first_window_ms,
            "sandbox": {k: trained[k] for k in ("network_isolation", "syscall_filter")},
            "noise_drawn_by": {
                "7 parameters": trained["noise_drawn_by"],
                f"{HELPER_MIN_VALUES + 1} parameters": wide["noise_drawn_by"],
            },
            "screenshots": len(pngs),
            "x11_screenshots": x11_screenshots if x11_screenshots is not None else "no Xvfb",
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
