"""Task packages (``.tpkg``): the format an organization ships and the vault reads.

A package is a zip (stored, fixed 1980-01-01 timestamps, sorted names, so identical content
gives identical bytes) with exactly three members:

- ``task.json``: canonical JSON, ``format: tessera-task/1`` (schema in
  :func:`agents.task_schema.check_task`);
- ``model.onnx``: inputs = one per parameter (named as in ``task.json``), then ``features``
  [B, *features.shape] float32, ``labels`` [B] (label.dtype), ``mask`` [B] float32; outputs =
  ``losses`` [B] float32, then per parameter either ``grad.<param>`` [B, *param shape] float32
  (the default, ``grad: dense``) or, for a 2-D weight [P, Q] declared ``grad: outer`` with
  ``positions`` T, the factors ``act.<param>`` [B, Q] and ``sig.<param>`` [B, P] ([B, T, Q]
  and [B, T, P] when T > 1) whose per-position outer products sum to each example's gradient
  (:func:`agents.task_schema.graph_io` lists them; the vault clips from the factors);
- ``params.npz``: the initial parameters, float32, one ``<name>.npy`` per parameter, no pickles.

The package address is ``sha256:`` + the SHA-256 of the package bytes. Reading treats the bytes
as hostile: sizes are checked on what the zip declares and on what is actually read, member
names must be exactly the three above, and every hash in ``task.json`` must match. This module
does not parse ONNX; ``agents/validator.py`` does. It never imports torch.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.task_schema import MAX_MODEL_BYTES, check_task, parse_task
from identity.keys import canonical_json
from vault.errors import ModelRefused
from vault.fsutil import atomic_write

MEMBERS = ("model.onnx", "params.npz", "task.json")
MAX_TOTAL_BYTES = 512 * 1024**2
MAX_TASK_JSON_BYTES = 1024**2
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class TaskPackage:
    """A package that passed every check of :func:`read_package`."""

    task: dict[str, Any]
    model_bytes: bytes
    params: dict[str, np.ndarray]
    address: str


def package_address(data: bytes) -> str:
    """The address of a package: ``sha256:`` + the hex SHA-256 of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# zipfile and numpy raise many types on crafted input (BadZipFile, NotImplementedError for
# unknown versions and flags, struct.error, EOFError, ...): all mean "refused"
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    ValueError,
    OSError,
    EOFError,
    KeyError,
    struct.error,
)

# --------------------------------------------------------------------------------- params.npz


def _stored_zip(members: dict[str, bytes]) -> bytes:
    """Deterministic zip bytes: stored members in sorted order with fixed metadata."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # the default depends on the OS writing it
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name])
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _coerce_params(task: dict[str, Any], params: dict[str, Any]) -> dict[str, np.ndarray]:
    declared = [spec["name"] for spec in task["params"]]
    if set(params) != set(declared):
        raise ModelRefused(
            f"params do not match task.json: got {sorted(params)}, declared {sorted(declared)}"
        )
    out: dict[str, np.ndarray] = {}
    for spec in task["params"]:
        value = np.asarray(params[spec["name"]])
        if value.dtype.kind not in "fiu":
            raise ModelRefused(f"parameter {spec['name']!r} is not numeric ({value.dtype})")
        array = np.ascontiguousarray(value, dtype=np.float32)
        _check_param_array(spec, array)
        out[spec["name"]] = array
    return out


def _check_param_array(spec: dict[str, Any], array: np.ndarray) -> None:
    if array.dtype != np.float32 or list(array.shape) != spec["shape"]:
        raise ModelRefused(
            f"parameter {spec['name']!r} is {array.dtype}{list(array.shape)}, "
            f"declared float32{spec['shape']}"
        )
    if not np.all(np.isfinite(array)):
        raise ModelRefused(f"parameter {spec['name']!r} holds NaN or Inf")


def _parse_npy(raw: bytes, spec: dict[str, Any], where: str) -> np.ndarray:
    """A float32 array from .npy bytes, its header checked before any allocation.

    np.load would allocate whatever shape the header declares and could unpickle objects;
    here the header must declare exactly the parameter's shape as little-endian float32.
    """
    stream = io.BytesIO(raw)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ModelRefused(f"{where} has an unsupported .npy version {version}")
    if dtype != np.dtype("<f4") or list(shape) != spec["shape"]:
        raise ModelRefused(f"{where} is {dtype}{list(shape)}, declared float32{spec['shape']}")
    body = raw[stream.tell() :]
    if len(body) != 4 * math.prod(spec["shape"]):
        raise ModelRefused(f"{where} holds {len(body)} bytes of data, its header declares more")
    array = np.frombuffer(body, dtype="<f4").reshape(shape, order="F" if fortran else "C")
    return np.ascontiguousarray(array, dtype=np.float32)


def _read_params(data: bytes, task: dict[str, Any]) -> dict[str, np.ndarray]:
    """Parse params.npz ourselves (not np.load) so sizes and headers are checked before reads."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except _ZIP_ERRORS as exc:
        raise ModelRefused(f"params.npz is not a readable npz ({exc})") from None
    specs = {spec["name"] + ".npy": spec for spec in task["params"]}
    names = [info.filename for info in infos]
    if sorted(names) != sorted(specs):
        raise ModelRefused(
            f"params.npz members {sorted(names)} do not match the declared parameters"
        )
    params: dict[str, np.ndarray] = {}
    for info in infos:
        spec = specs[info.filename]
        where = f"params.npz:{info.filename}"
        # the .npy header is at most a few hundred bytes for a plain float32 array
        limit = 4 * math.prod(spec["shape"]) + 4096
        _check_member_info(info, limit, where)
        try:
            with archive.open(info) as member:
                raw = member.read(limit + 1)
            if len(raw) > limit:
                raise ModelRefused(f"{where} is larger than declared")
            array = _parse_npy(raw, spec, where)
        except _ZIP_ERRORS as exc:
            raise ModelRefused(f"{where} is unreadable ({exc})") from None
        _check_param_array(spec, array)
        params[spec["name"]] = array
    return {spec["name"]: params[spec["name"]] for spec in task["params"]}


# ---------------------------------------------------------------------------------- the zip


def _check_member_info(info: zipfile.ZipInfo, limit: int, where: str) -> None:
    if info.flag_bits & 0x1:
        raise ModelRefused(f"{where} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ModelRefused(f"{where} uses an unsupported compression method")
    if info.file_size > limit:
        raise ModelRefused(f"{where} declares {info.file_size} bytes, over the limit of {limit}")


def _unsafe_name(name: str) -> bool:
    return (
        name.startswith(("/", "\\"))
        or "\\" in name
        or ".." in name.split("/")
        or (len(name) > 1 and name[1] == ":")
    )


def write_package(
    path: str | os.PathLike[str],
    task: dict[str, Any],
    model_bytes: bytes,
    params: dict[str, np.ndarray],
) -> str:
    """Write a package atomically to ``path`` (filling ``task['files']``); return its address."""
    if len(model_bytes) > MAX_MODEL_BYTES:
        raise ModelRefused(f"model.onnx is over the limit of {MAX_MODEL_BYTES} bytes")
    task = dict(task)
    task["files"] = {"model.onnx": "0" * 64, "params.npz": "0" * 64}
    check_task(task)
    arrays = _coerce_params(task, params)
    npz = _stored_zip({name + ".npy": _npy_bytes(array) for name, array in arrays.items()})
    task["files"] = {"model.onnx": _sha256(model_bytes), "params.npz": _sha256(npz)}
    data = _stored_zip(
        {"task.json": canonical_json(task), "model.onnx": model_bytes, "params.npz": npz}
    )
    if len(data) > MAX_TOTAL_BYTES:
        raise ModelRefused(f"package is over the limit of {MAX_TOTAL_BYTES} bytes")
    atomic_write(Path(path), data)
    return package_address(data)


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    # zip overhead for three members is small; anything far larger than the limit is refused
    # before it is read into memory
    limit = MAX_TOTAL_BYTES + 64 * 1024
    try:
        size = os.stat(path).st_size
        if size > limit:
            raise ModelRefused(f"package is {size} bytes, over the limit of {limit}")
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ModelRefused(f"cannot read the package ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise ModelRefused(f"package is over the limit of {limit} bytes")
    return data


def read_package(source: str | os.PathLike[str] | bytes) -> TaskPackage:
    """Read and verify a package from a path or its bytes; raise ModelRefused on any problem."""
    data = bytes(source) if isinstance(source, bytes | bytearray) else _read_bytes(source)
    if len(data) > MAX_TOTAL_BYTES + 64 * 1024:
        raise ModelRefused("package is over the size limit")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except _ZIP_ERRORS as exc:
        raise ModelRefused(f"not a task package (not a readable zip: {exc})") from None
    names = [info.filename for info in infos]
    for name in names:
        if _unsafe_name(name):
            raise ModelRefused(f"package member {name!r} has an unsafe path")
    # a zip may hold one name twice; sorted lists catch that where sets would not
    if sorted(names) != sorted(MEMBERS):
        raise ModelRefused(f"package members must be exactly {list(MEMBERS)}, got {sorted(names)}")
    limits = {
        "task.json": MAX_TASK_JSON_BYTES,
        "model.onnx": MAX_MODEL_BYTES,
        "params.npz": MAX_TOTAL_BYTES,
    }
    declared = 0
    for info in infos:
        _check_member_info(info, limits[info.filename], info.filename)
        declared += info.file_size
    if declared > MAX_TOTAL_BYTES:
        raise ModelRefused(f"package members declare {declared} bytes, over {MAX_TOTAL_BYTES}")
    contents: dict[str, bytes] = {}
    total = 0
    for info in infos:
        limit = limits[info.filename]
        try:
            with archive.open(info) as member:
                raw = member.read(limit + 1)
        except _ZIP_ERRORS as exc:
            raise ModelRefused(f"package member {info.filename} is damaged ({exc})") from None
        total += len(raw)
        if len(raw) > limit or total > MAX_TOTAL_BYTES:
            raise ModelRefused(f"package member {info.filename} is larger than allowed")
        contents[info.filename] = raw
    task = parse_task(contents["task.json"])
    for member in ("model.onnx", "params.npz"):
        if _sha256(contents[member]) != task["files"][member]:
            raise ModelRefused(f"package hash mismatch for {member}")
    params = _read_params(contents["params.npz"], task)
    return TaskPackage(
        task=task,
        model_bytes=contents["model.onnx"],
        params=params,
        address=package_address(data),
    )
