"""Sampled Fisher: G = (1/k)Σ_s Σ_n J̃_nᵀξ_n^{(s)}ξ_n^{(s)ᵀ}J̃_n/N with whitened model samples ξ, E[ξξᵀ] = I
(THEORY.md claim 7); rule "tikhonov". MSE: ξ ~ N(0, I_C) (targets sampled from the Gaussian model);
cross-entropy: ξ_n = S_n^{−1/2}Vᵀ(p_n − e_y), y ~ Cat(p_n) (:meth:`ntk_ngd.losses.Loss.sample_scores`).
Options ``samples`` (k) and ``seed``: the draw of step t uses ``jax.random.fold_in(PRNGKey(seed), t)``,
so the kernel (step 0), the dynamics, training and the dense reference see the same samples.

A weighted Fisher (:mod:`._weighted`) with E holding ξ_n^{(s)}/√k in sample n's rows; Q_n = (1/k)Σ_s ξξᵀ.
With every Q_n invertible (Gaussian draws with k ≥ rows per sample, almost surely; categorical draws only
when they hit enough distinct classes) and ρ = 0: Θ_SF = Q⁻¹ on the training points,
Δf = −ηQ⁻¹u (for one output −η u ⊘ mean(ξ²)): random, not isotropic, unbiased only in G, not in the
step (see the fisher_variance figure). With k smaller than the rows per sample Q is singular: the
step exists only for ρ > 0 (Woodbury). Step rule: η = 1.
"""
from __future__ import annotations

import dataclasses
import math
import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate, _warn, linalg
from . import _conditions, _weighted
from ._cost import gram_solve_cost
from ._metric import woodbury_metric
from .base import Method, Option, Prediction, diagonal_prediction, register


def draw(loss, f, options: dict, step: int):
    """Whitened model scores of step ``step``: (N, k, samples)."""
    key = jax.random.fold_in(jax.random.PRNGKey(options["seed"]), step)
    return loss.sample_scores(key, jnp.asarray(f), options["samples"])


def _factor(ctx):
    scores = ctx.scores
    return linalg.per_sample_factor(scores / math.sqrt(scores.shape[-1]))


def _full_rank(ctx) -> bool:
    """Every Q_n invertible: samples ≥ rows per sample (almost surely)."""
    return ctx.scores.shape[-1] >= ctx.scores.shape[1]


def kernel(train, test, ctx):
    theta_test = None if test is None else test.full_output_ntk()
    # whether every Q_n is invertible depends on the draw (cross-entropy's categorical samples can repeat a
    # class): checked on its eigenvalues when concrete; under jit the Woodbury form (exact either way) when
    # ρ > 0, else the full-rank form when samples ≥ rows (almost surely right for Gaussian draws)
    if not _validate.is_traced(ctx.scores):
        invertible = None
    else:
        invertible = False if ctx.damping.positive else _full_rank(ctx)
    return _weighted.weighted_fisher_kernel(train.full_output_ntk(), theta_test, _factor(ctx), ctx,
                                            label="sf: the sampled Fisher", invertible=invertible)


def _weights(theta, ctx):
    """w with (G + ρI)⁻¹J̃ᵀu = J̃ᵀw, for any weight Q (singular or not): write J̃ᵀu = Φᵀb + (J̃ᵀu − Φᵀb),
    Φ = EᵀJ̃, b = (EᵀΘE)⁺EᵀΘu; the second part is in null(G) and is scaled by 1/(Nρ) (dropped at ρ = 0: the
    pseudo-inverse G⁺∇, which is the ρ → 0⁺ limit exactly when u ∈ range(E), e.g. every Q_n invertible)."""
    E = _factor(ctx)
    shift = ctx.damping.shift("tikhonov", ctx.n)
    u = ctx.residual
    gram = E.T @ theta @ E
    b = linalg.solve(gram, E.T @ (theta @ u), 0.0, ctx.rcond)
    w = E @ linalg.solve(gram, b, shift, ctx.rcond)
    if ctx.damping.positive:
        w = w + (u - E @ b) / shift
    return w


def step(train, test, ctx):
    """Θ_SF u = Θw on the training points and Θ(x', X)w on test points (w of :func:`_weights`)."""
    theta = train.full_output_ntk()
    w = _weights(theta, ctx)
    return theta @ w, None if test is None else test.full_output_ntk() @ w


def direction(train, ctx):
    w = _weights(jnp.sum(train.ntk, axis=0), ctx)
    return [linalg.jt(H, d, w) for H, d in zip(train.inputs, train.deltas)]


def warn_if_singular(samples: int, rows: int, positive: bool) -> None:
    if samples < rows and not positive:
        _warn.warn("sf", f"samples={samples} < {rows} rows per sample makes every per-sample Fisher weight singular, "
                   "so at damping 0 the update is the pseudo-inverse G^+ grad (the damping -> 0 limit is infinite)",
                   f"pass damping > 0 or samples >= {rows}", key="singular_weight", stacklevel=4)


def predict(lk, ctx):
    """Θ_SF = Q⁻¹ (claim 7; every Q_n invertible, ρ = 0, Θ invertible): random, not isotropic. With one row per
    sample the prediction carries the diagonal 1/q_n, q_n = mean_s ξ_n², from the step's draw alone."""
    theta = lk.full_output_ntk()
    cond = (_conditions.full_rank("ntk", theta, theta.shape[0], "the NTK", ctx.rcond, lk.rows_label if lk.ntk.shape[1] == theta.shape[0] else "N*C"),
            _conditions.undamped(ctx.damping))
    pred = Prediction("sf", None, False, cond, note="sampled Fisher: Θ_SF = Q⁻¹, random, not isotropic")
    scores = np.asarray(ctx.scores)
    if scores.shape[1] == 1 and all(c.holds for c in cond):
        q = np.mean(scores[:, 0, :] ** 2, axis=1)
        return diagonal_prediction(dataclasses.replace(pred, alpha=float(np.mean(1.0 / q))), 1.0 / q)
    return pred


OPTIONS = (Option("samples", 1, lambda v, _: _validate.positive_int("samples", v), "k model samples per input"),
           Option("seed", 0, lambda v, _: _validate.positive_int("seed", v, minimum=0), "seed of the samples"))

SF = register(Method("sf", "sampled Fisher, k Monte Carlo targets (samples=, seed=)", kernel, direction, predict,
                     damping_rule="tikhonov", options=OPTIONS, step_rule="one", step=step, draw=draw,
                     metric=woodbury_metric(_weighted.full_ntk, _factor), cost=gram_solve_cost(global_solves=2)))
