"""DP-SGD arithmetic done by the vault, not the model: clip, sum, noise, optimizer steps.

Abadi et al., "Deep Learning with Differential Privacy" (CCS 2016), Algorithm 1, with Poisson
sampling: each per-example gradient (all parameters together, as one vector) is scaled to L2
norm at most C, the scaled gradients are summed, Gaussian noise N(0, (sigma*C)^2) is added to
every coordinate, and the sum is divided by the *expected* batch size q*N (dividing by the
sampled size would leak it). Pure numpy; the ONNX model only supplies per-example gradients.

A linear layer's weight gradients may arrive factored (:class:`Outer`: example i's gradient
is ``sum_t outer(sig[i, t], act[i, t])``), as in ghost clipping (Li et al., "Large Language
Models Can Be Strong Differentially Private Learners", ICLR 2022) and book-keeping (Bu et al.,
"Differentially Private Optimization on Large Model at Small Cost", ICML 2023): norms come
from the factors (``|a_i|^2 |s_i|^2``, or Gram matrices over T positions) and the clipped sum
is one matmul ``(c * S)^T A``, so the [B, P, Q] per-example gradients never exist.

Randomness: :class:`SecureRandom` draws every uniform, Bernoulli and Gaussian from AES-256 in
counter mode under a fresh 256-bit key from ``os.urandom`` (one instance per step for the
Poisson sample, one per round for the noise: ``agents.noise``). AES-CTR is
the keystream of NIST SP 800-90A's CTR_DRBG, so its output is computationally
indistinguishable from uniform bits; a statistical generator such as PCG64 is not (its state
can be recovered from its outputs), and the Gaussian mechanism's proof assumes the adversary
cannot predict the noise. Drawing 1.6 MB through ``os.urandom`` directly costs ~10 ms here,
the keystream ~0.2 ms. Gaussians come from Box-Muller with a 52-bit uniform radius (its log
taken in float64, so the tail is cut only beyond 8.5 sigma: probability < 1e-16 per
coordinate; the square root of -2 ln u <= 72.1 then in float32, which moves a draw by less
than 1e-7 of itself) and a 24-bit angle. The keystream and intermediates of :meth:`normal`
live in a per-thread scratch buffer reused across calls; every array returned is fresh.
Known limit: float32 noise is not protected against floating-point attacks on the
low-order bits (Mironov 2012); Opacus' "secure mode" has the same caveat for the Gaussian.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Sums of squares run in float32 over blocks of this many values, then add up in float64. In
# any summation order the float32 error of one block is at most BLOCK * 2**-24 = 6.1e-5 of its
# value (3.1e-5 on the norm). A factored norm |a|^2 |s|^2 multiplies two such sums: at most
# 1.22e-4 on the square, 6.1e-5 on the norm. _NORM_MARGIN covers both: clipped norms never
# exceed C. (With T > 1 positions the factored norms are computed in float64, with a bound.)
_BLOCK = 1024
_NORM_MARGIN = 1.0 + 1e-4
# The clipped sum runs as one gemv per slice of this many columns. Slices of 64 x 4096 stay
# under OpenBLAS' threading threshold: its threaded gemv over a whole [64, 200k] gradient took
# 2-15x longer (median) than these single-threaded calls whenever other processes were busy.
_COLUMNS = 4096
# With T > 1 positions, factored norms run in float64 over examples in chunks of about this
# many temporary values (64 MB).
_FLOAT64_VALUES = 1 << 23
_vecdot = getattr(np, "vecdot", None)  # numpy >= 2: BLAS dot per block, 2x einsum's speed
_ZEROS = bytes(1 << 20)
# normal()'s keystream and float32 temporaries: reused, because a fresh multi-MB buffer per
# call cost more in page faults than the AES itself. Never handed to a caller.
_SCRATCH = threading.local()


def _scratch(nbytes: int) -> np.ndarray:
    """A uint8 work buffer of at least ``nbytes`` for this thread (contents undefined)."""
    buffer = getattr(_SCRATCH, "work", None)
    if buffer is None or buffer.size < nbytes:
        buffer = _SCRATCH.work = np.empty(max(nbytes, 1 << 16), dtype=np.uint8)
    return buffer


class NonFiniteGradient(ValueError):
    """A per-example gradient held NaN or Inf (or overflowed float32 when squared)."""


class SecureRandom:
    """Uniforms, Bernoulli draws and Gaussians from an AES-256-CTR keystream keyed by urandom."""

    def __init__(self) -> None:
        cipher = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16)))
        self._encryptor = cipher.encryptor()

    def _keystream_into(self, out: np.ndarray) -> None:
        """Overwrite all but the last 16 bytes of the uint8 array ``out`` with keystream."""
        # update_into wants room for a block it never writes in CTR: hence the 16 spare bytes
        view = memoryview(out).cast("B")
        n, done = len(view) - 16, 0
        while done < n:
            chunk = min(n - done, len(_ZEROS))
            self._encryptor.update_into(_ZEROS[:chunk], view[done : done + chunk + 16])
            done += chunk

    def random_bytes(self, n: int) -> np.ndarray:
        """``n`` keystream bytes as a (fresh) uint8 array."""
        out = np.empty(n + 16, dtype=np.uint8)
        self._keystream_into(out)
        return out[:n]

    def uniform(self, n: int) -> np.ndarray:
        """``n`` float64 uniforms in [0, 1) with 52 random mantissa bits."""
        bits = self.random_bytes(8 * n).view("<u8")
        bits >>= np.uint64(12)
        bits |= np.uint64(0x3FF0000000000000)
        one_two = bits.view(np.float64)
        one_two -= 1.0
        return one_two

    def bernoulli(self, n: int, p: float) -> np.ndarray:
        """``n`` independent booleans, each True with probability ``p``."""
        return self.uniform(n) < p

    def normal(self, n: int, std: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
        """``n`` float32 draws from N(0, std^2) by Box-Muller, in ``out`` or a fresh array."""
        if out is None:
            out = np.empty(n, dtype=np.float32)
        elif out.shape != (n,) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 [{n}], got {out.dtype}{list(out.shape)}")
        pairs = (n + 1) // 2
        keystream = 12 * pairs + 16
        scratch = _scratch(keystream + 8 * pairs)
        raw = scratch[:keystream]
        self._keystream_into(raw)
        bits = raw[: 8 * pairs].view("<u8")
        bits >>= np.uint64(12)
        bits |= np.uint64(0x3FF0000000000000)
        u = bits.view(np.float64)  # [1, 2)
        np.subtract(2.0, u, out=u)  # (0, 1]: log never sees 0
        np.log(u, out=u)
        radius = scratch[keystream + 4 * pairs : keystream + 8 * pairs].view(np.float32)
        np.multiply(u, -2.0, out=radius, casting="same_kind")
        np.sqrt(radius, out=radius)
        radius *= np.float32(std)
        angle = raw[8 * pairs : 12 * pairs].view("<u4")
        angle >>= np.uint32(8)
        theta = scratch[keystream : keystream + 4 * pairs].view(np.float32)
        # < 2**24 after the shift: exact as int32 and as float32 (int32 converts fastest)
        np.copyto(theta, angle.view("<i4"), casting="unsafe")
        theta *= np.float32(2.0 * math.pi / 2**24)
        np.cos(theta, out=out[:pairs])
        out[:pairs] *= radius
        np.sin(theta, out=theta)
        np.multiply(theta[: n - pairs], radius[: n - pairs], out=out[pairs:])
        return out


@dataclass(frozen=True)
class Outer:
    """A 2-D weight's per-example gradients as factors, straight from the (untrusted) graph.

    ``sig`` is [B, P] or [B, T, P], ``act`` is [B, Q] or [B, T, Q]; example i's gradient is
    ``sum_t outer(sig[i, t], act[i, t])``, shaped [P, Q] like the weight.
    """

    sig: np.ndarray
    act: np.ndarray

    def rows(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(S [n*T, P], A [n*T, Q], T) over the first ``n`` examples only."""
        if self.sig.ndim == 2 and len(self.sig) == n and len(self.act) == n:
            return self.sig, self.act, 1
        positions = self.sig.shape[1] if self.sig.ndim == 3 else 1
        sig = self.sig[:n].reshape(n * positions, self.sig.shape[-1])
        act = self.act[:n].reshape(n * positions, self.act.shape[-1])
        return sig, act, positions

    def materialize(self, n: int) -> np.ndarray:
        """The first ``n`` per-example gradients, [n, P, Q] float32 (reference and tests)."""
        sig, act, positions = self.rows(n)
        sig = sig.reshape(n, positions, -1)
        act = act.reshape(n, positions, -1)
        return np.matmul(sig.transpose(0, 2, 1), act)


PerExample = np.ndarray | Outer


def _flat_rows(grad: np.ndarray, n: int) -> np.ndarray:
    return grad[:n].reshape(n, -1)


def per_example_sq_norms(grads: Sequence[PerExample], n: int) -> np.ndarray:
    """Squared L2 norms (float64, [n]) of the first ``n`` per-example gradients, all params."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        parts = [
            _outer_sq_norms(g, n) if isinstance(g, Outer) else _row_sq_norms(_flat_rows(g, n))
            for g in grads
        ]
        # one [params, n] array, added up in float64 (whatever each part's dtype)
        total = np.sum(parts, axis=0, dtype=np.float64) if parts else np.zeros(n)
    if not np.all(np.isfinite(total)):
        raise NonFiniteGradient("the model returned NaN, Inf or overflowing gradients")
    return total


def _row_sq_norms(rows: np.ndarray) -> np.ndarray:
    """Squared norms of each row of float32 ``rows`` [m, k], per the block bound (float32 for
    rows of one block, float64 else; a float32 square that overflows comes out Inf)."""
    m, width = rows.shape
    if width <= _BLOCK:  # one block per row
        if _vecdot is not None:
            return _vecdot(rows, rows)
        return np.einsum("ij,ij->i", rows, rows)  # pragma: no cover
    total = np.zeros(m, dtype=np.float64)
    full = width // _BLOCK * _BLOCK
    if full:
        blocks = rows[:, :full].reshape(m, full // _BLOCK, _BLOCK)
        if _vecdot is not None:
            partial = _vecdot(blocks, blocks)
        else:  # pragma: no cover - numpy 1.x
            partial = np.einsum("ijk,ijk->ij", blocks, blocks)
        total += partial.sum(axis=1, dtype=np.float64)
    if full < width:
        tail = rows[:, full:]
        total += np.einsum("ij,ij->i", tail, tail).astype(np.float64)
    return total


def _outer_sq_norms(grad: Outer, n: int) -> np.ndarray:
    """|sum_t outer(s_t, a_t)|_F^2 per example, never below the true value beyond the margin."""
    sig, act, positions = grad.rows(n)
    if positions == 1:  # |outer(s, a)|^2 = |s|^2 |a|^2 exactly; the product in float64
        return np.multiply(_row_sq_norms(sig), _row_sq_norms(act), dtype=np.float64)
    p, q = sig.shape[1], act.shape[1]
    sig = sig.reshape(n, positions, p)
    act = act.reshape(n, positions, q)
    gram = positions * (p + q) <= p * q  # <A A^T, S S^T> costs less than forming S^T A
    per_example = positions * (p + q) + (positions * positions if gram else p * q)
    step = max(1, _FLOAT64_VALUES // per_example)
    sq = np.empty(n)
    bound = np.empty(n)
    for first in range(0, n, step):
        s = sig[first : first + step].astype(np.float64)
        a = act[first : first + step].astype(np.float64)
        if gram:
            part = np.einsum("bts,bts->b", a @ a.transpose(0, 2, 1), s @ s.transpose(0, 2, 1))
        else:
            g = s.transpose(0, 2, 1) @ a
            part = np.einsum("bpq,bpq->b", g, g)
        sq[first : first + step] = part
        bound[first : first + step] = np.einsum("btq,btq->b", a, a) * np.einsum("btp,btp->b", s, s)
    # Cancellation: the float64 error of either form is at most about (T^2 + P + Q) * 2**-53
    # times |A|^2 |S|^2 (each Gram entry or G entry errs by its length * 2**-53 times a product
    # of norms; Cauchy-Schwarz bounds their sum). Adding 8x that keeps the norm from coming out
    # low even when |G|^2 is far below |A|^2 |S|^2; the rest is relative and inside the margin.
    return np.maximum(sq, 0.0) + (positions * positions + p + q) * 2.0**-50 * bound


def clip_factors(sq_norms: np.ndarray, clip_norm: float, scale: float = 1.0) -> np.ndarray:
    """Per-example weights ``min(1, C/norm) * scale`` as float32 (norms taken with a margin
    for float32 rounding). ``scale`` = 1/E turns the weighted sum into the clipped mean."""
    norms = np.sqrt(sq_norms) * _NORM_MARGIN
    with np.errstate(divide="ignore"):
        factors = np.minimum(1.0, clip_norm / norms) * scale
    return factors.astype(np.float32)


def weighted_sum(
    grad: PerExample, n: int, factors: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """sum_i factors[i] * gradient_i over the first ``n`` examples, in the parameter's shape
    (written to ``out``, C-contiguous float32, when given)."""
    shape = _param_shape(grad)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 {list(shape)}")
    if isinstance(grad, Outer):
        # one matmul (c * S)^T A: the per-example [P, Q] gradients are never formed
        weighted, act = _weighted_rows(grad, n, factors)
        return np.matmul(weighted.T, act, out=out)
    # f @ G: the weighted sum, without ever making a clipped per-example copy
    rows = _flat_rows(grad, n)
    flat = out.reshape(-1)  # a view: out is contiguous
    if rows.shape[1] <= _COLUMNS:
        np.matmul(factors, rows, out=flat)
        return out
    for start in range(0, rows.shape[1], _COLUMNS):
        np.matmul(factors, rows[:, start : start + _COLUMNS], out=flat[start : start + _COLUMNS])
    return out


@functools.cache
def _numpy_sgemm() -> Any:
    """cblas_sgemm of the OpenBLAS inside numpy's own wheel (ILP64), or None elsewhere.

    numpy's matmul has no ``C += A B`` (BLAS beta = 1); SciPy's BLAS wrappers would bring a
    second 25 MB OpenBLAS into the desktop bundle. The wheel's library is already loaded by
    numpy; ctypes finds it again by its file name, next to the numpy package."""
    import ctypes

    folder = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(folder.glob("libscipy_openblas64_*.so*")):
        try:
            function = ctypes.CDLL(str(path)).scipy_cblas_sgemm64_
        except (OSError, AttributeError):
            continue
        i64, f32, pointer = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
        order_and_transposes = [ctypes.c_int] * 3
        function.argtypes = [*order_and_transposes, i64, i64, i64, f32, pointer, i64, pointer,
                             i64, f32, pointer, i64]  # fmt: skip
        function.restype = None
        return function
    return None


def fused_update_available() -> bool:
    """Whether :func:`subtract_weighted_sum` can run (numpy's wheel BLAS is reachable)."""
    return _numpy_sgemm() is not None


_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enums


def subtract_weighted_sum(grad: Outer, n: int, factors: np.ndarray, param: np.ndarray) -> None:
    """``param -= weighted_sum(grad, n, factors)`` as one matmul that accumulates into
    ``param`` (BLAS beta = 1): SGD's update of a factored weight fused into its weight-gradient
    matmul, one pass over the weight fewer (and no [P, Q] sum written, then read)."""
    sgemm = _numpy_sgemm()
    if sgemm is None:
        raise RuntimeError("no BLAS with beta = 1 here (see fused_update_available)")
    shape = _param_shape(grad)
    if param.shape != shape or param.dtype != np.float32 or not param.flags.c_contiguous:
        raise ValueError(f"param must be C-contiguous float32 {list(shape)}")
    weighted, act = _weighted_rows(grad, n, factors)  # weighted: fresh, C-contiguous
    act = np.ascontiguousarray(act, dtype=np.float32)
    (m, p), q = weighted.shape, act.shape[1]
    if m == 0:
        return
    # param [P, Q] = -1 * weighted^T [P, m] @ act [m, Q] + 1 * param
    sgemm(_ROW_MAJOR, _TRANS, _NO_TRANS, p, q, m, -1.0, weighted.ctypes.data, p,
          act.ctypes.data, q, 1.0, param.ctypes.data, q)  # fmt: skip


def _weighted_rows(grad: Outer, n: int, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(c * S [m, P], A [m, Q]) over the first ``n`` examples, each row of S times its
    example's factor: (c * S)^T A is the weighted sum of the factored gradients."""
    sig, act, positions = grad.rows(n)
    scale = np.repeat(factors, positions) if positions > 1 else factors
    return sig * scale[:, None], act


def _param_shape(grad: PerExample) -> tuple[int, ...]:
    if isinstance(grad, Outer):
        return (grad.sig.shape[-1], grad.act.shape[-1])
    return tuple(grad.shape[1:])


def clipped_sum(
    grads: Sequence[PerExample], n: int, clip_norm: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """Sum over the first ``n`` examples of gradients clipped jointly to ``clip_norm``.

    Rows past ``n`` are padding and are never read, so a model cannot leak through them.
    Returns the per-parameter sums and the unclipped per-example norms.
    """
    if n == 0:
        return [np.zeros(_param_shape(g), dtype=np.float32) for g in grads], np.zeros(0)
    sq = per_example_sq_norms(grads, n)
    factors = clip_factors(sq, clip_norm)
    return [weighted_sum(grad, n, factors) for grad in grads], np.sqrt(sq)


def clip_per_example(grads: Sequence[PerExample], clip_norm: float) -> list[np.ndarray]:
    """Every per-example gradient scaled to joint norm <= ``clip_norm`` (reference, tests)."""
    dense = [g.materialize(len(g.sig)) if isinstance(g, Outer) else g for g in grads]
    n = dense[0].shape[0]
    factors = clip_factors(per_example_sq_norms(grads, n), clip_norm)
    return [g * factors.reshape((n,) + (1,) * (g.ndim - 1)) for g in dense]


class SGD:
    """Plain SGD: p <- p - lr * g.

    :meth:`step` takes the gradients already multiplied by ``gradient_scale`` (= lr): the
    vault folds that into the clip weights and the noise's std, so the step is one pass.
    """

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate
        self.gradient_scale = learning_rate

    def step(self, params: list[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """Update ``params`` in place from ``grads`` times ``gradient_scale``."""
        for p, g in zip(params, grads, strict=True):
            p -= g


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction; state lives for one round."""

    def __init__(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        self.learning_rate = learning_rate
        self.gradient_scale = 1.0  # Adam's step depends on the gradients' scale (via eps)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m: list[np.ndarray] = []
        self.v: list[np.ndarray] = []

    def step(self, params: list[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """Update ``params`` in place; ``grads`` (float32, ours) are used up as scratch."""
        if not self.m:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        b1, b2 = np.float32(self.beta1), np.float32(self.beta2)
        step = self.learning_rate * math.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        for p, g, m, v in zip(params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            g *= g
            g *= 1 - b2
            v += g
            # p -= step * m / (sqrt(v) + eps), in g
            np.sqrt(v, out=g)
            g += np.float32(self.eps)
            np.divide(m, g, out=g)
            g *= np.float32(step)
            p -= g


def make_optimizer(name: str, learning_rate: float) -> SGD | Adam:
    """The optimizer called ``name`` ("sgd" or "adam")."""
    if name == "sgd":
        return SGD(learning_rate)
    if name == "adam":
        return Adam(learning_rate)
    raise ValueError(f"unknown optimizer {name!r} (use sgd or adam)")
