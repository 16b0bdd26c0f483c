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
reductions and data movement are not counted, so the estimate is a lower bound on the work.
A package's ``task.json`` may not declare less than half of it (:data:`FLOPS_SLACK`). No torch
here.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx
from onnx import GraphProto

from agents.onnx_runtime import runtime_limits
from agents.onnx_tensors import ELEMENT_SIZES, check_tensors
from agents.package import read_package
from agents.task_schema import graph_io
from vault.errors import ModelRefused

MIB = 1024**2
# Operators the four reference exports (agents/sdk/models.py) actually use, dense or factored.
_USED_BY_EXPORTS = """
    Abs Add ConstantOfShape Conv Div Exp Expand Gather GatherElements Gemm Greater
    GreaterOrEqual LessOrEqual Log LogSoftmax MatMul Max Mul Neg Pow ReduceMean ReduceSum Relu
    Reshape ScatterElements Sign Squeeze Sub Transpose Unsqueeze Where
"""
# Standard ops other torch layers and losses export to: deterministic elementwise maths,
# reductions, shape and index ops. Their output sizes are bounded by the static-shape rule.
# Not here: anything with subgraphs (If, Loop, Scan), randomness (Dropout, Random*),
# strings, sequences or optionals, and ops with training-mode state (BatchNormalization).
_OTHER_SAFE = """
    And AveragePool Cast CastLike Ceil Clip Concat Constant ConvTranspose Cos Elu Equal Erf
    Flatten Floor Gelu GlobalAveragePool HardSigmoid HardSwish Identity IsInf IsNaN
    LeakyRelu Less MaxPool Mean Min Not OneHot Or Pad PRelu Range Reciprocal ReduceL2 ReduceMax
    ReduceMin ReduceSumSquare Selu Shape Sigmoid Sin Slice Softmax Softplus Softsign Split Sqrt
    Sum Tanh Tile
"""
ALLOWED_OPS = frozenset(_USED_BY_EXPORTS.split()) | frozenset(_OTHER_SAFE.split())
LOOP_OPS = frozenset({"Loop", "Scan"})
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
DATA_INPUTS = ("features", "labels", "mask")
# A declared flops_per_example may be at most this factor below the estimate. The estimate is a
# lower bound (only MatMul/Gemm/Conv counted), so anything below it understates the work the
# person's computer will do; 2 and not 1 forgives counting multiply-adds instead of FLOPs
# (exactly 2x) and integer rounding per example, and nothing larger.
FLOPS_SLACK = 2


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
    check_tensors(
        model.graph, limits.max_graph_depth, limits.max_tensor_bytes, limits.max_total_bytes
    )
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
    return graph_io(task)


def check_task_io(report: ModelReport, task: dict[str, Any]) -> None:
    """Raise ModelRefused unless the model's inputs, outputs, opset and cost match ``task``."""
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
    declared = task["flops_per_example"]
    if declared * FLOPS_SLACK < report.flops_per_example:
        raise ModelRefused(
            f"task.json declares {declared} FLOPs per example, the model needs at least "
            f"{report.flops_per_example}"
        )


def validate_package(path: str | os.PathLike[str]) -> ModelReport:
    """Read a package (hashes, schema, params) and validate its model against its task.json."""
    package = read_package(path)
    report = validate_model(package.model_bytes)
    check_task_io(report, package.task)
    return report
