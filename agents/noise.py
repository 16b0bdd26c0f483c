"""Each DP-SGD step's Gaussian noise, drawn by helper processes while the step's graph runs.

The noise does not depend on the data, so it can be drawn while the sandboxed child runs the
step's graph and the vault clips the gradients: on a second core it leaves the step's critical
path. (Drawn a whole step ahead instead, it ran beside the optimizer's and the next inputs'
memory-bound passes and slowed them more than it saved.) Not on a thread: the draw holds Python's
GIL through the AES keystream and between its numpy calls, and the step's many small numpy
calls then queue for the lock (measured: a drawing thread slowed the rest of the step by 0.2 ms
of the 0.9 ms it hid; a process, by 0.05 ms). The helper is our code, trusted like the vault,
started at the start of a round, alongside the sandbox child: it draws each step's noise
(:meth:`agents.dpsgd.SecureRandom.normal`, one fresh AES key per round) into a shared-memory
buffer that only the vault and it map. With more spare cores, up to MAX_HELPERS helpers each
draw a slice of the step's noise, each with its own key (:func:`helper_count`). The sandbox
child is started with none of our descriptors and cannot reach these processes (seccomp: no
ptrace, no process_vm_readv, no open). On one core, or if a helper cannot start or dies, the
draw runs in the vault's own thread: slower, the same noise.

Protocol: one JSON line of config (the buffer's descriptor and size, the helper's slice, the
std), then one byte per command (``D`` draw, ``Q`` quit); after each draw the helper answers
``K`` and its total drawing seconds (float64, 8 bytes).
"""

from __future__ import annotations

import json
import mmap
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

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
MAX_HELPERS = 4  # past this, waking them costs the step more than their draws take
MAX_STEPS_PER_DRAW = 16  # in process, small models' noise is drawn this many steps at once


def cores_available() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - macOS, Windows


def helper_count(size: int, graph_threads: int = 1) -> int:
    """How many helpers should draw ``size`` values a step, beside a graph on ``graph_threads``.

    One per spare core (the graph's threads keep theirs busy while the helpers draw), up to
    MAX_HELPERS, with at least HELPER_MIN_VALUES values each. Split, a slow core's share fits in
    the step's graph time (measured: a 16-core Xeon drew the reference MLP's 269k values in
    1.07 ms on one core while its graph took 0.5 ms, and the step waited for the rest).
    """
    spare = cores_available() - max(graph_threads, 1)
    return max(0, min(MAX_HELPERS, spare, size // HELPER_MIN_VALUES))


@dataclass
class _Helper:
    """One helper process and the slice ``[offset, offset + count)`` of the noise it draws."""

    process: subprocess.Popen[bytes]
    offset: int
    count: int
    draw_seconds: float = 0.0  # its drawing time, as it last reported


class NoiseAhead:
    """Gaussian noise N(0, std^2) for ``size`` values per step, added to the clipped means.

    Call :meth:`start` as a step's graph starts and :meth:`add_to` when the means are ready.
    ``std`` is sigma * C * k when the means are clipped sums times k: the Gaussian mechanism
    on the sum, scaled. The noise never leaves this object and the helpers; :meth:`close`
    zeroes it (whoever learned a step's noise could subtract it from the released update).
    ``helpers`` (default: :func:`helper_count`) is how many helper processes draw, each its
    own slice with its own key; with none, draws are made when asked for, in this process.

    With ``into_params`` the draw is subtracted from the parameters instead (SGD's update
    ``p -= mean + noise``): :meth:`hold_params` puts them where the helpers can reach, they
    subtract their draws while the graph runs, and :meth:`subtract_from` only waits for them.
    That takes the noise's pass over the parameters off the step's critical path.
    """

    def __init__(
        self,
        size: int,
        std: float,
        helpers: int | None = None,
        graph_threads: int = 1,
        into_params: bool = False,
    ) -> None:
        self.size, self.std = size, std
        self.into_params = into_params
        self.draw_seconds = 0.0  # drawing time in this process
        self._gone_seconds = 0.0  # drawing time of helpers since stopped
        # drawn here, small draws are made several steps at a time: a draw's dozen numpy calls
        # cost about as much as drawing 10k values, and most models are that small
        self._steps_per_draw = max(1, min(MAX_STEPS_PER_DRAW, HELPER_MIN_VALUES // max(size, 1)))
        self._local = np.zeros(self._steps_per_draw * size, dtype=np.float32)
        self._local_left = 0  # steps' draws in _local not handed out yet
        self._helpers: list[_Helper] = []
        self._fd = -1
        self._region: mmap.mmap | None = None
        self._shared: np.ndarray | None = None
        self._shared_params: np.ndarray | None = None  # flat, for the helpers to update
        self._held: list[np.ndarray] = []  # what hold_params returned
        self._pending = False
        self._closed = False
        self._rng: SecureRandom | None = None
        if helpers is None:
            helpers = helper_count(size, graph_threads)
        if helpers > 0:
            try:
                self._start_helpers(min(helpers, size))
                if not into_params:  # (with into_params, not before the parameters are held)
                    self.start()  # the first step's draw, as soon as the helpers are up
            except OSError:
                self._stop_helpers()

    @property
    def mode(self) -> str:
        """Where the noise is drawn now: "helper process", "N helper processes" or "in process"."""
        if not self._helpers:
            return "in process"
        count = len(self._helpers)
        return "helper process" if count == 1 else f"{count} helper processes"

    @property
    def helper_draw_seconds(self) -> float:
        """The helpers' drawing time so far, added up (CPU time on their cores)."""
        return sum(helper.draw_seconds for helper in self._helpers) + self._gone_seconds

    def _start_helpers(self, count: int) -> None:
        # the noise, then (into_params) the parameters from a 64-byte boundary
        params_at = -(-4 * self.size // 64) * 64 if self.into_params else None
        nbytes = max((params_at or 0) + 4 * self.size, 4)
        self._fd = shared_memory_fd(nbytes, "tessera-noise")
        self._region = mmap.mmap(self._fd, nbytes)
        self._shared = np.frombuffer(self._region, dtype=np.float32, count=self.size)
        if params_at is not None:
            self._shared_params = np.frombuffer(
                self._region, dtype=np.float32, count=self.size, offset=params_at
            )
        env = {"LC_ALL": "C", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        if "PATH" in os.environ:
            env["PATH"] = os.environ["PATH"]
        bounds = np.linspace(0, self.size, count + 1).astype(int)
        for offset, end in zip(bounds[:-1], bounds[1:], strict=True):
            process = subprocess.Popen(
                worker_command(NOISE_WORKER_ARG),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                pass_fds=(self._fd,),
                close_fds=True,
                env=env,
            )
            helper = _Helper(process, int(offset), int(end - offset))
            self._helpers.append(helper)
            assert process.stdout is not None
            os.set_blocking(process.stdout.fileno(), False)
            config = {"fd": self._fd, "bytes": nbytes, "std": self.std, "params_at": params_at,
                      "offset": helper.offset, "count": helper.count}  # fmt: skip
            self._send(helper, json.dumps(config).encode("ascii") + b"\n")

    @staticmethod
    def _send(helper: _Helper, data: bytes) -> None:
        assert helper.process.stdin is not None
        view = memoryview(data)
        while view:  # unbuffered: one write(2) for a command
            view = view[os.write(helper.process.stdin.fileno(), view) :]

    @staticmethod
    def _receive(helper: _Helper) -> None:
        """Wait for a helper's answer to a draw; OSError if it has none."""
        assert helper.process.stdout is not None
        fd = helper.process.stdout.fileno()
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
        helper.draw_seconds = seconds

    def start(self) -> None:
        """Have the helpers draw the next noise now (no-op if they are drawing or have drawn)."""
        if self._closed:
            raise RuntimeError("this noise source is closed")
        if not self._helpers or self._pending:
            return
        try:
            for helper in self._helpers:
                self._send(helper, b"D")
            self._pending = True
        except OSError:
            self._stop_helpers()

    def _noise(self) -> np.ndarray:
        """This step's draw: the helpers', or one made here if a helper fails."""
        self.start()
        if self._pending:
            self._pending = False
            try:
                for helper in self._helpers:
                    self._receive(helper)
                assert self._shared is not None
                return self._shared
            except OSError:
                self._stop_helpers()  # the same noise, drawn here from now on
        return self._draw_here()

    def _draw_here(self) -> np.ndarray:
        started = time.perf_counter()
        if self._rng is None:
            self._rng = SecureRandom()  # one key per round: each draw continues its stream
        if self._local_left == 0:
            self._rng.normal(self._local.size, self.std, out=self._local)
            self._local_left = self._steps_per_draw
        first = (self._steps_per_draw - self._local_left) * self.size
        self._local_left -= 1
        self.draw_seconds += time.perf_counter() - started
        return self._local[first : first + self.size]

    def add_to(self, means: Sequence[np.ndarray]) -> None:
        """Add this step's draw to ``means`` (writable C-contiguous float32, in parameter
        order, ``size`` values in all), in place."""
        if self.into_params:
            raise RuntimeError("this noise source subtracts its draws from the parameters")
        _check_fits(means, self.size)
        _apply(means, self._noise(), np.add)

    def hold_params(self, values: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Copies of ``values`` for :meth:`subtract_from`: where the helpers update them
        (into_params, with helpers running), else ordinary arrays. Read them before close()."""
        if not self.into_params:
            raise RuntimeError("this noise source adds its draws to the means")
        if self._pending:  # a helper may be writing there right now
            raise RuntimeError("hold the parameters before the first draw")
        _check_fits(values, self.size)
        if self._shared_params is None or self._held:
            return [np.array(value, dtype=np.float32) for value in values]
        held, offset = [], 0
        for value in values:
            view = self._shared_params[offset : offset + value.size].reshape(value.shape)
            np.copyto(view, value)
            held.append(view)
            offset += value.size
        self._held = held
        return held

    def ready(self) -> bool:
        """True unless a helper is still drawing this step's noise (asks without waiting)."""
        if not self._pending:
            return True
        fds = []
        for helper in self._helpers:
            assert helper.process.stdout is not None
            fds.append(helper.process.stdout.fileno())
        try:
            return len(select.select(fds, [], [], 0)[0]) == len(fds)
        except (OSError, ValueError):
            return True  # a broken helper: subtract_from will not wait for it

    def subtract_from(self, params: Sequence[np.ndarray]) -> None:
        """``params -= this step's draw``, in place. For the arrays :meth:`hold_params` handed
        out, the helpers have done that while the graph ran: this waits for them to finish."""
        if not self.into_params:
            raise RuntimeError("this noise source adds its draws to the means")
        _check_fits(params, self.size)
        held = len(params) == len(self._held) and all(
            p is h for p, h in zip(params, self._held, strict=True)
        )
        self.start()
        if not (held and self._pending):
            _apply(params, self._noise(), np.subtract)
            return
        self._pending = False
        failed = []
        for helper in self._helpers:
            try:
                self._receive(helper)
            except OSError:
                failed.append((helper.offset, helper.count))
        if not failed:
            return
        # A helper that failed may have subtracted part of its slice's noise: the slice gets a
        # fresh draw on top (more noise than asked for, never less). Later draws are made here.
        flat = self._shared_params
        self._stop_helpers()
        assert flat is not None
        for offset, count in failed:
            noise = self._draw_here()[offset : offset + count]
            flat[offset : offset + count] -= noise

    def _stop_helpers(self) -> None:
        helpers, self._helpers = self._helpers, []
        self._pending = False
        for helper in helpers:
            self._gone_seconds += helper.draw_seconds
            stop_child(helper.process)  # before the wipe: it may be drawing
        if self._shared is not None:
            self._shared.fill(0.0)
            self._shared = None
        # held parameters stay readable: their views keep the mapping (release_shared)
        self._shared_params = None
        release_shared(self._region, self._fd)
        self._region, self._fd = None, -1

    def close(self) -> None:
        """Stop the helpers and wipe the noise."""
        self._closed = True
        self._stop_helpers()
        self._local.fill(0.0)

    def __enter__(self) -> NoiseAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_fits(arrays: Sequence[np.ndarray], size: int) -> None:
    total = sum(a.size for a in arrays)
    if total != size:
        raise ValueError(f"noise for {size} values, the arrays hold {total}")
    for array in arrays:
        if array.dtype != np.float32 or not array.flags.c_contiguous or not array.flags.writeable:
            raise ValueError("the arrays must be writable C-contiguous float32 arrays")


def _apply(arrays: Sequence[np.ndarray], noise: np.ndarray, op: np.ufunc) -> None:
    """``array = op(array, its slice of noise)`` for each array, in order, in place."""
    offset = 0
    for array in arrays:
        flat = array.reshape(-1)  # a view: contiguous
        op(flat, noise[offset : offset + flat.size], out=flat)
        offset += flat.size


def worker_main() -> None:
    """Entry point of the helper: draw into the shared buffer on each ``D`` until ``Q``/EOF."""
    stdin = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    config = json.loads(stdin.readline())
    std, offset, count = float(config["std"]), int(config["offset"]), int(config["count"])
    region = mmap.mmap(config["fd"], int(config["bytes"]))
    noise = np.frombuffer(region, dtype=np.float32, count=count, offset=4 * offset)
    params = None
    if config["params_at"] is not None:
        start = int(config["params_at"]) + 4 * offset
        params = np.frombuffer(region, dtype=np.float32, count=count, offset=start)
    seconds = 0.0
    rng = SecureRandom()  # one key for the round: each draw continues its keystream
    while stdin.read(1) == b"D":
        started = time.perf_counter()
        rng.normal(count, std, out=noise)
        if params is not None:
            params -= noise
        seconds += time.perf_counter() - started
        out.write(_REPLY.pack(b"K", seconds))
        out.flush()
