"""A time budget for multi-method runs: estimate each method's wall time from its declared complexity
(``Method.cost``, operation counts at the requested size; :mod:`ntk_ngd.methods._cost`) and skip, with one line
saying so, the methods whose estimate exceeds the budget — instead of a silent wait.

    seconds ≈ OVERHEAD_S + flops / FLOPS_PER_SECOND,

one rate calibrated on the development machine (a 2-core shared CPU, float64, jax 0.4.38) by timing
``ntk-ngd train`` method by method at two sizes (N = 32 one output, and N = 100, C = 10 cross-entropy digits,
width 512, depth 3) against the declared counts; the measured times are in the constants' comments. The
estimates are indicative (a factor of a few either way: compile time, memory traffic, other load on the
machine); they decide only what is skipped, and ``--force`` (or ``--budget 0``) runs everything.

Runs: ``train`` evaluates the kernel twice (the step rule at θ₀, the isotropy of the final metric) and one update
per step; ``simulate`` evaluates it once and a closed form (one eigendecomposition of order R), or once per step
for the methods whose kernel depends on the residual or a random draw.
"""
from __future__ import annotations

import dataclasses

from .methods import _cost, get

#: effective operations per second of the Gram-form code on the development machine: `ntk-ngd train` method by
#: method (2-core CPU shared with other jobs, float64; 2026-12-06). Default command (N = 32, k = 1, width 512,
#: depth 3, 20 steps): kfac_cor 6.2e11 declared operations in 151 s (4.1e9/s), unit_wise 2.1e10 in 4.1 s; the
#: issue's command (digits, C = 10 cross-entropy, N = 100, 10 steps): see the calibration note in the report.
FLOPS_PER_SECOND = 4e9
#: seconds every method costs whatever its size (tracing, jit compilation, dispatch): the cheapest methods of
#: the default command took 0.6-1.0 s each
OVERHEAD_S = 1.0
#: default per-method budget of `--method all` runs, in seconds: the default `ntk-ngd train` then finishes
#: within a minute on 2 cores (kfac_cor, 151 s there, is skipped)
DEFAULT_BUDGET_S = 20.0


def seconds(flops: float) -> float:
    """Estimated wall time of ``flops`` declared operations."""
    return OVERHEAD_S + float(flops) / FLOPS_PER_SECOND


def run_flops(method, size: _cost.Size, steps: int, kind: str, options: dict | None = None) -> float:
    """Declared operations of one ``kind`` run ("train" or "simulate") of ``method`` for ``steps`` steps."""
    spec = get(method)
    cost = spec.estimate(size, options)
    if kind == "train":
        return 2 * cost.kernel + steps * cost.update
    if kind == "simulate":
        per_step = spec.needs_residual or spec.random
        return (steps if per_step else 1) * cost.kernel + (0.0 if per_step else _cost.eigh(size.rows))
    raise ValueError(f"unknown run kind {kind!r}; choose 'train' or 'simulate'")


def estimate(method, size: _cost.Size, steps: int, kind: str, options: dict | None = None) -> float:
    """Estimated seconds of one run (:func:`run_flops`, :func:`seconds`)."""
    return seconds(run_flops(method, size, steps, kind, options))


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A method left out of a run: its estimate and the budget it exceeds."""

    method: str
    estimate_s: float
    budget_s: float

    def line(self) -> str:
        return (f"{self.method}: skipped, estimated {self.estimate_s:.3g} s > budget {self.budget_s:g} s "
                f"(--force or --budget 0 runs it)")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def split(estimates: dict, budget: float | None) -> tuple[tuple[str, ...], tuple[Skipped, ...]]:
    """(methods to run, :class:`Skipped` ones) for per-method ``estimates`` (seconds) under ``budget`` (None or 0:
    no limit), in the estimates' order."""
    if budget is not None and budget < 0:
        raise ValueError(f"--budget must be >= 0 seconds (0: no limit), got {budget:g}")
    if not budget:
        return tuple(estimates), ()
    run = tuple(m for m, s in estimates.items() if s <= budget)
    return run, tuple(Skipped(m, float(s), float(budget)) for m, s in estimates.items() if s > budget)


__all__ = ["DEFAULT_BUDGET_S", "FLOPS_PER_SECOND", "OVERHEAD_S", "Skipped", "estimate", "run_flops", "seconds",
           "split"]
