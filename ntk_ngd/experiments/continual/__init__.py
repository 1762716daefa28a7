"""Figure `continual`: continual learning in function space — OGD, ONG and Fisher-orthogonal projections, forgetting
predicted exactly from cross-task kernels (CONTINUAL.md claims 1–7, docs/THEORY.md "Continual learning in function
space", issue 15).

Rotated digits (8×8, 10 classes one-hot, MSE; tasks rotated by ``max_angle``/(T − 1) degrees each), MLPs of depth
``depth`` in the NTK parameterisation. Panels:

* (a) one step on task B protecting task A, per method × projection: the lazy prediction η‖K^P_AB r_B‖ of the
  forgetting (ntk_ngd.continual.projected_kernels, at the finite network's parameters) beside the forgetting of a
  real parameter step (projected_direction, Gram form) — erf network so that the Taylor remainder is exactly second
  order: consistent projections (ogd, ong) are predicted 0 and measured O(η²); every prediction is the first-order
  term (remainder ratio 4 when η halves). Claims 1 and 4.
* (claim 4d) λ_min/λ_max of the symmetric part of OGD-projected NGD's learning kernel over random digit draws
  (< 0 would mean some residual ascends) and the 2-D counterexample where it does.
* (b) T × T accuracy matrices (infinite width, closed form) of ``trained_method`` with the ``heatmaps``
  projections; (c) average accuracy and loss forgetting per method × projection. Claim 7; in the full profile
  also real (centred) training beside them.
* (d) width: finite-width forgetting/learning kernels and the centred trained network's forgetting against the
  infinite-width lazy prediction, log-log slopes (claims 3, 6), with a wrong-limit control.
* (e) memory m: stored samples keep their outputs exactly, unstored ones move (claim 5).

Modules: ``_measure`` (the runs), ``_checks`` (claims as checks), ``_constants`` (tolerances and their error
models), ``_plot`` (the panels).
"""
from __future__ import annotations

import warnings

from ... import methods, plotting
from .._base import Coverage, ExperimentResult, single_thread_blas
from . import _checks, _measure
from ._plot import figure

_COMMON = {"depth": 3, "max_angle": 180.0, "n_tasks": 5, "seed": 0, "damping": 1e-3, "basis_damping": 1e-2,
           "step_fraction": 0.1, "trained_method": "exact", "heatmaps": ["none", "ogd", "ong", "ong_euclidean"]}

PROFILES = {
    "tiny": {**_COMMON, "width": 128, "n": 4, "n_seq": 8, "seq_steps": 5,
             "trained_heatmaps": [], "widths": [256, 512, 1024], "sweep_seeds": [0, 1], "n_width": 4, "width_steps": 2,
             "n_memory": 8, "memories": [0, 1, 2, 4, 8], "draws": 3, "n_draw": 8},
    "quick": {**_COMMON, "width": 512, "n": 10, "n_seq": 40, "seq_steps": 20,
              "trained_heatmaps": [], "widths": [256, 512, 1024], "sweep_seeds": [0, 1], "n_width": 10,
              "width_steps": 3, "n_memory": 40, "memories": [0, 1, 2, 5, 10, 20, 40], "draws": 20, "n_draw": 20},
    "full": {**_COMMON, "width": 1024, "n": 20, "n_seq": 60, "seq_steps": 30, "trained_heatmaps": ["none", "ong"], "widths": [256, 512, 1024, 2048, 4096],
             "sweep_seeds": [0, 1, 2], "n_width": 20, "width_steps": 5, "n_memory": 100,
             "memories": [0, 1, 2, 5, 10, 20, 50, 100], "draws": 100, "n_draw": 30},
}


def run(config: dict, out_dir) -> ExperimentResult:
    with single_thread_blas(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run(config, out_dir)


def _run(config, out_dir):
    cfg = dict(config)
    one, one_unsupported = _measure.one_step(cfg)  # every registry method with a metric (_measure.registry_methods)
    seqs, trained, seq_unsupported = _measure.sequences(cfg)
    sweep = _measure.width_sweep(cfg)
    mem = _measure.memory_sweep(cfg)
    draws, draw_unsupported = _measure.learning_kernels(cfg)
    counter = _measure.counterexample()
    checks = _checks.by_claim(_checks.one_step_checks(one) + _checks.learning_checks(draws, counter)
                              + _checks.sequence_checks(seqs, trained, cfg["trained_method"])
                              + _checks.width_checks(sweep) + _checks.memory_checks(mem))
    fig = figure(cfg, one, seqs, trained, sweep, mem, draws, counter)
    data = {"one_step": one, "sequences": seqs, "trained_sequences": trained, "width_sweep": sweep, "memory": mem,
            "learning_kernel_draws": draws, "counterexample_4d": counter,
            "methods_left_out": {"one_step": one_unsupported, "sequences": seq_unsupported,
                                 "learning_kernel_draws": draw_unsupported,
                                 "every_panel": _measure.skipped(cfg)},
            "dataset": "rotated digits (sklearn 8x8), 10 classes one-hot, MSE, standardised per task"}
    png, js = plotting.save(fig, "continual", data=data, out_dir=out_dir, config=cfg)
    m = cfg["trained_method"]
    summary = (f"{m} avg acc none {seqs[m]['none']['average_accuracy']:.3f} / ogd {seqs[m]['ogd']['average_accuracy']:.3f}"
               f" / ong {seqs[m]['ong']['average_accuracy']:.3f} / ong_euclidean "
               f"{seqs[m]['ong_euclidean']['average_accuracy']:.3f}; width slopes kernel "
               f"{sweep['slope_kernel_none']:.2f}, trained {sweep['slope_trained_none']:.2f}; 4d counterexample "
               f"r^T L r = {counter['ogd']:.3f}")
    unsupported = {"one": one_unsupported, "sequences": seq_unsupported, "draws": draw_unsupported}
    return ExperimentResult("continual", png, js, checks, summary, 0.0, coverage=_coverage(checks, cfg, unsupported))


#: the panel behind each claim family (``_measure``): one real step (finite width), learning-kernel draws and
#: sequences (infinite width), and the single-method width and memory sweeps
_PANELS = {"claim 1": "one", "claim 4": "one", "claim 2": "draws", "claim 7": "sequences"}


def _coverage(checks, cfg, unsupported) -> tuple:
    """Per claim family, the registry methods its rows cover and why the others are left out (the panel's
    registry filter, what a method raised there, the single-method sweeps' scope)."""
    infinite = {s.name: f"finite_width_only: {s.finite_width_only}" for s in methods.registered() if s.finite_width_only}
    out = []
    for family in dict.fromkeys(c.family for c in checks if c.family):
        panel = _PANELS.get(family)
        if panel is None:
            reasons = {s.name: "this claim is measured on one or two methods only (width / memory sweep: cost)"
                       for s in methods.registered()}
        else:
            reasons = {**_measure.skipped(cfg), **(infinite if panel != "one" else {}), **unsupported[panel]}
            if family == "claim 4":
                reasons.setdefault("gd", "M = I: every projection of gd is OGD (no naive variant to compare)")
        out.append(Coverage.of_checks(family, checks, reasons))
    return tuple(out)


__all__ = ["PROFILES", "run"]
