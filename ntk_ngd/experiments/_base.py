"""What every experiment returns, and how its claims are checked.

An experiment module defines ``PROFILES = {"tiny": {...}, "quick": {...}, "full": {...}}`` and
``run(config: dict, out_dir) -> ExperimentResult``. "tiny" is for the smoke test, "quick" for
``ntk-ngd figures --quick`` (minutes on a laptop CPU), "full" for paper-scale settings.
Each claim the figure illustrates becomes a :class:`Check`: a measured number beside the
theoretical one, the tolerance, and the verdict; all are stored in the figure's JSON.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time


@dataclasses.dataclass(frozen=True)
class Check:
    claim: str
    measured: float
    theory: float | str
    tolerance: str  # human-readable, e.g. "|diff| <= 1e-8" or "slope in [-0.6, -0.4]"
    passed: bool

    def as_dict(self) -> dict:
        measured = self.measured if (self.measured is None or math.isfinite(self.measured)) else str(self.measured)
        return {"claim": self.claim, "measured": measured, "theory": self.theory, "tolerance": self.tolerance,
                "passed": bool(self.passed)}


def check_close(claim: str, measured: float, theory: float, rel_tol: float) -> Check:
    """PASS when |measured − theory| ≤ rel_tol·|theory| (absolute when theory = 0)."""
    measured, theory = float(measured), float(theory)
    scale = abs(theory) if theory != 0 else 1.0
    ok = math.isfinite(measured) and abs(measured - theory) <= rel_tol * scale
    return Check(claim, measured, theory, f"rel. error <= {rel_tol:g}", ok)


def check_below(claim: str, measured: float, bound: float, theory: float | str = 0.0) -> Check:
    measured = float(measured)
    return Check(claim, measured, theory, f"<= {bound:g}", math.isfinite(measured) and measured <= bound)


def check_range(claim: str, measured: float, lo: float, hi: float, theory: float | str) -> Check:
    measured = float(measured)
    return Check(claim, measured, theory, f"in [{lo:g}, {hi:g}]", math.isfinite(measured) and lo <= measured <= hi)


@dataclasses.dataclass
class ExperimentResult:
    name: str
    png: str
    json: str
    checks: list[Check]
    summary: str
    wall_time: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.start
        return False


def single_thread_blas():
    """One BLAS thread: multithreaded OpenBLAS spins on a loaded 2-core machine (a 369×369 eigh of
    the dense reference measured 6.5 s instead of 0.04 s)."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    return threadpool_limits(1)


def progress(iterable, total=None, desc=""):
    """A tqdm bar on stderr when it is a terminal (silent in logs and CI)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not sys.stderr.isatty())
