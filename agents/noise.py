"""Each DP-SGD step's Gaussian noise, drawn by a helper process while the step's graph runs.

The noise does not depend on the data, so it can be drawn while the sandboxed child runs the
step's graph and the vault clips the gradients: on a second core it leaves the step's critical
path. (Drawn a whole step ahead instead, it ran beside the optimizer's and the next inputs'
memory-bound passes and slowed them more than it saved.) Not on a thread: the draw holds Python's
GIL through the AES keystream and between its numpy calls, and the step's many small numpy
calls then queue for the lock (measured: a drawing thread slowed the rest of the step by 0.2 ms
of the 0.9 ms it hid; a process, by 0.05 ms). The helper is our code, trusted like the vault,
started at the start of a round, alongside the sandbox child: it draws each step's noise
(:meth:`agents.dpsgd.SecureRandom.normal`, one fresh AES key per round) into a shared-memory
buffer that only the vault and it map. The sandbox child is started with none of our
descriptors and cannot reach either process (seccomp: no ptrace, no process_vm_readv, no
open). On one core, or if the helper cannot start or dies, the draw runs in the vault's own
thread: slower, the same noise.

Protocol: one JSON line of config, then one byte per command (``D`` draw, ``Q`` quit); after
each draw the helper answers ``K`` and its total drawing seconds (float64, 8 bytes).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np

from agents import NOISE_WORKER_ARG, worker_command
from agents.dpsgd import SecureRandom
from agents.sandbox import release_shared, shared_memory_fd, stop_child

_REPLY = struct.Struct("<cd")
_TIMEOUT_S = 30.0  # a draw takes milliseconds; past this the helper is stuck
# Below this many values a draw takes under 0.2 ms, and a helper per round (numpy and
# cryptography imported: ~0.1 s of CPU and ~40 MB) would cost more than it saves over a round's
# few local steps; most recipes' models have a few dozen parameters.
HELPER_MIN_VALUES = 1 << 16


def cores_available() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - macOS, Windows


class NoiseAhead:
    """Gaussian noise N(0, std^2) for ``size`` values per step, added to the clipped means.

    Call :meth:`start` as a step's graph starts and :meth:`add_to` when the means are ready.
    ``std`` is sigma * C * k when the means are clipped sums times k: the Gaussian mechanism
    on the sum, scaled. The noise never leaves this object and the helper; :meth:`close`
    zeroes it (whoever learned a step's noise could subtract it from the released update).
    ``ahead`` (default: with more than one core and at least HELPER_MIN_VALUES values) says
    whether a helper draws; without one, draws are made when asked for, in this process.
    """

    def __init__(self, size: int, std: float, ahead: bool | None = None) -> None:
        self.size, self.std = size, std
        self.draw_seconds = 0.0  # drawing time in this process
        self.helper_draw_seconds = 0.0  # drawing time in the helper, as it reports
        self._local = np.zeros(size, dtype=np.float32)
        self._process: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._region: mmap.mmap | None = None
        self._shared: np.ndarray | None = None
        self._pending = False
        self._closed = False
        self._rng: SecureRandom | None = None
        if ahead is None:
            ahead = cores_available() > 1 and size >= HELPER_MIN_VALUES
        if ahead:
            with contextlib.suppress(OSError):
                self._start_helper()
                self.start()  # the first step's draw, as soon as the helper is up

    @property
    def mode(self) -> str:
        """Where the noise is drawn now: "helper process" or "in process"."""
        return "helper process" if self._process is not None else "in process"

    def _start_helper(self) -> None:
        nbytes = max(4 * self.size, 4)
        self._fd = shared_memory_fd(nbytes, "tessera-noise")
        self._region = mmap.mmap(self._fd, nbytes)
        self._shared = np.frombuffer(self._region, dtype=np.float32, count=self.size)
        env = {"LC_ALL": "C", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        if "PATH" in os.environ:
            env["PATH"] = os.environ["PATH"]
        self._process = subprocess.Popen(
            worker_command(NOISE_WORKER_ARG),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            pass_fds=(self._fd,),
            close_fds=True,
            env=env,
        )
        assert self._process.stdout is not None
        os.set_blocking(self._process.stdout.fileno(), False)
        config = {"fd": self._fd, "size": self.size, "std": self.std}
        self._send(json.dumps(config).encode("ascii") + b"\n")

    def _send(self, data: bytes) -> None:
        assert self._process is not None and self._process.stdin is not None
        view = memoryview(data)
        while view:  # unbuffered: one write(2) for a command
            view = view[os.write(self._process.stdin.fileno(), view) :]

    def _receive(self) -> None:
        """Wait for the helper's answer to a draw; OSError if it has none."""
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        answer = b""
        deadline = time.monotonic() + _TIMEOUT_S
        while len(answer) < _REPLY.size:
            try:  # the pipe does not block: usually the answer is there already
                chunk = os.read(fd, _REPLY.size - len(answer))
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    raise OSError("the noise helper did not answer") from None
                continue
            if not chunk:
                raise OSError("the noise helper exited")
            answer += chunk
        tag, seconds = _REPLY.unpack(answer)
        if tag != b"K":
            raise OSError("the noise helper answered garbage")
        self.helper_draw_seconds = seconds

    def start(self) -> None:
        """Have the helper draw the next noise now (no-op if it is drawing or has drawn it)."""
        if self._closed:
            raise RuntimeError("this noise source is closed")
        if self._process is None or self._pending:
            return
        try:
            self._send(b"D")
            self._pending = True
        except OSError:
            self._stop_helper()

    def _noise(self) -> np.ndarray:
        """This step's draw: the helper's, or one made here if there is no (working) helper."""
        self.start()
        if self._pending:
            self._pending = False
            try:
                self._receive()
                assert self._shared is not None
                return self._shared
            except OSError:
                self._stop_helper()  # the same noise, drawn here from now on
        started = time.perf_counter()
        if self._rng is None:
            self._rng = SecureRandom()  # one key per round: each draw continues its stream
        self._rng.normal(self.size, self.std, out=self._local)
        self.draw_seconds += time.perf_counter() - started
        return self._local

    def add_to(self, means: Sequence[np.ndarray]) -> None:
        """Add this step's draw to ``means`` (writable C-contiguous float32, in parameter
        order, ``size`` values in all), in place."""
        total = sum(m.size for m in means)
        if total != self.size:
            raise ValueError(f"noise for {self.size} values, means hold {total}")
        for mean in means:
            if mean.dtype != np.float32 or not mean.flags.c_contiguous or not mean.flags.writeable:
                raise ValueError("means must be writable C-contiguous float32 arrays")
        noise = self._noise()
        offset = 0
        for mean in means:
            flat = mean.reshape(-1)  # a view: contiguous
            flat += noise[offset : offset + flat.size]
            offset += flat.size

    def _stop_helper(self) -> None:
        process, self._process = self._process, None
        self._pending = False
        if process is not None:
            stop_child(process)  # before the wipe: it may be drawing
        if self._shared is not None:
            self._shared.fill(0.0)
            self._shared = None
        release_shared(self._region, self._fd)
        self._region, self._fd = None, -1

    def close(self) -> None:
        """Stop the helper and wipe the noise."""
        self._closed = True
        self._stop_helper()
        self._local.fill(0.0)

    def __enter__(self) -> NoiseAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_main() -> None:
    """Entry point of the helper: draw into the shared buffer on each ``D`` until ``Q``/EOF."""
    stdin = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    config = json.loads(stdin.readline())
    size, std = int(config["size"]), float(config["std"])
    region = mmap.mmap(config["fd"], max(4 * size, 4))
    noise = np.frombuffer(region, dtype=np.float32, count=size)
    seconds = 0.0
    rng = SecureRandom()  # one key for the round: each draw continues its keystream
    while stdin.read(1) == b"D":
        started = time.perf_counter()
        rng.normal(size, std, out=noise)
        seconds += time.perf_counter() - started
        out.write(_REPLY.pack(b"K", seconds))
        out.flush()
