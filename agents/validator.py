"""The vault's model validator: refuse hostile ONNX models before anything runs them.

Every model is hostile until shown otherwise. Checks run on the parsed protobuf only (never
``onnx.load`` on a path, which would follow external-data references), in this order:

1. bytes: size limit, protobuf parse, a graph present; no model-local functions, training info
   or device configurations;
2. every tensor anywhere (initializers, sparse initializers, Constant attributes ``t`` and
   ``tensors``, sparse attributes, subgraphs at any depth): no external data whatever its
   location, an allowed element type, declared size within limits, data length equal to the
   declared dims;
3. opsets: only the standard domain (``""`` / ``ai.onnx``), no newer than both the onnx library
   and ONNX Runtime support (probed once with a one-node model of our own), IR version likewise;
4. nodes: standard domain only, operator in :data:`ALLOWED_OPS` (``Loop``/``Scan`` are refused
   as unbounded loops; ``If`` is not allowed either, so accepted graphs have no subgraphs);
5. graph inputs and outputs: tensors of allowed types with static shapes within limits;
6. ``onnx.checker.check_model(full_check=True)`` and strict shape inference with data
   propagation; then every intermediate tensor must have a static inferred shape within the
   per-tensor limit, so memory use is known before execution.

FLOPs are 2 x the multiply-accumulates of MatMul, Gemm, Conv and ConvTranspose computed from
the inferred shapes, divided by the batch (the first dim of ``features``); elementwise ops,
reductions and data movement are not counted. No torch here.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx
from onnx import GraphProto, TensorProto

from agents.package import read_package
from vault.errors import ModelRefused

MIB = 1024**2
# Operators the four reference exports (agents/sdk/models.py) actually use.
_USED_BY_EXPORTS = """
    Abs Add ConstantOfShape Conv Div Exp Expand Gather GatherElements Greater GreaterOrEqual
    LessOrEqual Log LogSoftmax MatMul Max Mul Neg Pow ReduceMean ReduceSum Relu Reshape
    ScatterElements Sign Squeeze Sub Transpose Unsqueeze Where
"""
# Standard ops other torch layers and losses export to: deterministic elementwise maths,
# reductions, shape and index ops. Their output sizes are bounded by the static-shape rule.
# Not here: anything with subgraphs (If, Loop, Scan), randomness (Dropout, Random*),
# strings, sequences or optionals, and ops with training-mode state (BatchNormalization).
_OTHER_SAFE = """
    And AveragePool Cast CastLike Ceil Clip Concat Constant ConvTranspose Cos Elu Equal Erf
    Flatten Floor Gelu Gemm GlobalAveragePool HardSigmoid HardSwish Identity IsInf IsNaN
    LeakyRelu Less MaxPool Mean Min Not OneHot Or Pad PRelu Range Reciprocal ReduceL2 ReduceMax
    ReduceMin ReduceSumSquare Selu Shape Sigmoid Sin Slice Softmax Softplus Softsign Split Sqrt
    Sum Tanh Tile
"""
ALLOWED_OPS = frozenset(_USED_BY_EXPORTS.split()) | frozenset(_OTHER_SAFE.split())
LOOP_OPS = frozenset({"Loop", "Scan"})
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
# element type -> bytes per element; strings, complex, 4-bit and 8-bit floats are refused
ELEMENT_SIZES = {
    TensorProto.FLOAT: 4,
    TensorProto.DOUBLE: 8,
    TensorProto.FLOAT16: 2,
    TensorProto.BFLOAT16: 2,
    TensorProto.INT64: 8,
    TensorProto.INT32: 4,
    TensorProto.INT16: 2,
    TensorProto.INT8: 1,
    TensorProto.UINT8: 1,
    TensorProto.BOOL: 1,
}
# which typed field holds the values when raw_data is empty (per TensorProto's comments)
_TYPED_FIELD = {
    TensorProto.FLOAT: "float_data",
    TensorProto.DOUBLE: "double_data",
    TensorProto.INT64: "int64_data",
}
DATA_INPUTS = ("features", "labels", "mask")


@dataclass(frozen=True)
class Limits:
    """Bounds applied by the validator; defaults suit the task packages of this project."""

    max_model_bytes: int = 256 * MIB
    max_tensor_bytes: int = 256 * MIB
    max_total_bytes: int = 512 * MIB
    max_dim: int = 1 << 24
    max_nodes: int = 100_000
    max_graph_depth: int = 8
    max_macs: int = 2**40  # multiply-adds per batch; about 10 s of one CPU core or more
    allowed_ops: frozenset[str] = ALLOWED_OPS


@dataclass
class ModelReport:
    """What the validator learned about an accepted model."""

    opset: int
    ir_version: int
    producer: str
    operators: dict[str, int]
    parameter_count: int
    flops_per_example: int
    batch_size: int | None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy of the report."""
        return asdict(self)


# ------------------------------------------------------------------------------- runtime caps


def _probe_model(opset: int, ir_version: int) -> bytes:
    from onnx import helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version
    )
    return model.SerializeToString()


def _runtime_accepts(data: bytes) -> bool:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failures are expected; keep stderr clean
    try:
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any refusal means "not supported"
        return False
    return True


@functools.lru_cache(maxsize=1)
def runtime_limits() -> tuple[int, int]:
    """(max default-domain opset, max IR version) both onnx and ONNX Runtime support."""
    max_opset = onnx.defs.onnx_opset_version()
    while max_opset > 7 and not _runtime_accepts(_probe_model(max_opset, 8)):
        max_opset -= 1
    max_ir = onnx.IR_VERSION
    while max_ir > 7 and not _runtime_accepts(_probe_model(13, max_ir)):
        max_ir -= 1
    return max_opset, max_ir


# ------------------------------------------------------------------------------------ tensors


def _walk_tensors(
    graph: GraphProto, where: str, depth: int, limits: Limits
) -> Iterator[tuple[TensorProto, str, bool]]:
    """Every tensor in ``graph`` and its subgraphs as (tensor, where, is_sparse)."""
    if depth > limits.max_graph_depth:
        raise ModelRefused(f"subgraphs nested deeper than {limits.max_graph_depth}")
    for tensor in graph.initializer:
        yield tensor, where, False
    for sparse in graph.sparse_initializer:
        yield sparse.values, where, True
        yield sparse.indices, where, True
    for node in graph.node:
        place = f"{where}/{node.op_type}" + (f":{node.name}" if node.name else "")
        for attr in node.attribute:
            if attr.ref_attr_name:
                raise ModelRefused(f"attribute {attr.name} in {place} refers to a function")
            for tensor in ([attr.t] if attr.HasField("t") else []) + list(attr.tensors):
                yield tensor, place, False
            sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
            for item in sparse + list(attr.sparse_tensors):
                yield item.values, place, True
                yield item.indices, place, True
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _walk_tensors(sub, f"{place}/{attr.name}", depth + 1, limits)


def _label(tensor: TensorProto, where: str) -> str:
    return f"tensor {tensor.name or '(unnamed)'} in {where}"


def _check_data(tensor: TensorProto, what: str, count: int, size: int) -> None:
    """The stored values must be exactly what the dims declare, in one representation."""
    if tensor.HasField("segment"):
        raise ModelRefused(f"{what} is segmented")
    typed = {
        name: len(getattr(tensor, name))
        for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
        if len(getattr(tensor, name))
    }
    if len(tensor.string_data):
        raise ModelRefused(f"{what} holds strings")
    if tensor.raw_data:
        if typed:
            raise ModelRefused(f"{what} holds both raw and typed data")
        if len(tensor.raw_data) != count * size:
            raise ModelRefused(
                f"{what} has {len(tensor.raw_data)} bytes of data, its dims declare {count * size}"
            )
        return
    expected_field = _TYPED_FIELD.get(tensor.data_type, "int32_data")
    have = typed.get(expected_field, 0)
    if set(typed) - {expected_field} or have != count:
        raise ModelRefused(f"{what} has {have} values, its dims declare {count}")


def _check_tensors(graph: GraphProto, limits: Limits) -> None:
    """Pass 1 over every tensor, subgraphs included, before anything else is judged.

    External data first (the most dangerous), then types and declared sizes (one tensor and the
    running total), then that the stored data agrees with the dims; sparse tensors are refused.
    """
    tensors = list(_walk_tensors(graph, "graph", 0, limits))
    for tensor, where, _ in tensors:
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelRefused(
                f"{_label(tensor, where)} uses external data (location {location!r})"
            )
    total = 0
    sizes = []
    for tensor, where, sparse in tensors:
        what = _label(tensor, where)
        if sparse:
            raise ModelRefused(f"sparse {what} is not allowed")
        size = ELEMENT_SIZES.get(tensor.data_type)
        if size is None:
            raise ModelRefused(f"{what} has a refused element type {tensor.data_type}")
        if any(d < 0 for d in tensor.dims):
            raise ModelRefused(f"{what} has a negative dimension")
        count = math.prod(tensor.dims)
        if count * size > limits.max_tensor_bytes:
            raise ModelRefused(
                f"{what} declares {count * size} bytes, over the limit of {limits.max_tensor_bytes}"
            )
        total += count * size
        if total > limits.max_total_bytes:
            raise ModelRefused(f"tensors declare more than {limits.max_total_bytes} bytes in all")
        sizes.append((count, size))
    for (tensor, where, _), (count, size) in zip(tensors, sizes, strict=True):
        _check_data(tensor, _label(tensor, where), count, size)


# -------------------------------------------------------------------------------- structure


def _check_nodes(graph: GraphProto, limits: Limits, counts: Counter[str], depth: int = 0) -> None:
    """Pass 2: domains and the operator allow-list, subgraphs included."""
    for node in graph.node:
        if node.domain not in STANDARD_DOMAINS:
            raise ModelRefused(
                f"operator {node.op_type} uses the non-standard domain {node.domain!r}"
            )
        if node.op_type in LOOP_OPS:
            raise ModelRefused(f"unbounded loop operator {node.op_type}")
        if node.op_type not in limits.allowed_ops:
            raise ModelRefused(f"operator {node.op_type} is not on the allow-list")
        if len(node.device_configurations) or node.overload:
            raise ModelRefused(f"operator {node.op_type} carries device or overload settings")
        counts[node.op_type] += 1
        if sum(counts.values()) > limits.max_nodes:
            raise ModelRefused(f"more than {limits.max_nodes} nodes")
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _check_nodes(sub, limits, counts, depth + 1)


def _static_shape(value: onnx.ValueInfoProto, what: str, limits: Limits) -> tuple[list[int], int]:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ModelRefused(f"{what} {value.name!r} is a {kind or 'untyped value'}, not a tensor")
    elem = value.type.tensor_type.elem_type
    if elem not in ELEMENT_SIZES:
        raise ModelRefused(f"{what} {value.name!r} has a refused element type {elem}")
    if not value.type.tensor_type.HasField("shape"):
        raise ModelRefused(f"{what} {value.name!r} has no static shape")
    dims = []
    for dim in value.type.tensor_type.shape.dim:
        if not dim.HasField("dim_value") or dim.dim_value < 0:
            raise ModelRefused(f"{what} {value.name!r} has a dynamic shape")
        if dim.dim_value > limits.max_dim:
            raise ModelRefused(f"{what} {value.name!r} has a dimension of {dim.dim_value}")
        dims.append(dim.dim_value)
    nbytes = math.prod(dims) * ELEMENT_SIZES[elem]
    if nbytes > limits.max_tensor_bytes:
        raise ModelRefused(f"{what} {value.name!r} would take {nbytes} bytes")
    return dims, elem


def _describe(value: onnx.ValueInfoProto, what: str, limits: Limits) -> dict[str, Any]:
    dims, elem = _static_shape(value, what, limits)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name
    return {"name": value.name, "shape": dims, "dtype": dtype}


def _check_opsets(model: onnx.ModelProto) -> int:
    max_opset, max_ir = runtime_limits()
    if not 3 <= model.ir_version <= max_ir:
        raise ModelRefused(f"IR version {model.ir_version} is not supported (max {max_ir})")
    for entry in model.opset_import:
        if entry.domain not in STANDARD_DOMAINS:
            raise ModelRefused(f"opset import of the non-standard domain {entry.domain!r}")
        if not 1 <= entry.version <= max_opset:
            raise ModelRefused(f"opset {entry.version} is newer than the runtime's {max_opset}")
    # "" and "ai.onnx" name the same domain: exactly one import of it, one version
    if len(model.opset_import) != 1:
        raise ModelRefused("the model must import exactly one opset, the standard one")
    return model.opset_import[0].version


def _macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    def shape(i: int) -> list[int]:
        return shapes.get(node.input[i], []) if len(node.input) > i else []

    out = shapes.get(node.output[0], []) if node.output else []
    if node.op_type == "MatMul" and shape(0) and out:
        return math.prod(out) * shape(0)[-1]
    if node.op_type == "Gemm" and len(shape(0)) == 2 and out:
        trans_a = any(a.name == "transA" and a.i for a in node.attribute)
        return math.prod(out) * shape(0)[0 if trans_a else 1]
    if node.op_type == "Conv" and len(shape(1)) > 1 and out:
        return math.prod(out) * math.prod(shape(1)[1:])
    if node.op_type == "ConvTranspose" and shape(0) and len(shape(1)) > 1:
        return math.prod(shape(0)) * math.prod(shape(1)[1:])
    return 0


def _printable(text: str, limit: int = 300) -> str:
    # names in a hostile model may carry terminal escapes or megabytes of text
    clean = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return clean if len(clean) <= limit else clean[:limit] + "..."


def validate_model(model_bytes: bytes, limits: Limits | None = None) -> ModelReport:
    """Check ONNX bytes against every rule above; return a report or raise ModelRefused."""
    try:
        return _validate(model_bytes, limits or Limits())
    except ModelRefused as exc:
        raise ModelRefused(_printable(str(exc))) from None


def _validate(model_bytes: bytes, limits: Limits) -> ModelReport:
    if not model_bytes:
        raise ModelRefused("empty file, not an ONNX model")
    if len(model_bytes) > limits.max_model_bytes:
        raise ModelRefused(f"model is over the limit of {limits.max_model_bytes} bytes")
    try:
        model = onnx.load_model_from_string(model_bytes)  # parses bytes; follows no paths
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ModelRefused("not an ONNX model (protobuf parse failed)") from None
    if not model.HasField("graph") or not model.graph.output:
        raise ModelRefused("not an ONNX model (no graph)")
    if len(model.functions) or len(model.training_info) or len(model.configuration):
        raise ModelRefused("model-local functions, training info or configurations are refused")
    _check_tensors(model.graph, limits)
    opset = _check_opsets(model)
    counts: Counter[str] = Counter()
    _check_nodes(model.graph, limits, counts)
    constants = {t.name for t in model.graph.initializer}
    inputs = [_describe(v, "input", limits) for v in model.graph.input if v.name not in constants]
    outputs = [_describe(v, "output", limits) for v in model.graph.output]
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
    except Exception as exc:  # noqa: BLE001 - checker and inference raise several types
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelRefused(f"model fails the ONNX checker: {reason}") from None
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shapes[value.name] = _static_shape(value, "intermediate tensor", limits)[0]
    for node in inferred.graph.node:
        for name in node.output:
            if name and name not in shapes:
                raise ModelRefused(f"intermediate tensor {name!r} has no inferred static shape")
    by_name = {v["name"]: v for v in inputs}
    batch = by_name["features"]["shape"][0] if by_name.get("features", {}).get("shape") else None
    macs = sum(_macs(node, shapes) for node in inferred.graph.node)
    if macs > limits.max_macs:
        raise ModelRefused(f"model needs {macs} multiply-adds per batch, over {limits.max_macs}")
    return ModelReport(
        opset=opset,
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        operators=dict(sorted(counts.items())),
        parameter_count=sum(math.prod(v["shape"]) for v in inputs if v["name"] not in DATA_INPUTS),
        flops_per_example=2 * macs // (batch or 1),
        batch_size=batch,
        inputs=inputs,
        outputs=outputs,
        size_bytes=len(model_bytes),
    )


def expected_io(task: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The (inputs, outputs) a package's model must have, as the validator describes them."""
    batch = task["batch_size"]
    params = task["params"]
    inputs = [{"name": p["name"], "shape": p["shape"], "dtype": "float32"} for p in params]
    inputs += [
        {"name": "features", "shape": [batch, *task["features"]["shape"]], "dtype": "float32"},
        {"name": "labels", "shape": [batch], "dtype": task["label"]["dtype"]},
        {"name": "mask", "shape": [batch], "dtype": "float32"},
    ]
    outputs = [{"name": "losses", "shape": [batch], "dtype": "float32"}]
    outputs += [
        {"name": f"grad.{p['name']}", "shape": [batch, *p["shape"]], "dtype": "float32"}
        for p in params
    ]
    return inputs, outputs


def check_task_io(report: ModelReport, task: dict[str, Any]) -> None:
    """Raise ModelRefused unless the model's inputs, outputs and opset match ``task``."""
    inputs, outputs = expected_io(task)
    for what, got, want in (
        ("inputs", report.inputs, inputs),
        ("outputs", report.outputs, outputs),
    ):
        if got != want:
            first = next(
                (f"{w} but the model has {g}" for g, w in zip(got, want, strict=False) if g != w),
                f"{len(want)} expected, the model has {len(got)}",
            )
            message = f"model {what} do not match task.json: expected {first}"
            raise ModelRefused(_printable(message))
    if report.opset != task["opset"]:
        raise ModelRefused(f"task.json says opset {task['opset']}, the model uses {report.opset}")


def validate_package(path: str | os.PathLike[str]) -> ModelReport:
    """Read a package (hashes, schema, params) and validate its model against its task.json."""
    package = read_package(path)
    report = validate_model(package.model_bytes)
    check_task_io(report, package.task)
    return report
