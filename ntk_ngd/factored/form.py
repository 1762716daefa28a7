"""The factored form of a method: what a :class:`~ntk_ngd.methods.base.Method` declares in its ``factored`` field,
the settings of the iterative solves, and the full-batch direction (THEORY.md "Factored form (parameter space)").

A factored form works per layer in parameter space, from the Kronecker factors and per-sample features of
:mod:`.features`, in three stages (so that a mini-batch optimiser can average the first and amortise the second):

* ``statistics(H, δ̃, ctx) -> stats``: a mean over samples (K-FAC's (A, G), the diagonal Fisher's D), so that an
  exponential moving average over batches is the same kind of object;
* ``inverse(stats, H, δ̃, ctx, settings, l) -> inv``: the preconditioner of layer l (eigendecompositions of
  (fan_in+1)- and fan_out-sized factors, fitted Kronecker terms); the batch features serve the methods whose
  fit is not a mean of factors (EKFAC's second moments, KPSVD's rearranged block);
* ``apply(inv, ∇_l, ctx, settings) -> W̃_l``: the preconditioned gradient (two matmuls for K-FAC).

Optionally a fourth, ``forward(stats, H, δ̃, ctx, settings, l) -> fwd``: the damped metric M_l itself rather than
its inverse, in the form ``apply`` reads, so that ``apply(fwd, ∇_l) = (M∇)_l`` (K-FAC: the damped factors
(A_l + s_A I, B_l + s_B I) instead of their inverses; EKFAC: the eigenvalues s + ρ instead of 1/(s + ρ)), and
``apply(fwd, apply(inv, ∇_l)) = ∇_l`` for ρ > 0. What needs M, not M⁻¹ (the Fisher-orthogonal projection of
:mod:`ntk_ngd.continual.finite`), asks for it; the forms without one leave it None.

Full batch, ``apply(inverse(statistics(·)), ∇)`` equals the Gram-form ``direction`` of the same method at the
same damping ρ > 0 (tests/test_factored.py). Nothing is P_l × P_l or N·C-squared.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp

from .. import _validate
from ..damping import Damping
from .features import gradient, whitened_features
from .rearranged import FITS

FORMS = ("gram", "factored")
#: damping splits of the factored form: the method's own Gram-form rule, or Martens–Grosse's π-split
SPLITS = ("rule", "pi")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Options of the factored form (hashable, static under jit).

    ``factored_damping``: "rule" (default: the method's Gram-form damping, so both forms agree) or "pi"
    (Martens–Grosse (A + π√ρ) ⊗ (G + √ρ/π) for K-FAC; for kpsvd/kfac_cor on the first term, with the exact
    two-term inverse of :mod:`.two_term`). ``cg_tol``/``cg_maxiter``: preconditioned CG for
    Kronecker sums of ≥ 2 terms (stop at ||r|| ≤ tol·||b||). ``power_tol``/``power_maxiter``: the block power
    iteration on the rearranged layer block (stop when every Ritz pair has residual ≤ tol·σ_1). ``kron_fit``:
    how kpsvd/kfac_cor fit their Kronecker terms, "auto" (the direct sample-Gram SVD when it is cheaper, else the
    power iteration), "gram" or "power" (:mod:`.rearranged`)."""

    factored_damping: str = "rule"
    kron_fit: str = "auto"
    cg_tol: float = 1e-13
    cg_maxiter: int = 2000
    power_tol: float = 1e-13
    power_maxiter: int = 5000


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(Settings))


@dataclasses.dataclass(frozen=True)
class FactoredForm:
    """The three stages of a method's factored form (module docstring) and the damping splits it supports."""

    statistics: Callable[..., Any]
    inverse: Callable[..., Any]
    apply: Callable[..., Any]
    splits: tuple[str, ...] = ("rule",)
    #: ``check(settings, options)``: a one-line ValueError for settings the form cannot honour with these options
    check: Callable[..., None] | None = None
    #: ``forward(stats, H, δ̃, ctx, settings, l) -> fwd`` with ``apply(fwd, ∇_l) = (M∇)_l`` (module docstring);
    #: None: the form exposes M⁻¹ only
    forward: Callable[..., Any] | None = None


def _check_settings(values: dict) -> Settings:
    s = Settings(**values)
    _validate.choice("factored_damping", s.factored_damping, SPLITS)
    _validate.choice("kron_fit", s.kron_fit, FITS)
    for name in ("cg_tol", "power_tol"):
        if not _validate.nonnegative(name, getattr(s, name)) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(s, name)!r}")
    _validate.positive_int("cg_maxiter", s.cg_maxiter)
    _validate.positive_int("power_maxiter", s.power_maxiter)
    return s


def methods_with_factored_form() -> tuple[str, ...]:
    """The registry's methods that declare a factored form (``Method.factored``)."""
    from ..methods.base import registered

    return tuple(m.name for m in registered() if m.factored is not None)


def split_options(spec, form: str, options: dict) -> tuple[Settings | None, dict]:
    """(factored :class:`Settings` or None for the Gram form, the method's own options): one-line errors for an
    unknown form, a method without a factored form, factored settings with ``form="gram"``, an unsupported split."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of: {', '.join(FORMS)}")
    ours = {k: options[k] for k in options if k in SETTING_NAMES}
    rest = {k: v for k, v in options.items() if k not in SETTING_NAMES}
    if form == "gram":
        if ours:
            raise ValueError(f"option(s) {sorted(ours)} belong to the factored form: pass form='factored'")
        return None, rest
    if spec.factored is None:
        raise ValueError(f"method {spec.name!r} has no factored form; methods with one: "
                         f"{', '.join(methods_with_factored_form())}")
    settings = _check_settings(ours)
    if settings.factored_damping not in spec.factored.splits:
        raise ValueError(f"factored_damping={settings.factored_damping!r} is not defined for method {spec.name!r} "
                         f"(its damping splits: {', '.join(spec.factored.splits)})")
    if spec.factored.check is not None:
        spec.factored.check(settings, rest)
    return settings, rest


def layer_direction(form: FactoredForm, H, delta, u, ctx, settings: Settings, l: int):
    """W̃_l = apply(inverse(statistics(H, δ̃)), ∇_l): one layer's full-batch factored direction."""
    inv = form.inverse(form.statistics(H, delta, ctx), H, delta, ctx, settings, l)
    return form.apply(inv, gradient(H, delta, u), ctx, settings)


def damping_in(damping, dtype) -> Damping:
    """``damping`` with its value in ``dtype`` (jax's x64 makes a Python ρ float64, which would promote a float32
    step's factors, and its cost, to float64)."""
    return Damping(jnp.asarray(damping.value).astype(dtype), damping.positive)


def context(net, spec_opts: tuple, damping, rcond, n: int, features=None):
    """The :class:`~ntk_ngd.methods.base.Context` of the factored form (the same fields as the Gram form's; no
    residual without ``features``)."""
    from ..methods.base import Context

    if features is None:
        return Context(n, damping, spec_opts, rcond, None, None, None, net)
    w = features.whitening
    damping = damping_in(damping, features.f.dtype)
    return Context(n, damping, spec_opts, rcond, jnp.reshape(w.u, (-1,)), w.s, None, net)


def direction(net, spec, opts: tuple, loss, params, X, Y, damping, rcond=None, settings: Settings = Settings(),
              offset=None) -> list:
    """Per-layer W̃_l (fan_in + bias, fan_out) of ``spec``'s factored form at ``params`` on (X, Y) (traceable);
    :func:`ntk_ngd.optim.tildes_to_tree` turns them into a params-shaped pytree."""
    feats = whitened_features(net, params, X, Y, loss, offset)
    ctx = context(net, opts, damping, rcond, X.shape[0], feats)
    return [layer_direction(spec.factored, H, d, feats.u, ctx, settings, l)
            for l, (H, d) in enumerate(zip(feats.inputs, feats.deltas))]


__all__ = ["FORMS", "FactoredForm", "SETTING_NAMES", "SPLITS", "Settings", "context", "damping_in", "direction", "layer_direction",
           "methods_with_factored_form", "split_options"]
