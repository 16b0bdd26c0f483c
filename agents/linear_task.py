"""A linear-regression task graph written with ``onnx.helper``: no torch, no SDK.

The per-example squared error and its gradients are spelled out in the graph, following the
task-package contract (agents/package.py). The demos use it to post real requests, and tests use
it to run real rounds without exporting a model.
"""

from __future__ import annotations


def linear_mse_model(d: int, batch: int, factored: bool = False) -> bytes:
    """ONNX: (w [d], b [1], features [B, d], labels [B], mask [B]) -> losses, grad.w, grad.b.

    ``factored``: w is [1, d] and declared ``grad: outer``; the graph outputs its per-example
    gradient as factors, act.w = features [B, d] and sig.w = dz [B, 1], instead of grad.w."""
    from onnx import TensorProto
    from onnx import helper as oh

    value, node = oh.make_tensor_value_info, oh.make_node
    inputs = [
        value("w", TensorProto.FLOAT, [1, d] if factored else [d]),
        value("b", TensorProto.FLOAT, [1]),
        value("features", TensorProto.FLOAT, [batch, d]),
        value("labels", TensorProto.FLOAT, [batch]),
        value("mask", TensorProto.FLOAT, [batch]),
    ]
    constants = [
        oh.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        oh.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
    ]
    if factored:  # z = features w^T + b, [B, 1] -> [B]
        linear = [node("Gemm", ["features", "w", "b"], ["z1"], transB=1),
                  node("Squeeze", ["z1", "axis1"], ["z"])]  # fmt: skip
    else:
        linear = [node("MatMul", ["features", "w"], ["xw"]), node("Add", ["xw", "b"], ["z"])]
    nodes = [
        *linear,
        node("Sub", ["z", "labels"], ["e"]),
        node("Mul", ["e", "e"], ["squared"]),
        node("Mul", ["squared", "mask"], ["losses"]),
        node("Mul", ["e", "two"], ["e2"]),  # d(e²)/dz = 2e
        node("Mul", ["e2", "mask"], ["dz"]),
        node("Unsqueeze", ["dz", "axis1"], ["dz_column"]),
        node("Identity", ["dz_column"], ["grad.b"]),
    ]
    if factored:
        nodes += [node("Identity", ["features"], ["act.w"]),
                  node("Identity", ["dz_column"], ["sig.w"])]  # fmt: skip
        weight = [value("act.w", TensorProto.FLOAT, [batch, d]),
                  value("sig.w", TensorProto.FLOAT, [batch, 1])]  # fmt: skip
    else:
        nodes.append(node("Mul", ["dz_column", "features"], ["grad.w"]))
        weight = [value("grad.w", TensorProto.FLOAT, [batch, d])]
    outputs = [
        value("losses", TensorProto.FLOAT, [batch]),
        *weight,
        value("grad.b", TensorProto.FLOAT, [batch, 1]),
    ]
    graph = oh.make_graph(nodes, "linear_mse", inputs, outputs, initializer=constants)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
