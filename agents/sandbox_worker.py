"""The child process that runs an organization's ONNX graph, and the executor it shares.

The parent (``agents/runner.py``) starts ``python -I -c 'from agents.sandbox_worker import main;
main()'`` in a fresh empty directory with a minimal environment and one shared-memory region
(a memfd passed as an inherited descriptor). The child, before importing numpy or ONNX Runtime:

- tries ``unshare(CLONE_NEWUSER | CLONE_NEWNET)``: a network namespace with no interfaces up,
  so no socket can reach anything (enforced by the kernel). Where the kernel refuses (some
  distributions and containers), it says so in its first message and falls back to replacing
  ``socket.socket`` and friends, which only stops Python code; ONNX Runtime itself opens no
  sockets, but native code could;
- sets ``PR_SET_NO_NEW_PRIVS``, RLIMIT_AS (the memory limit), RLIMIT_FSIZE 0 (no file can grow:
  the child writes nothing to disk) and RLIMIT_CORE 0. With CUDA, RLIMIT_AS is left off (the
  driver reserves far more address space than any limit) and the GPU arena is capped instead.

Before ONNX Runtime sees the model, a seccomp filter (``agents/syscall_filter.py``) refuses
new files, processes and sockets, so a model that takes over ONNX Runtime cannot read the
user's files either; where libseccomp is missing the child says so in its first message. What
it knows can only leave through the shared memory, whose content the parent copies and treats
as untrusted numbers (clipped per example, then noised).
Messages to the parent are one JSON line each, never pickles. The wall-time limit is enforced
by the parent, which kills the child.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import struct
import sys
from typing import Any, BinaryIO

from agents import syscall_filter

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
ALIGN = 64
# the last one is ONNX Runtime's GPU arena refusing to grow past gpu_mem_limit
_MEMORY_WORDS = (
    "bad_alloc", "failed to allocate", "out of memory", "cannot allocate", "available memory of"
)  # fmt: skip
_DTYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}


def layout(spec: list[dict[str, Any]]) -> tuple[dict[str, tuple[int, str, list[int]]], int]:
    """Offsets of each tensor of ``spec`` in the shared region, and the region's size."""
    offsets: dict[str, tuple[int, str, list[int]]] = {}
    offset = 0
    for item in spec:
        count = 1
        for dim in item["shape"]:
            count *= dim
        offsets[item["name"]] = (offset, item["dtype"], list(item["shape"]))
        offset += -(-count * 8 // ALIGN) * ALIGN  # 8 bytes covers float32 and int64
    return offsets, max(offset, ALIGN)


def views(buffer: Any, spec: list[dict[str, Any]]) -> dict[str, Any]:
    """numpy arrays over ``buffer`` for each tensor of ``spec``, per :func:`layout`."""
    import numpy as np

    offsets, _ = layout(spec)
    out = {}
    for name, (offset, dtype, shape) in offsets.items():
        count = int(np.prod(shape, dtype=np.int64))
        array = np.frombuffer(buffer, dtype=np.dtype(dtype), count=count, offset=offset)
        out[name] = array.reshape(shape)
    return out


class DeviceUnavailable(RuntimeError):
    """The GPU was chosen (CUDA without the CPU beside it) but ONNX Runtime could not use it."""


class GraphExecutor:
    """One ONNX Runtime session whose inputs and outputs are bound to caller-owned arrays."""

    def __init__(
        self,
        model_bytes: bytes,
        inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
        arrays: dict[str, Any],
        threads: int,
        providers: list[str],
        memory_bytes: int | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # full float32 on the GPU: TF32 matmuls (ONNX Runtime's default on recent GPUs) keep
        # 10 mantissa bits, far from the gradients the package was checked against at export
        cuda: dict[str, str] = {"use_tf32": "0"}
        if memory_bytes:
            # the GPU's own arena is capped here; RLIMIT_AS cannot be (see _apply_limits)
            cuda["gpu_mem_limit"] = str(memory_bytes)
        chosen: list[Any] = [(p, cuda) if p == "CUDAExecutionProvider" else p for p in providers]
        if "CUDAExecutionProvider" in providers and hasattr(ort, "preload_dlls"):
            # CUDA and cuDNN from pip's nvidia-* packages are not on the loader's path; "" keeps
            # ONNX Runtime from looking for them through torch (the child never imports torch)
            ort.preload_dlls(directory="")
        self.session = ort.InferenceSession(model_bytes, options, providers=chosen)
        # a provider that cannot run a node must be an error, not a silent move to the CPU
        self.session.disable_fallback()
        # onnxruntime-gpu lists CUDA even with no usable GPU, and then builds the session on
        # the CPU: right for "auto" (which passes the CPU too), not when the GPU was chosen
        on_gpu = "CUDAExecutionProvider" in self.session.get_providers()
        gpu_only = "CUDAExecutionProvider" in providers and "CPUExecutionProvider" not in providers
        if gpu_only and not on_gpu:
            raise DeviceUnavailable(
                "the GPU was chosen but ONNX Runtime could not start CUDA on it (is the NVIDIA "
                "driver installed and a GPU visible?); use --device cpu or auto"
            )
        self._check_io(inputs, outputs)
        self._feeds: dict[str, Any] = {}
        self._copy_back: list[tuple[str, Any]] = []
        if on_gpu:
            # A host array bound to a GPU graph's input is copied to the GPU when it is bound,
            # not at each run (every step would see the first step's batch): feed the arrays
            # at each run instead, and copy the outputs back into the caller's arrays.
            self._feeds = {item["name"]: arrays[item["name"]] for item in inputs}
            self._copy_back = [(item["name"], arrays[item["name"]]) for item in outputs]
            self._output_names = [item["name"] for item in outputs]
            return
        self.binding = self.session.io_binding()
        # bound by address: every run reads what the caller wrote there since, and writes
        # straight into the caller's arrays (no copies either way)
        for item in inputs:
            array = arrays[item["name"]]
            self.binding.bind_input(
                item["name"], "cpu", 0, array.dtype, list(array.shape), array.ctypes.data
            )
        for item in outputs:
            array = arrays[item["name"]]
            self.binding.bind_output(
                item["name"], "cpu", 0, array.dtype, list(array.shape), array.ctypes.data
            )

    def _check_io(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for what, got, want in (
            ("inputs", self.session.get_inputs(), inputs),
            ("outputs", self.session.get_outputs(), outputs),
        ):
            described = [(v.name, list(v.shape), v.type) for v in got]
            expected = [(v["name"], list(v["shape"]), _DTYPES[v["dtype"]]) for v in want]
            if described != expected:
                raise ValueError(f"model {what} do not match task.json: {described[:4]}...")

    def run(self) -> None:
        """Run the graph once on the bound arrays; outputs land in the bound output arrays."""
        if self._copy_back:
            import numpy as np

            results = self.session.run(self._output_names, self._feeds)
            for (_, array), result in zip(self._copy_back, results, strict=True):
                np.copyto(array, result)
            return
        self.session.run_with_iobinding(self.binding)


# ------------------------------------------------------------------------------ the child


def _isolate_network() -> str:
    """Enter empty user + network namespaces if the kernel allows; else guard Python sockets."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
            return "network-namespace"
    except (OSError, AttributeError):
        pass
    import socket

    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise PermissionError("network use is not allowed in a Tessera task")

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd"):
        setattr(socket, name, refused)
    return "python-guard"


def _apply_limits(memory_bytes: int, cuda: bool = False) -> str:
    """Set the child's resource limits; return how memory is limited."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if cuda:
        # the CUDA driver reserves tens of GiB of virtual address space at start, so an
        # address-space limit would break it: host memory is then not capped, GPU memory is
        memory = "gpu arena only (gpu_mem_limit); host address space not limited with CUDA"
    else:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        memory = "RLIMIT_AS"
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # writes that would grow a file fail with EFBIG instead of killing us with SIGXFSZ
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    return memory


def _read_frame(stream: BinaryIO) -> bytes:
    header = stream.read(8)
    if len(header) != 8:
        raise EOFError("parent closed the pipe")
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("parent closed the pipe")
    return data


def _reply(out: BinaryIO, **fields: Any) -> None:
    out.write(json.dumps(fields).encode("utf-8") + b"\n")
    out.flush()


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, DeviceUnavailable):
        return "device"
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or any(word in text for word in _MEMORY_WORDS):
        return "memory"
    return "model"


def main() -> None:
    """Entry point of the child: set up the sandbox, load the model, serve run requests."""
    network = _isolate_network()  # first: unshare needs a single-threaded process
    stdin = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    config = json.loads(_read_frame(stdin))
    model_bytes = _read_frame(stdin)
    cuda = "CUDAExecutionProvider" in config["providers"]
    memory = _apply_limits(config["memory_bytes"], cuda)
    try:
        import mmap

        import numpy  # noqa: F401 - imports open files: all of them before the filter
        import onnxruntime  # noqa: F401

        # The model is in memory and nothing of it has run: from here on the child needs no
        # new files, processes or sockets, not even while ONNX Runtime builds the session.
        syscalls = "none (CUDA opens devices while running)" if cuda else syscall_filter.install()
        region = mmap.mmap(config["fd"], config["size"])
        inputs, outputs = config["inputs"], config["outputs"]
        arrays = views(region, inputs + outputs)
        executor = GraphExecutor(
            model_bytes,
            inputs,
            outputs,
            arrays,
            config["threads"],
            config["providers"],
            config["memory_bytes"],
        )
        del model_bytes
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, then we exit
        _reply(out, ok=False, kind=_error_kind(exc), error=str(exc)[:500])
        return
    _reply(
        out,
        ok=True,
        network=network,
        syscalls=syscalls,
        memory=memory,
        torch_loaded="torch" in sys.modules,
        providers=executor.session.get_providers(),
    )
    while True:
        command = stdin.read(1)
        if command != b"R":
            return
        try:
            executor.run()
            _reply(out, ok=True)
        except BaseException as exc:  # noqa: BLE001
            _reply(out, ok=False, kind=_error_kind(exc), error=str(exc)[:500])
            return


class LocalGraph:
    """The child's executor run in this process (no isolation): for benchmarks and tests.

    Same layout, same binding, same session options as the sandbox; ``onnx_seconds`` adds up
    the time spent inside ONNX Runtime so callers can tell it from their own overhead.
    """

    def __init__(
        self,
        model_bytes: bytes,
        inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
        threads: int = 1,
        providers: list[str] | None = None,
    ) -> None:
        import mmap
        import time

        self._clock = time.perf_counter
        _, size = layout(inputs + outputs)
        self._region = mmap.mmap(-1, size)  # anonymous and page-aligned, like the memfd
        self.arrays = views(self._region, inputs + outputs)
        self.executor = GraphExecutor(
            model_bytes,
            inputs,
            outputs,
            self.arrays,
            threads,
            providers or ["CPUExecutionProvider"],
        )
        self.onnx_seconds = 0.0
        self.info: dict[str, Any] = {"network": "none (in process)", "torch_loaded": None}

    def run(self) -> None:
        """Run the graph once on what is in ``arrays``."""
        start = self._clock()
        self.executor.run()
        self.onnx_seconds += self._clock() - start
