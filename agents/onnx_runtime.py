"""What the installed onnx and ONNX Runtime both support: the opset and IR version caps.

Probed once per process with a one-node model of our own, never with a model under test.
"""

from __future__ import annotations

import functools

import onnx
from onnx import TensorProto


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
