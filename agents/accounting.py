"""Privacy accounting for Poisson-subsampled Gaussian DP-SGD with dp-accounting's RDP accountant.

One DP-SGD step is a ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))``; a task's history is
the composition of all its steps, possibly with different (q, sigma) per round. Epsilon at the
task's delta comes from Renyi DP (Mironov 2017) with dp-accounting's default orders and its
improved RDP -> (epsilon, delta) conversion (Balle et al. 2020), which is tighter than the
moments accountant of Abadi et al. 2016 on the same curve.

:class:`PrivacyLedger` is what the runner keeps per task: it refuses a round whose planned steps
would take epsilon over the budget (before anything runs), and checks again after every step.
Its state is a plain list of (q, sigma, steps) records, so the vault can store and reload it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from vault.errors import TesseraError


def _rdp_modules() -> tuple[ModuleType, ModuleType]:
    """dp-accounting's ``dp_event`` and RDP accountant modules, without its package __init__.

    ``dp_accounting/__init__.py`` also imports the PLD accountant and mechanism calibration,
    and with them scipy.stats, .signal, .optimize and .fft: 0.3 s more at import and about
    40 MB more in the desktop bundle. The RDP accountant needs only scipy.special. The
    package is registered bare just while its two modules load, so a later plain
    ``import dp_accounting`` still runs the real __init__ (and reuses these modules).
    """
    if "dp_accounting" not in sys.modules:
        spec = importlib.util.find_spec("dp_accounting")
        if spec is None:
            raise ImportError("dp-accounting is not installed")
        sys.modules["dp_accounting"] = importlib.util.module_from_spec(spec)
        try:
            return _load_rdp_modules()
        finally:
            del sys.modules["dp_accounting"]
    return _load_rdp_modules()


def _load_rdp_modules() -> tuple[ModuleType, ModuleType]:
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant

    return dp_event, rdp_privacy_accountant


_dp_event, _rdp = _rdp_modules()


class BudgetExceeded(TesseraError):
    """A round would take the privacy spent over the budget; it is not started."""


def _step_event(q: float, sigma: float) -> Any:
    return _dp_event.PoissonSampledDpEvent(q, _dp_event.GaussianDpEvent(sigma))


def _check_params(q: float, sigma: float, delta: float) -> None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"sampling rate must be in [0, 1], got {q}")
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"noise multiplier must be positive, got {sigma}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


@functools.lru_cache(maxsize=256)
def _step_rdp(q: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(orders, RDP of one step at each order); cached since every step repeats it."""
    accountant = _rdp.RdpAccountant()
    # dp-accounting logs a warning for each fractional order whose series does not converge
    # and drops that order; fewer orders can only raise epsilon, so the result stays safe
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        accountant.compose(_step_event(q, sigma))
    finally:
        absl_logger.setLevel(level)
    return accountant.orders, accountant.rdp


def _epsilon_of(records: list[tuple[float, float, int]], delta: float) -> float:
    # RDP at a fixed order adds up under composition, so a history is a weighted sum of
    # one-step curves: ~0.1 ms instead of re-running the accountant (~25 ms) every step
    orders, total = None, None
    for q, sigma, steps in records:
        if steps <= 0:
            continue
        orders, rdp = _step_rdp(q, sigma)
        total = steps * rdp if total is None else total + steps * rdp
    if total is None:
        return 0.0
    return float(_rdp.compute_epsilon(orders, total, delta)[0])


def epsilon(steps: int, q: float, sigma: float, delta: float) -> float:
    """Epsilon at ``delta`` after ``steps`` Poisson-sampled Gaussian steps (RDP)."""
    _check_params(q, sigma, delta)
    return _epsilon_of([(float(q), float(sigma), steps)], delta)


def max_steps(budget: float, q: float, sigma: float, delta: float, limit: int = 10**7) -> int:
    """The largest number of steps whose epsilon at ``delta`` stays within ``budget``."""
    _check_params(q, sigma, delta)
    if epsilon(1, q, sigma, delta) > budget:
        return 0
    low, high = 1, 2
    # epsilon grows with steps: double until over, then bisect
    while high < limit and epsilon(high, q, sigma, delta) <= budget:
        low, high = high, high * 2
    high = min(high, limit)
    if epsilon(high, q, sigma, delta) <= budget:
        return high
    while high - low > 1:
        mid = (low + high) // 2
        if epsilon(mid, q, sigma, delta) <= budget:
            low = mid
        else:
            high = mid
    return low


@dataclass
class PrivacyLedger:
    """Steps spent on one task and the budget they must stay within, at a fixed delta."""

    budget: float
    delta: float
    records: list[tuple[float, float, int]] = field(default_factory=list)

    def spent(self) -> float:
        """Epsilon at ``delta`` of every step recorded so far."""
        return _epsilon_of(self.records, self.delta)

    def projected(self, q: float, sigma: float, steps: int) -> float:
        """Epsilon after ``steps`` more steps at (q, sigma), without recording them."""
        _check_params(q, sigma, self.delta)
        return _epsilon_of([*self.records, (float(q), float(sigma), steps)], self.delta)

    def check_round(self, q: float, sigma: float, steps: int, budget: float | None = None) -> float:
        """Raise BudgetExceeded unless ``steps`` more steps fit; return the projected epsilon.

        ``budget``, when given, tightens the ledger's own (a request may ask for less).
        """
        limit = self.budget if budget is None else min(self.budget, budget)
        after = self.projected(q, sigma, steps)
        if after > limit:
            raise BudgetExceeded(
                f"privacy budget exceeded: this round would bring epsilon to {after:.3g}, "
                f"over the budget of {limit:.3g} (already spent {self.spent():.3g}); "
                "the round was not started"
            )
        return after

    def record_step(self, q: float, sigma: float) -> float:
        """Record one step; return epsilon spent so far. Raise if it went over the budget."""
        _check_params(q, sigma, self.delta)
        q, sigma = float(q), float(sigma)
        if self.records and self.records[-1][:2] == (q, sigma):
            last_q, last_sigma, count = self.records[-1]
            self.records[-1] = (last_q, last_sigma, count + 1)
        else:
            self.records.append((q, sigma, 1))
        spent = self.spent()
        if spent > self.budget:
            # check_round makes this unreachable; it guards against a caller that skipped it
            raise BudgetExceeded(f"privacy budget exceeded: epsilon {spent:.3g} > {self.budget}")
        return spent

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the ledger."""
        return {
            "budget": self.budget,
            "delta": self.delta,
            "records": [{"q": q, "sigma": s, "steps": n} for q, s, n in self.records],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyLedger:
        """The ledger that :meth:`to_dict` wrote."""
        records = [(float(r["q"]), float(r["sigma"]), int(r["steps"])) for r in data["records"]]
        return cls(budget=float(data["budget"]), delta=float(data["delta"]), records=records)
