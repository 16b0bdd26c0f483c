"""Task packages: deterministic bytes, a content address, and refusal of damaged or hostile zips."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agents import package as pkg
from agents.package import package_address, read_package, write_package
from agents.task_schema import check_task, graph_io
from tests.fixtures import hostile_models as hm
from vault.errors import ModelRefused

PARAMS = {"w": np.array([0.5, -1.0, 2.0], dtype=np.float32)}
OUTER = {"name": "w", "shape": [1, 3], "dtype": "float32", "grad": "outer", "positions": 1}


@pytest.fixture
def good(tmp_path: Path) -> bytes:
    """The bytes of a valid linear-regression package."""
    path = tmp_path / "good.tpkg"
    write_package(path, hm.linear_task(), hm.linear_task_model(), PARAMS)
    return path.read_bytes()


def _task_json(data: bytes) -> dict:
    return json.loads(zipfile.ZipFile(io.BytesIO(data)).read("task.json"))


def _with_task(data: bytes, **changes) -> bytes:
    """The package with task.json fields changed (hashes kept, so only the schema is judged)."""
    task = {**_task_json(data), **changes}
    return hm.rewrite_zip(data, {"task.json": json.dumps(task).encode()})


def test_round_trip(tmp_path: Path):
    path = tmp_path / "t.tpkg"

    address = write_package(path, hm.linear_task(), hm.linear_task_model(), PARAMS)
    loaded = read_package(path)

    assert address == loaded.address == package_address(path.read_bytes())
    assert address == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.model_bytes == hm.linear_task_model()
    np.testing.assert_array_equal(loaded.params["w"], PARAMS["w"])
    assert loaded.params["w"].dtype == np.float32
    files = loaded.task["files"]
    assert files["model.onnx"] == hashlib.sha256(loaded.model_bytes).hexdigest()
    assert read_package(path.read_bytes()).address == address


def test_identical_content_gives_identical_bytes(tmp_path: Path):
    a, b = tmp_path / "a.tpkg", tmp_path / "b.tpkg"

    write_package(a, hm.linear_task(), hm.linear_task_model(), PARAMS)
    write_package(b, dict(hm.linear_task()), hm.linear_task_model(), {"w": PARAMS["w"].copy()})

    assert a.read_bytes() == b.read_bytes()
    infos = zipfile.ZipFile(a).infolist()
    assert [i.filename for i in infos] == ["model.onnx", "params.npz", "task.json"]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}


def test_params_npz_is_a_plain_npz(good: bytes):
    npz = zipfile.ZipFile(io.BytesIO(good)).read("params.npz")

    with np.load(io.BytesIO(npz), allow_pickle=False) as loaded:
        np.testing.assert_array_equal(loaded["w"], PARAMS["w"])


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path):
    path = tmp_path / "t.tpkg"
    path.write_bytes(b"old")

    with pytest.raises(ModelRefused):
        write_package(path, hm.linear_task(), hm.linear_task_model(), {"w": np.zeros(4)})

    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.tpkg"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"w": np.zeros(4)}, re.escape("declared float32[3]")),
        ({"v": np.zeros(3)}, "params do not match task.json"),
        ({"w": np.array([1.0, np.nan, 0.0])}, "NaN or Inf"),
        ({"w": np.array(["a", "b", "c"])}, "not numeric"),
    ],
)
def test_write_refuses_bad_params(tmp_path: Path, params, reason: str):
    with pytest.raises(ModelRefused, match=reason):
        write_package(tmp_path / "t.tpkg", hm.linear_task(), hm.linear_task_model(), params)


def test_hash_mismatch_for_model(good: bytes):
    with pytest.raises(ModelRefused, match="^package hash mismatch for model.onnx$"):
        read_package(hm.tampered_package(good))


def test_hash_mismatch_for_params(good: bytes):
    other = io.BytesIO()
    np.savez(other, w=np.ones(3, dtype=np.float32))

    with pytest.raises(ModelRefused, match="package hash mismatch for params.npz"):
        read_package(hm.rewrite_zip(good, {"params.npz": other.getvalue()}))


@pytest.mark.parametrize(
    ("replace", "add", "reason"),
    [
        ({"params.npz": None}, {}, "members must be exactly"),
        ({}, {"extra.txt": b"hi"}, "members must be exactly"),
        ({}, {"model.onnx": b"second copy"}, "members must be exactly"),
        ({}, {"../../etc/cron.d/x": b"* * * * * root sh"}, "unsafe path"),
        ({}, {"/abs/path": b"x"}, "unsafe path"),
    ],
)
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_member_list_must_be_exact(good: bytes, replace, add, reason):
    with pytest.raises(ModelRefused, match=reason):
        read_package(hm.rewrite_zip(good, replace, add))


@pytest.mark.parametrize(
    "data", [b"", b"not a zip", b"PK\x03\x04garbage", hm.linear_task_model()], ids=str
)
def test_not_a_package(data: bytes):
    with pytest.raises(ModelRefused, match="not a task package"):
        read_package(data)


def test_declared_sizes_over_the_limit_refused(good: bytes, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pkg, "MAX_MODEL_BYTES", 100)

    with pytest.raises(ModelRefused, match="model.onnx declares .* over the limit of 100"):
        read_package(good)


def test_sizes_that_disagree_with_the_data_refused(good: bytes):
    # the central directory understates model.onnx: zipfile reads the declared bytes only and
    # the CRC no longer matches, so the member is reported damaged rather than half-read
    data = bytearray(good)
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46 : entry + 46 + 10] != b"model.onnx":
        entry = data.index(b"PK\x01\x02", entry + 4)
    size = int.from_bytes(data[entry + 24 : entry + 28], "little")
    for offset in (20, 24):  # compressed and uncompressed size
        data[entry + offset : entry + offset + 4] = (size - 10).to_bytes(4, "little")

    with pytest.raises(ModelRefused, match="model.onnx is damaged"):
        read_package(bytes(data))


def test_deflate_bomb_in_params_refused(good: bytes):
    # params.npz whose member inflates far beyond what the declared shape allows
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("w.npy", b"\0" * (50 * 1024**2))
    data = hm.rewrite_zip(good, {"params.npz": bomb.getvalue()})
    fixed = _with_task(
        data,
        files={
            "model.onnx": _task_json(good)["files"]["model.onnx"],
            "params.npz": hashlib.sha256(bomb.getvalue()).hexdigest(),
        },
    )

    with pytest.raises(ModelRefused, match="params.npz:w.npy declares"):
        read_package(fixed)


def test_pickled_params_refused(good: bytes):
    evil = io.BytesIO()
    np.save(evil, np.array([object(), 1, 2], dtype=object), allow_pickle=True)
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("w.npy", evil.getvalue())
    files = {**_task_json(good)["files"], "params.npz": hashlib.sha256(npz.getvalue()).hexdigest()}
    data = _with_task(hm.rewrite_zip(good, {"params.npz": npz.getvalue()}), files=files)

    with pytest.raises(ModelRefused, match=re.escape("params.npz:w.npy is object[3], declared")):
        read_package(data)


def _with_npy(good: bytes, npy: bytes) -> bytes:
    """The package with params.npz holding ``npy`` as w.npy, hashes updated."""
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("w.npy", npy)
    files = {**_task_json(good)["files"], "params.npz": hashlib.sha256(npz.getvalue()).hexdigest()}
    return _with_task(hm.rewrite_zip(good, {"params.npz": npz.getvalue()}), files=files)


def test_npy_header_declaring_a_huge_shape_refused_before_allocation(good: bytes):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    )

    with pytest.raises(ModelRefused, match=re.escape("is float32[1099511627776], declared")):
        read_package(_with_npy(good, header.getvalue() + b"\0" * 12))


def test_npy_with_short_data_refused(good: bytes):
    array = io.BytesIO()
    np.save(array, np.zeros(3, dtype="<f4"))

    with pytest.raises(ModelRefused, match="holds 8 bytes of data"):
        read_package(_with_npy(good, array.getvalue()[:-4]))


def test_big_endian_params_refused(good: bytes):
    array = io.BytesIO()
    np.save(array, np.zeros(3, dtype=">f4"))

    with pytest.raises(ModelRefused, match="declared float32"):
        read_package(_with_npy(good, array.getvalue()))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"format": "tessera-task/2"}, "format must be"),
        ({"surprise": 1}, "unexpected"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"loss": "hinge"}, "loss must be one of"),
        ({"params": []}, "params must be a non-empty list"),
        ({"params": [{"name": "../w", "shape": [3], "dtype": "float32"}]}, "bad name"),
        ({"params": [{"name": "features", "shape": [3], "dtype": "float32"}]}, "bad name"),
        ({"params": [{"name": "w", "shape": [3, -1], "dtype": "float32"}]}, "positive"),
        ({"params": [{"name": "w", "shape": [3], "dtype": "float64"}]}, "must be float32"),
        ({"params": [{"name": "w", "shape": [2**40], "dtype": "float32"}]}, "too large"),
        ({"label": {"field": "y", "dtype": "int64", "classes": None}}, "float32 labels"),
        ({"features": {"recipe": "r", "shape": [], "dtype": "float32"}}, "at least one"),
        ({"files": {"model.onnx": "x"}}, "files keys wrong"),
        ({"params": [{**OUTER, "shape": [3]}]}, "grad 'outer' but is not 2-D"),
        ({"params": [{**OUTER, "shape": [1, 3, 1]}]}, "grad 'outer' but is not 2-D"),
        ({"params": [{**OUTER, "grad": "sparse"}]}, r"params\[0\]\.grad must be one of"),
        ({"params": [{**OUTER, "grad": ["outer"]}]}, "grad must be one of"),
        ({"params": [{**OUTER, "positions": 0}]}, "needs positions >= 1"),
        ({"params": [{**OUTER, "positions": True}]}, "needs positions >= 1"),
        ({"params": [{**OUTER, "positions": 1.0}]}, "needs positions >= 1"),
        ({"params": [{**OUTER, "positions": 2**30}]}, "factors of parameter 'w' are too large"),
        ({"params": [{k: v for k, v in OUTER.items() if k != "positions"}]}, "missing"),
        ({"params": [{**OUTER, "grad": "dense"}]}, r"unexpected \['positions'\]"),
        (
            {"params": [{"name": "w", "shape": [3], "dtype": "float32", "positions": 1}]},
            "unexpected",
        ),
    ],
)
def test_task_json_schema(good: bytes, changes: dict, reason: str):
    with pytest.raises(ModelRefused, match=reason):
        read_package(_with_task(good, **changes))


def test_task_json_factored_params_and_their_graph_io():
    task = {
        **hm.linear_task(batch=4),
        "params": [
            {**OUTER, "shape": [2, 3]},
            {"name": "b", "shape": [2], "dtype": "float32", "grad": "dense"},
            {**OUTER, "name": "v", "shape": [5, 2], "positions": 7},
        ],
    }

    check_task(task)
    inputs, outputs = graph_io(task)

    assert [i["name"] for i in inputs] == ["w", "b", "v", "features", "labels", "mask"]
    assert [(o["name"], o["shape"]) for o in outputs] == [
        ("losses", [4]),
        ("act.w", [4, 3]),
        ("sig.w", [4, 2]),
        ("grad.b", [4, 2]),
        ("act.v", [4, 7, 2]),
        ("sig.v", [4, 7, 5]),
    ]


def test_task_json_duplicate_keys_and_nan_refused(good: bytes):
    raw = zipfile.ZipFile(io.BytesIO(good)).read("task.json")
    twice = raw[:-1] + b',"loss":"bce"}'
    with pytest.raises(ModelRefused, match="appears twice"):
        read_package(hm.rewrite_zip(good, {"task.json": twice}))
    nan = raw.replace(b'"flops_per_example":12', b'"flops_per_example":NaN')
    with pytest.raises(ModelRefused, match="NaN"):
        read_package(hm.rewrite_zip(good, {"task.json": nan}))


def test_package_module_does_not_parse_onnx():
    # a package with a non-ONNX model reads fine: judging the model is the validator's job
    import agents.package as module

    assert "onnx" not in module.__dict__
