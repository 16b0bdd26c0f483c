"""The ``task.json`` schema of task packages (``format: tessera-task/1``) and its strict parser.

A package's ``task.json`` declares the parameters, batch size, feature recipe and shape,
label, loss, member hashes, ONNX opset and cost of one example; :func:`check_task` refuses
anything else. The zip around it is :mod:`agents.package`; :func:`graph_io` is the model's
input/output contract that follows from a task.

Per-example gradients come in two forms, chosen per parameter by its optional ``grad`` key:

- ``"dense"`` (the default): the graph outputs ``grad.<name>`` [B, *shape];
- ``"outer"``, for a 2-D weight [P, Q] such as torch's ``nn.Linear`` weight [out, in], with an
  integer ``positions`` T: the graph outputs ``act.<name>`` [B, Q] and ``sig.<name>`` [B, P]
  (or [B, T, Q] and [B, T, P] when T > 1), and example i's gradient is
  ``sum_t outer(sig[i, t], act[i, t])``, [P, Q]. The vault never receives that gradient: it
  computes norms and clipped sums from the factors itself (ghost clipping).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from vault.errors import ModelRefused

FORMAT = "tessera-task/1"
LOSSES = ("cross_entropy", "mse", "bce")
LABEL_DTYPES = ("int64", "float32")
MAX_MODEL_BYTES = 256 * 1024**2
MAX_DIMS = 8
MAX_BATCH_SIZE = 65_536
RESERVED_NAMES = ("features", "labels", "mask", "losses")
GRAD_FORMS = ("dense", "outer")
# Parameter names become ONNX input names and npz member names: keep them plain (torch
# names such as "0.weight" start with a digit).
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,127}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_TASK_KEYS = {
    "format",
    "name",
    "params",
    "batch_size",
    "features",
    "label",
    "loss",
    "files",
    "opset",
    "flops_per_example",
    "created_by",
}


def _is_int(value: Any) -> bool:
    # bool is an int subclass; true/false are never a size
    return isinstance(value, int) and not isinstance(value, bool)


def _check_shape(where: str, shape: Any, max_elements: int) -> list[int]:
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise ModelRefused(f"task.json: {where} must be a list of at most {MAX_DIMS} sizes")
    for dim in shape:
        if not _is_int(dim) or dim < 1:
            raise ModelRefused(f"task.json: {where} must hold positive integers, got {dim!r}")
    if math.prod(shape) > max_elements:
        raise ModelRefused(f"task.json: {where} {shape} is too large")
    return shape


def _check_keys(where: str, obj: Any, keys: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ModelRefused(f"task.json: {where} must be an object")
    if set(obj) != keys:
        missing = sorted(keys - set(obj))
        extra = sorted(set(obj) - keys)
        raise ModelRefused(f"task.json: {where} keys wrong (missing {missing}, unexpected {extra})")
    return obj


def _check_str(where: str, value: Any, max_len: int = 200) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ModelRefused(f"task.json: {where} must be a non-empty string (<= {max_len} chars)")
    return value


def check_task(task: Any) -> None:
    """Raise ModelRefused unless ``task`` is a well-formed ``tessera-task/1`` description.

    Beyond types: cross_entropy needs int64 labels and ``classes`` >= 2; mse and bce need
    float32 labels; parameter names are plain identifiers (dots allowed), unique, and not one of
    the reserved input/output names.
    """
    _check_keys("top level", task, _TASK_KEYS)
    if task["format"] != FORMAT:
        raise ModelRefused(f"task.json: format must be {FORMAT!r}, got {task['format']!r}")
    _check_str("name", task["name"])
    _check_str("created_by", task["created_by"])
    max_elements = MAX_MODEL_BYTES // 4
    params = task["params"]
    if not isinstance(params, list) or not params or len(params) > 1024:
        raise ModelRefused("task.json: params must be a non-empty list (at most 1024)")
    seen: set[str] = set()
    batch = task["batch_size"]
    if not _is_int(batch) or not 1 <= batch <= MAX_BATCH_SIZE:
        raise ModelRefused(f"task.json: batch_size must be an integer in 1..{MAX_BATCH_SIZE}")
    for i, spec in enumerate(params):
        keys = {"name", "shape", "dtype"}
        if isinstance(spec, dict) and "grad" in spec:
            if spec["grad"] not in GRAD_FORMS:
                raise ModelRefused(f"task.json: params[{i}].grad must be one of {list(GRAD_FORMS)}")
            keys |= {"grad", "positions"} if spec["grad"] == "outer" else {"grad"}
        _check_keys(f"params[{i}]", spec, keys)
        name = spec["name"]
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in RESERVED_NAMES:
            raise ModelRefused(f"task.json: params[{i}] has a bad name {name!r}")
        if name in seen:
            raise ModelRefused(f"task.json: parameter {name!r} declared twice")
        seen.add(name)
        _check_shape(f"params[{i}].shape", spec["shape"], max_elements)
        if spec["dtype"] != "float32":
            raise ModelRefused(f"task.json: parameter {name!r} must be float32")
        _check_grad_form(name, spec, batch, max_elements)
    features = _check_keys("features", task["features"], {"recipe", "shape", "dtype"})
    _check_str("features.recipe", features["recipe"])
    _check_shape("features.shape", features["shape"], max_elements // batch)
    if not features["shape"]:
        raise ModelRefused("task.json: features.shape must have at least one dimension")
    if features["dtype"] != "float32":
        raise ModelRefused("task.json: features.dtype must be float32")
    label = _check_keys("label", task["label"], {"field", "dtype", "classes"})
    _check_str("label.field", label["field"])
    if label["dtype"] not in LABEL_DTYPES:
        raise ModelRefused(f"task.json: label.dtype must be one of {list(LABEL_DTYPES)}")
    classes = label["classes"]
    if classes is not None and (not _is_int(classes) or not 2 <= classes <= 1_000_000):
        raise ModelRefused("task.json: label.classes must be null or an integer >= 2")
    loss = task["loss"]
    if loss not in LOSSES:
        raise ModelRefused(f"task.json: loss must be one of {list(LOSSES)}, got {loss!r}")
    if loss == "cross_entropy" and (label["dtype"] != "int64" or classes is None):
        raise ModelRefused("task.json: cross_entropy needs int64 labels and label.classes")
    if loss in ("mse", "bce") and label["dtype"] != "float32":
        raise ModelRefused(f"task.json: {loss} needs float32 labels")
    files = _check_keys("files", task["files"], {"model.onnx", "params.npz"})
    for member, digest in files.items():
        if not isinstance(digest, str) or not _HEX_RE.match(digest):
            raise ModelRefused(f"task.json: files[{member!r}] must be a lowercase SHA-256 hex")
    if not _is_int(task["opset"]) or not 1 <= task["opset"] <= 1000:
        raise ModelRefused("task.json: opset must be a positive integer")
    flops = task["flops_per_example"]
    if not _is_int(flops) or flops < 0:
        raise ModelRefused("task.json: flops_per_example must be a non-negative integer")


def _check_grad_form(name: str, spec: dict[str, Any], batch: int, max_elements: int) -> None:
    if spec.get("grad", "dense") == "dense":
        return
    shape, positions = spec["shape"], spec["positions"]
    if len(shape) != 2:
        raise ModelRefused(f"task.json: parameter {name!r} has grad 'outer' but is not 2-D")
    if not _is_int(positions) or positions < 1:
        raise ModelRefused(f"task.json: parameter {name!r} needs positions >= 1")
    if batch * positions * (shape[0] + shape[1]) > max_elements:
        raise ModelRefused(f"task.json: the factors of parameter {name!r} are too large")


def grad_form(spec: dict[str, Any]) -> str:
    """How a (checked) parameter's per-example gradients leave the graph: dense or outer."""
    return str(spec.get("grad", "dense"))


def factor_shapes(spec: dict[str, Any], batch: int) -> tuple[list[int], list[int]]:
    """(act shape, sig shape) of an ``outer`` parameter: [B, (T,) Q] and [B, (T,) P]."""
    rows, cols = spec["shape"]
    steps = [spec["positions"]] if spec["positions"] > 1 else []
    return [batch, *steps, cols], [batch, *steps, rows]


def graph_io(task: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's (inputs, outputs) for a checked ``task``, as name/shape/dtype dicts.

    Inputs: one per parameter, then ``features``, ``labels``, ``mask``. Outputs: ``losses``,
    then per parameter in order ``grad.<name>`` (dense) or ``act.<name>``, ``sig.<name>``.
    """
    batch = task["batch_size"]
    params = task["params"]
    inputs = [{"name": p["name"], "shape": list(p["shape"]), "dtype": "float32"} for p in params]
    inputs += [
        {"name": "features", "shape": [batch, *task["features"]["shape"]], "dtype": "float32"},
        {"name": "labels", "shape": [batch], "dtype": task["label"]["dtype"]},
        {"name": "mask", "shape": [batch], "dtype": "float32"},
    ]
    outputs = [{"name": "losses", "shape": [batch], "dtype": "float32"}]
    for p in params:
        if grad_form(p) == "outer":
            act, sig = factor_shapes(p, batch)
            outputs.append({"name": f"act.{p['name']}", "shape": act, "dtype": "float32"})
            outputs.append({"name": f"sig.{p['name']}", "shape": sig, "dtype": "float32"})
        else:
            shape = [batch, *p["shape"]]
            outputs.append({"name": f"grad.{p['name']}", "shape": shape, "dtype": "float32"})
    return inputs, outputs


def _refuse_constant(text: str) -> None:
    raise ModelRefused(f"task.json: {text} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ModelRefused(f"task.json: key {key!r} appears twice")
        obj[key] = value
    return obj


def parse_task(data: bytes) -> dict[str, Any]:
    """The task.json bytes as a checked task: strict JSON (no NaN, no repeated keys)."""
    try:
        task = json.loads(
            data.decode("utf-8"),
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicates,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelRefused(f"task.json is not valid JSON ({exc})") from None
    check_task(task)
    return task
