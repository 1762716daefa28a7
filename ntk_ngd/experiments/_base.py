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


#: The verdict of a check (docs/THEORY.md "Verification"): theory predicts it and the measurement agrees within a
#: tolerance fixed before the run; a named condition fails and the predicted magnitude is met; theory is silent
#: (the number is shown, no verdict); theory predicts it but the run cannot resolve it at this profile (the
#: number is shown with the profile that would resolve it); the measurement contradicts the stated prediction.
STATUSES = ("holds", "breaks as predicted", "unpredicted", "unresolved", "fails")
#: What a negative control changes (issue 19): another registered method; an input that breaks a named condition
#: of the claim; a wrong theory value on the same measurement (``Control.theory`` states it); other data. A
#: control whose value is a function of the measured value alone (reversed order, rescaling) is a defect.
CONTROL_KINDS = ("other_method", "broken_condition", "wrong_theory", "other_data")
#: "evidence" rows count as verification; "identity (sanity)" rows restate a computation through a shared
#: formula or helper and are shown but not counted as evidence.
KINDS = ("evidence", "identity (sanity)")


@dataclasses.dataclass(frozen=True)
class Control:
    """A negative control: the same check run through the same pipeline on an input where the claim is known
    not to hold. ``failed`` must be True (the check can fail). ``kind`` one of :data:`CONTROL_KINDS`;
    ``theory`` the wrong theory value a ``wrong_theory`` control judges the measurement against."""

    description: str
    measured: float
    failed: bool
    kind: str
    theory: float | None = None

    def __post_init__(self):
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"unknown control kind {self.kind!r}; choose one of: {', '.join(CONTROL_KINDS)}")
        if self.theory is not None and self.kind != "wrong_theory":
            raise ValueError("only a wrong_theory control states a (wrong) theory value")

    def as_dict(self) -> dict:
        out = {"description": self.description, "measured": _number(self.measured), "failed": bool(self.failed),
               "kind": self.kind}
        if self.theory is not None:
            out["theory"] = _number(self.theory)
        return out


@dataclasses.dataclass(frozen=True)
class Check:
    """One claim of a figure: the measured number beside the theoretical one, the tolerance and the error model
    that fixed it (before the run), the status, and the negative controls.

    ``finding``: for a "fails" row, the docs/THEORY.md anchor that records it as a finding (a "fails" row
    without one is a bug). ``calibration``: seeds a data-driven band was calibrated on and judged on.
    ``family``: the claim family the row belongs to (each family of a figure carries at least one negative
    control); ``methods``: the registered methods the row checks (the figure's method coverage is read from
    these, :class:`Coverage`)."""

    claim: str
    measured: float
    theory: float | str
    tolerance: str  # human-readable, e.g. "|diff| <= 1e-8" or "slope in [-0.6, -0.4]"
    status: str
    error_model: str = ""
    controls: tuple[Control, ...] = ()
    kind: str = "evidence"
    finding: str = ""
    calibration: dict | None = None
    family: str = ""
    methods: tuple[str, ...] = ()

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; choose one of: {', '.join(STATUSES)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; choose one of: {', '.join(KINDS)}")

    @property
    def passed(self) -> bool:
        """Compatibility: True for "holds" and "breaks as predicted"."""
        return self.status in ("holds", "breaks as predicted")

    def with_controls(self, *controls: Control) -> "Check":
        return dataclasses.replace(self, controls=self.controls + tuple(controls))

    def about(self, family: str, *methods: str) -> "Check":
        """The same row tagged with its claim family and the methods it checks."""
        return dataclasses.replace(self, family=family, methods=tuple(methods))

    def as_dict(self) -> dict:
        out = {"claim": self.claim, "measured": _number(self.measured), "theory": self.theory,
               "tolerance": self.tolerance, "status": self.status, "passed": self.passed,
               "error_model": self.error_model, "kind": self.kind,
               "controls": [c.as_dict() for c in self.controls]}
        if self.finding and self.status == "fails":  # the THEORY.md finding is linked where the row fails
            out["finding"] = self.finding
        if self.calibration is not None:
            out["calibration"] = self.calibration
        if self.family:
            out["family"] = self.family
        if self.methods:
            out["methods"] = list(self.methods)
        return out


def _number(x):
    if x is None or isinstance(x, str):
        return x
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _status(ok: bool, expect: str) -> str:
    if expect not in ("holds", "breaks"):
        raise ValueError(f"expect must be 'holds' or 'breaks', got {expect!r}")
    if not ok:
        return "fails"
    return "holds" if expect == "holds" else "breaks as predicted"


def close(measured, theory, rel_tol) -> bool:
    """|measured − theory| ≤ rel_tol·|theory| (absolute when theory = 0), measured finite."""
    measured, theory = float(measured), float(theory)
    scale = abs(theory) if theory != 0 else 1.0
    return math.isfinite(measured) and abs(measured - theory) <= rel_tol * scale


def below(measured, bound) -> bool:
    measured = float(measured)
    return math.isfinite(measured) and measured <= bound


def within(measured, lo, hi) -> bool:
    measured = float(measured)
    return math.isfinite(measured) and lo <= measured <= hi


def check_close(claim: str, measured: float, theory: float, rel_tol: float, *, error_model: str = "",
                expect: str = "holds", controls=(), kind: str = "evidence", finding: str = "",
                calibration: dict | None = None) -> Check:
    """|measured − theory| ≤ rel_tol·|theory| (absolute when theory = 0)."""
    return Check(claim, float(measured), float(theory), f"rel. error <= {rel_tol:g}",
                 _status(close(measured, theory, rel_tol), expect), error_model, tuple(controls), kind, finding,
                 calibration)


def check_below(claim: str, measured: float, bound: float, theory: float | str = 0.0, *, error_model: str = "",
                expect: str = "holds", controls=(), kind: str = "evidence", finding: str = "",
                calibration: dict | None = None) -> Check:
    return Check(claim, float(measured), theory, f"<= {bound:g}", _status(below(measured, bound), expect),
                 error_model, tuple(controls), kind, finding, calibration)


def check_range(claim: str, measured: float, lo: float, hi: float, theory: float | str, *, error_model: str = "",
                expect: str = "holds", controls=(), kind: str = "evidence", finding: str = "",
                calibration: dict | None = None) -> Check:
    return Check(claim, float(measured), theory, f"in [{lo:g}, {hi:g}]", _status(within(measured, lo, hi), expect),
                 error_model, tuple(controls), kind, finding, calibration)


def unpredicted(claim: str, measured: float, note: str = "theory silent") -> Check:
    """A number the theory makes no statement about: shown, no verdict."""
    return Check(claim, float(measured), note, "-", "unpredicted")


def unresolved(claim: str, measured: float, theory: float | str, needs: str, **fields) -> Check:
    """Theory predicts ``theory`` but the run cannot resolve it at this profile: shown with ``needs`` (what
    profile would resolve it), no verdict; counted apart from ``unpredicted``."""
    return Check(claim, float(measured), theory, f"unresolved: {needs}", "unresolved", **fields)


def identity(check: Check) -> Check:
    """The same row labelled "identity (sanity)": its measured side reuses the theory side's formula or helper,
    so it is shown but not counted as evidence."""
    return dataclasses.replace(check, kind="identity (sanity)")


# ---------------------------------------------------------------------------------------------
# log-log slopes with a band calibrated on other seeds
# ---------------------------------------------------------------------------------------------
def pooled_sigma(log_values) -> float:
    """Standard deviation across seeds (columns) of log values, pooled over the widths (rows), ddof 1."""
    import numpy as np

    return float(np.sqrt(np.mean(np.var(np.asarray(log_values, float), axis=1, ddof=1))))


def slope_and_se(widths, log_values, sigma) -> tuple[float, float]:
    """Least-squares slope of the seed mean of ``log_values`` (widths × seeds) against log M, and its standard
    error σ/√(J·Sxx) (J seeds, Sxx = Σ(log M − mean)²) for a per-seed scatter σ."""
    import numpy as np

    x = np.log(np.asarray(widths, float))
    y = np.mean(np.asarray(log_values, float), axis=1)
    sxx = float(np.sum((x - x.mean()) ** 2))
    return float(np.sum((x - x.mean()) * (y - y.mean())) / sxx), float(sigma / np.sqrt(np.shape(log_values)[1] * sxx))


@dataclasses.dataclass(frozen=True)
class SlopeControl:
    """The negative control of :func:`check_slope`: a run on another input where the exponent differs
    (``log_judged``: widths × seeds of that run, judged against the row's band), or, with ``rival``, the same
    measurement against a wrong exponent (kind ``wrong_theory``). ``kind`` one of :data:`CONTROL_KINDS`."""

    description: str
    kind: str
    log_judged: object = None
    rival: float | None = None


def check_slope(claim: str, widths, log_calibration, log_judged, theory: float, *, control: SlopeControl,
                k_se: float = 3.0, resolution: float | None = None, needs: str = "", seeds=None, finding: str = "",
                what: str = "log D") -> Check:
    """A log-log slope against ``theory`` with a band calibrated on other seeds: σ of the per-seed ``log_judged``
    values is estimated from ``log_calibration`` (widths × calibration seeds), the slope of the judged seeds'
    mean has SE σ/√(J·Sxx), band theory ± k_se·SE. With ``resolution``: a band wider than it cannot tell the
    candidate exponents apart and the row is ``unresolved`` (``needs``: the profile that would resolve it).
    ``control`` (:class:`SlopeControl`): the slope of another input's runs through the same band, or the
    measurement against a rival exponent. ``seeds``: (calibration seeds, judged seeds), stored in ``calibration``."""
    import numpy as np

    widths = np.asarray(widths, float)
    finite = bool(np.all(np.isfinite(log_calibration)) and np.all(np.isfinite(log_judged)))
    if not finite:  # a run diverged: the claim (the deviation falls with M) fails there; show the finite widths
        ok = np.all(np.isfinite(log_calibration), axis=1) & np.all(np.isfinite(log_judged), axis=1)
        note = ", ".join(f"{w:g}" for w in widths[~ok])
        if ok.sum() >= 2:
            rest, _ = slope_and_se(widths[ok], np.asarray(log_judged)[ok], 0.0)
            note += f"; slope over the other widths {rest:.3g}"
        return Check(f"{claim} [runs diverged at M = {note}]", float("nan"), theory, "-", "fails",
                     "a run diverged (non-finite deviation)", finding=finding)
    sigma = pooled_sigma(log_calibration)
    slope, se = slope_and_se(widths, log_judged, sigma)
    lo, hi = theory - k_se * se, theory + k_se * se
    calibration = {"sigma_" + what.replace(" ", "_"): sigma, "slope_se": se, "k_se": k_se}
    if seeds is not None:
        calibration.update(calibration_seeds=list(seeds[0]), judged_seeds=list(seeds[1]))
    if resolution is not None and k_se * se > resolution:
        return unresolved(claim, slope, theory, f"{k_se:g} SE = {k_se * se:.2g} > {resolution:g}; "
                          + (needs or "more judged seeds or a wider width range"), calibration=calibration)
    if control.rival is not None:
        ctrl = Control(control.description, slope, not within(slope, control.rival - k_se * se,
                                                              control.rival + k_se * se), "wrong_theory",
                       control.rival)
    else:
        other, _ = slope_and_se(widths, control.log_judged, sigma)
        ctrl = control_range(control.description, other, lo, hi, kind=control.kind)
    return check_range(claim, slope, lo, hi, theory, calibration=calibration, finding=finding,
                       error_model=f"Monte Carlo: {k_se:g} SE of the judged slope, sigma of {what} from calibration seeds",
                       controls=[ctrl])


# ---------------------------------------------------------------------------------------------
# which registered methods a claim family covers (every method list derives from the registry)
# ---------------------------------------------------------------------------------------------
def random_reason(spec) -> str | None:
    """Skip reason for a random method (its Θ_G changes with the draw of model samples)."""
    return ("random: Θ_G depends on the draw of model samples (its step statistics are checked in figures "
            "ef_vs_ief and fisher_variance)") if spec.random else None


def infinite_width_reason(spec) -> str | None:
    """Skip reason for a method without an infinite-width limit (the registry's own words)."""
    return f"finite_width_only: {spec.finite_width_only}" if spec.finite_width_only else None


@dataclasses.dataclass(frozen=True)
class Coverage:
    """The registered methods a claim family applies to (``skipped``: method → reason, read from the
    method's registry attributes, for the others). Which methods it *covers* is read from the checks
    tagged with this family (:meth:`Check.about`), so a method that applies but got no row shows up as
    missing in :meth:`as_dict` (the smoke test fails on it)."""

    family: str
    skipped: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, family: str, reason=lambda spec: None) -> "Coverage":
        from .. import methods

        skipped = tuple((m.name, r) for m in methods.registered() if (r := reason(m)))
        return cls(family, skipped)

    @classmethod
    def of_checks(cls, family: str, checks, reasons: dict) -> "Coverage":
        """The family as its rows cover it, the registry methods without a row skipped with their ``reasons``
        (method → why the figure left it out; a method with neither a row nor a reason is *missing*)."""
        covered = {m for c in checks if c.family == family for m in c.methods}
        return cls(family, tuple((m, why) for m, why in reasons.items() if m not in covered))

    def skip(self, name: str, reason: str) -> "Coverage":
        """The same family with ``name`` skipped for ``reason`` (what the method itself raised on these data)."""
        return dataclasses.replace(self, skipped=self.skipped + ((name, reason),))

    def applies(self) -> tuple:
        """The :class:`~ntk_ngd.methods.Method` objects this family applies to, in registry order."""
        from .. import methods

        skip = dict(self.skipped)
        return tuple(m for m in methods.registered() if m.name not in skip)

    def as_dict(self, checks) -> dict:
        from .. import methods

        covered = {m for c in checks if c.family == self.family for m in c.methods}
        skip = dict(self.skipped)
        return {"family": self.family,
                "covered": [m for m in methods.names() if m in covered],
                "skipped": skip,
                "missing": [m for m in methods.names() if m not in covered and m not in skip]}


def control_close(description: str, measured, theory, rel_tol, *, kind: str, wrong_theory=None) -> Control:
    """The row's comparison on a control input (``kind``), or, for ``kind="wrong_theory"``, the measurement
    against ``wrong_theory`` (a value the claim excludes)."""
    ref = theory if wrong_theory is None else wrong_theory
    return Control(description, measured, not close(measured, ref, rel_tol), kind, wrong_theory)


def control_below(description: str, measured, bound, *, kind: str) -> Control:
    return Control(description, measured, not below(measured, bound), kind)


def control_range(description: str, measured, lo, hi, *, kind: str, wrong_theory=None) -> Control:
    return Control(description, measured, not within(measured, lo, hi), kind, wrong_theory)


def _simple_ratio(control: float, measured: float) -> bool:
    """control = c·measured with c a small rational (|c| = p/q, p, q ≤ 10, c ≠ 0): a sign flip or a rescaling."""
    from fractions import Fraction

    if not (math.isfinite(control) and math.isfinite(measured)) or measured == 0 or control == 0:
        return False
    ratio = control / measured
    c = Fraction(ratio).limit_denominator(10)
    return c != 0 and abs(c.numerator) <= 10 and abs(ratio - float(c)) <= 1e-9 * abs(ratio)


def audit(checks) -> list[str]:
    """Framework defects of a figure's rows (issue 19): an evidence verdict ("holds", "breaks as predicted") without
    a negative control; a control of a kind other than ``wrong_theory`` whose value is the measured value times a
    small rational (sign flip, rescaling: computable from the measurement alone); a ``wrong_theory`` control on the
    measured value itself without a wrong theory that differs from the row's."""
    out = []
    for c in checks:
        if c.kind == "evidence" and c.status in ("holds", "breaks as predicted") and not c.controls:
            out.append(f"no negative control: {c.claim}")
        for k in c.controls:
            same = isinstance(k.measured, (int, float)) and k.measured == c.measured
            if k.kind == "wrong_theory":
                if same and (k.theory is None or k.theory == c.theory):
                    out.append(f"wrong_theory control without a differing theory: {c.claim} / {k.description}")
            elif _simple_ratio(float(k.measured), float(c.measured)):
                out.append(f"control is a function of the measured value alone: {c.claim} / {k.description}")
    return out


@dataclasses.dataclass
class ExperimentResult:
    name: str
    png: str
    json: str
    checks: list[Check]
    summary: str
    wall_time: float
    coverage: tuple[Coverage, ...] = ()

    @property
    def passed(self) -> bool:
        """No check failed without a recorded finding (``fails`` rows with a docs/THEORY.md finding are results),
        every control failed, no framework defect (:func:`audit`), and no registered method is missing from a
        claim family it applies to."""
        return (all(c.status != "fails" or c.finding for c in self.checks) and not audit(self.checks)
                and all(k.failed for c in self.checks for k in c.controls)
                and not any(cov.as_dict(self.checks)["missing"] for cov in self.coverage))


def single_thread_blas():
    """One BLAS thread: multithreaded OpenBLAS spins on a loaded 2-core machine (a 369×369 eigh of
    the dense reference measured 6.5 s instead of 0.04 s)."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    return threadpool_limits(1)


def progress(iterable, total=None, desc=""):
    """A tqdm bar on stderr when it is a terminal (silent in logs and CI)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not sys.stderr.isatty())
