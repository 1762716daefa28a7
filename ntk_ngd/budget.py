"""A time budget for multi-method runs: estimate each method's wall time from its declared complexity
(``Method.cost``, operation counts at the requested size; :mod:`ntk_ngd.methods._cost`) and skip, with one line
saying so, the methods whose estimate exceeds the budget — instead of a silent wait.

    seconds ≈ OVERHEAD_S + flops / FLOPS_PER_SECOND,

with one rate calibrated on the development machine (2 CPU cores, float64, jax 0.4.38) against the declared
counts of ``ntk-ngd train`` runs timed method by method (the constants' comments give the numbers). The estimates
are indicative: they assume an otherwise idle machine (the development machine is shared; under a load average
of 10 the same runs took up to 10x longer), and compile time, memory traffic and BLAS threading move them by a
factor of a few either way (the eigendecomposition-bound kfac_cor ran 5x slower than its estimate). They decide
only what is skipped; ``--force`` (or ``--budget 0``) runs everything.

Runs: ``train`` evaluates the kernel twice (the step rule at θ₀, the isotropy of the final metric) and one update
per step; ``simulate`` evaluates it once and a closed form (one eigendecomposition of order R), or once per step
for the methods whose kernel depends on the residual or a random draw.
"""
from __future__ import annotations

import dataclasses
import os

from .methods import _cost, get

#: effective operations per second of the Gram-form code (2-core CPU, float64). Calibrated on the per-method times
#: of issue 27's run (digits, C = 10 cross-entropy: k = 9 rows per sample, N = 100, width 512, depth 3, 10 steps):
#: kpsvd 8.1e11 declared operations in 34 s (2.4e10/s), ekfac 5.6e11 in 32 s (1.8e10/s), unit_wise 1.12e12 in 58 s
#: (1.9e10/s), gd + exact + kfac 2.5e11 in 14 s together (1.8e10/s). The default command (N = 32, one output,
#: 20 steps; 2026-12-06, load average ~1): unit_wise 2.1e10 in 4.1 s, kfac_cor 6.2e11 in 151 s (4.1e9/s: its
#: order-1024 eigendecompositions ran slower than the model; on the loaded machine one took 26 s in numpy).
FLOPS_PER_SECOND = 2e10
#: seconds every method costs whatever its size (tracing, jit compilation, dispatch): the cheapest methods of
#: the default command took 0.6-1.0 s each
OVERHEAD_S = 1.0
#: default per-method budget of `--method all` runs, in seconds: the default `ntk-ngd train` then skips kfac_cor
#: (estimated 32 s, measured 151 s) and finishes within a minute on 2 cores (the 13 others took 26 s together)
DEFAULT_BUDGET_S = 20.0


def load_note() -> str:
    """'(on an idle machine; load average now L on C cores)': the estimates assume an idle machine."""
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover (no load average on this platform)
        return "(on an idle machine)"
    return f"(on an idle machine; load average now {load} on {os.cpu_count()} cores)"


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
