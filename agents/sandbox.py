"""The parent's side of the task sandbox: start the child, talk to it, kill it at the limits.

One :class:`Sandbox` is one child process (``agents/sandbox_worker.py``) for one round. Data
moves through one shared-memory region (a memfd inherited by the child) laid out by
``sandbox_worker.layout``; the pipes carry only the model bytes, a JSON config, one-byte run
commands and one-line JSON replies, so nothing from the child is ever unpickled here. The child
gets an empty temporary directory as its working directory (removed afterwards), a minimal
environment with fixed thread counts (ONNX Runtime's intra-op pool, OMP/MKL/OpenBLAS), and
the wall-time limit: past it, the child is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from agents import SANDBOX_WORKER_ARG, worker_command
from agents.sandbox_worker import layout, views
from vault.errors import TesseraError

_MAX_REPLY = 64 * 1024


class TaskFailed(TesseraError):
    """A task's round was killed (memory or time limit) or its model failed to run."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one round's child process."""

    memory_mib: int = 2048
    time_s: float = 60.0
    threads: int = 1


def resolve_providers(device: str) -> list[str]:
    """The ONNX Runtime providers for ``device`` (cpu, gpu or auto); TaskFailed if impossible."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "gpu":
        if "CUDAExecutionProvider" not in available:
            raise TaskFailed(
                "device gpu asked for, but this ONNX Runtime has no CUDAExecutionProvider "
                "(install onnxruntime-gpu with a working CUDA, or use --device cpu)"
            )
        return ["CUDAExecutionProvider"]
    if device == "auto":  # the GPU if ONNX Runtime can start it, else the CPU
        cuda = "CUDAExecutionProvider" in available
        return (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        )
    raise TaskFailed(f"unknown device {device!r} (use cpu, gpu or auto)")


def shared_memory_fd(size: int, name: str) -> int:
    """A descriptor of ``size`` bytes of memory that a child can be handed (pass_fds) and map:
    a memfd (named ``name`` only in /proc), or an unlinked temporary file without memfd."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)  # on no filesystem; children get it by pass_fds
    else:  # pragma: no cover - macOS: an unlinked temporary file serves the same purpose
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, size)
    return fd


def stop_child(process: subprocess.Popen[bytes]) -> None:
    """Ask a helper child to quit (``Q`` on its stdin), SIGKILL it if it has not in 2 s, and
    close our ends of its pipes."""
    if process.poll() is None and process.stdin is not None:
        try:
            process.stdin.write(b"Q")
            process.stdin.close()
            process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
    if process.poll() is None:
        process.kill()  # SIGKILL to our own child, by its pid
        process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None and not stream.closed:
            with contextlib.suppress(OSError):
                stream.close()


def release_shared(region: mmap.mmap | None, fd: int) -> None:
    """Unmap ``region`` and close ``fd`` (either may be absent: None, -1)."""
    if region is not None:
        # BufferError: a caller still holds a view; the mapping goes when that does
        with contextlib.suppress(BufferError):
            region.close()
    if fd >= 0:
        os.close(fd)


def _worker_command() -> list[str]:
    return worker_command(SANDBOX_WORKER_ARG)


def _child_env(threads: int, workdir: str) -> dict[str, str]:
    env = {"HOME": workdir, "TMPDIR": workdir, "LC_ALL": "C", "MALLOC_ARENA_MAX": "2"}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    # PATH, and where the CUDA libraries are and which GPUs the user lets programs see
    for name in ("PATH", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class Sandbox:
    """A child process holding one ONNX session bound to a shared region; use with ``with``."""

    def __init__(
        self,
        model_bytes: bytes,
        inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
        limits: SandboxLimits,
        providers: list[str],
    ) -> None:
        self.limits = limits
        self._model = model_bytes
        self._inputs, self._outputs = inputs, outputs
        self._providers = providers
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: str | None = None
        self._fd = -1
        self._region: mmap.mmap | None = None
        self._buffer = b""
        self.arrays: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.deadline = 0.0

    def __enter__(self) -> Sandbox:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self.deadline = time.monotonic() + self.limits.time_s
        _, size = layout(self._inputs + self._outputs)
        self._fd = shared_memory_fd(size, "tessera-round")
        self._region = mmap.mmap(self._fd, size)
        self.arrays = views(self._region, self._inputs + self._outputs)
        self._workdir = tempfile.mkdtemp(prefix="tessera-task-")
        config = {
            "fd": self._fd,
            "size": size,
            "inputs": self._inputs,
            "outputs": self._outputs,
            "threads": self.limits.threads,
            "providers": self._providers,
            "memory_bytes": self.limits.memory_mib * 1024 * 1024,
        }
        debug = bool(os.environ.get("TESSERA_DEBUG"))
        self._process = subprocess.Popen(
            _worker_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if debug else subprocess.DEVNULL,
            cwd=self._workdir,
            env=_child_env(self.limits.threads, self._workdir),
            pass_fds=(self._fd,),
            close_fds=True,
        )
        assert self._process.stdin is not None
        try:
            for frame in (json.dumps(config).encode("utf-8"), self._model):
                self._process.stdin.write(len(frame).to_bytes(8, "little") + frame)
            self._process.stdin.flush()
        except OSError:  # the child died before reading its model
            self._died()
        self.info = self._reply()

    def run(self) -> None:
        """Run the graph once on what is in ``arrays``; TaskFailed on any failure or limit."""
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(b"R")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died()
        self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise TaskFailed(f"task killed: exceeded time limit of {self.limits.time_s:g} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self._died()
            self._buffer += chunk
            if len(self._buffer) > _MAX_REPLY:
                self._kill()
                raise TaskFailed("task failed: the task process sent an oversized reply")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
            if not isinstance(reply, dict):
                raise ValueError
        except ValueError:
            self._kill()
            raise TaskFailed("task failed: the task process sent a malformed reply") from None
        if reply.get("ok") is True:
            return reply
        self._kill()
        error = str(reply.get("error", "unknown error"))[:500]
        if reply.get("kind") == "device":
            raise TaskFailed(error)
        if reply.get("kind") == "memory":
            # keep ONNX Runtime's own words from the allocation failure on, not its source path
            found = error.lower().find("failed to allocate")
            error = error[found:].strip() if found >= 0 else error
            raise TaskFailed(
                f"task killed: exceeded memory limit of {self.limits.memory_mib} MiB ({error})"
            )
        raise TaskFailed(f"model failed: {error}")

    def _died(self) -> None:
        assert self._process is not None
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self._process.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            # RLIMIT_AS makes allocations fail; runtimes that do not check end in SIGSEGV or
            # SIGABRT, and the kernel's OOM killer sends SIGKILL
            raise TaskFailed(
                f"task killed: exceeded memory limit of {self.limits.memory_mib} MiB "
                f"(the task process died with {name})"
            )
        raise TaskFailed(f"task failed: the task process exited unexpectedly (code {code})")

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()  # SIGKILL to our own child, by its pid
            self._process.wait()

    def close(self) -> None:
        """Stop the child (kill it if it does not quit at once) and free everything."""
        if self._process is not None:
            stop_child(self._process)
            self._process = None
        self.arrays = {}
        release_shared(self._region, self._fd)
        self._region, self._fd = None, -1
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
