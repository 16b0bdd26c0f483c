"""Pass 1 of the model validator: every tensor of an ONNX graph, subgraphs included.

No external data whatever its location, an allowed element type, declared sizes within the
limits (one tensor and all together), and stored data exactly what the dims declare.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from onnx import GraphProto, TensorProto

from vault.errors import ModelRefused

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


def _walk_tensors(
    graph: GraphProto, where: str, depth: int, max_depth: int
) -> Iterator[tuple[TensorProto, str, bool]]:
    """Every tensor in ``graph`` and its subgraphs as (tensor, where, is_sparse)."""
    if depth > max_depth:
        raise ModelRefused(f"subgraphs nested deeper than {max_depth}")
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
                yield from _walk_tensors(sub, f"{place}/{attr.name}", depth + 1, max_depth)


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


def check_tensors(
    graph: GraphProto, max_depth: int, max_tensor_bytes: int, max_total_bytes: int
) -> None:
    """Pass 1 over every tensor, subgraphs (at most ``max_depth`` deep) included, first of all.

    External data first (the most dangerous), then types and declared sizes (one tensor and the
    running total), then that the stored data agrees with the dims; sparse tensors are refused.
    """
    tensors = list(_walk_tensors(graph, "graph", 0, max_depth))
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
        if count * size > max_tensor_bytes:
            raise ModelRefused(
                f"{what} declares {count * size} bytes, over the limit of {max_tensor_bytes}"
            )
        total += count * size
        if total > max_total_bytes:
            raise ModelRefused(f"tensors declare more than {max_total_bytes} bytes in all")
        sizes.append((count, size))
    for (tensor, where, _), (count, size) in zip(tensors, sizes, strict=True):
        _check_data(tensor, _label(tensor, where), count, size)
