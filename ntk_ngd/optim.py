"""Every registered method as an optax gradient transformation (THEORY.md "Setup"; issue: optax).

    tx = optax.chain(optim.natural_gradient(net, method="kfac", damping=1e-3), optax.scale_by_learning_rate(0.1))
    updates, state = tx.update(grads, state, params, batch=(X, Y))
    params = optax.apply_updates(params, updates)

:func:`natural_gradient` returns an ``optax.GradientTransformationExtraArgs`` whose ``update`` computes
the method's direction (G + ρI)⁻¹∇L at ``params`` on ``batch = (X, Y)`` in Gram form (no P×P matrix:
per-layer features, N·k-sized Grams; :mod:`ntk_ngd.methods`) — the *positive* preconditioned gradient,
like ``optax.scale_by_adam``: chain a learning rate after it. The natural gradient needs the per-sample
features, not just the mean gradient, so it recomputes ∇L from the batch and ignores the incoming
``updates`` (put it first in a chain; clipping, weight decay and schedules go after it). It is
jit-able (the damping and the step counter are traced values; only ρ > 0 vs ρ = 0 is static), works
for both losses (``loss="mse"`` with targets Y (N, C), ``loss="cross_entropy"`` with labels or one-hot),
and its state counts steps (the sampled Fisher draws its model samples from (seed, step)).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _validate, factored, losses, methods
from .damping import Damping
from .factored.features import whitened_features
from .kernels import LayerKernels, check_params
from .networks import Network


class NaturalGradientState(NamedTuple):
    """Steps taken (selects the sampled-Fisher draw of the next step)."""

    count: jax.Array


def tildes_to_tree(net: Network, params, tildes):
    """Per-layer W̃ (fan_in + bias, fan_out) → a pytree shaped like ``params``."""
    out = []
    for l in range(net.depth):
        W, b = params[2 * l]
        t = tildes[l]
        fi = W.shape[0]
        out.append((t[:fi].reshape(W.shape), None if b is None else t[fi:].reshape(b.shape)))
        if l < net.depth - 1:
            out.append(params[2 * l + 1])
    return out


def direction(net: Network, spec: methods.Method, opts: tuple, loss: losses.Loss, params, X, Y, damping: Damping,
              rcond=None, step=0, offset=None):
    """(G + ρI)⁻¹∇L at ``params`` as a params-shaped pytree (traceable). ``offset`` is subtracted from the
    outputs (a centred model f(x; θ) − f(x; θ_0) has the same Jacobian and Fisher)."""
    feats = whitened_features(net, params, X, Y, loss, offset)
    w = feats.whitening
    train = LayerKernels.from_features(list(feats.inputs), list(feats.deltas))
    scores = spec.draw(loss, feats.f, dict(opts), step) if spec.random else None
    ctx = methods.Context(X.shape[0], damping, opts, rcond, jnp.reshape(w.u, (-1,)), w.s, scores, net)
    return tildes_to_tree(net, params, spec.direction(train, ctx))


def natural_gradient(net: Network, method: str = "exact", damping=0.0, loss: str = "mse", rcond: float | None = None,
                     form: str = "gram", **options) -> optax.GradientTransformationExtraArgs:
    """The preconditioned gradient (G + ρI)⁻¹∇L of ``method`` (module docstring). ``options`` are the
    method's (``Method.options``), validated here; ``damping`` a number ≥ 0 or a :class:`~ntk_ngd.damping.Damping`.
    ``form``: "gram" (N·k-sized systems) or "factored" (per-layer Kronecker factors in parameter space, the same
    direction at the same damping: :mod:`ntk_ngd.factored`; its settings, e.g. ``factored_damping="pi"``, go in
    ``options``)."""
    spec = methods.get(method)
    settings, options = factored.split_options(spec, form, options)
    loss = losses.get(loss)
    spec.check_loss(loss.name)
    opts = spec.normalise_options(options, net.depth)
    damping = Damping.of(damping)
    if spec.random:
        from .methods import sf

        sf.warn_if_singular(dict(opts)["samples"], loss.rows(net.out_dim), damping.positive)

    def init_fn(params):
        if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(params)):
            check_params(net, params)
        return NaturalGradientState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, batch, offset=None, **extra_args):
        """``batch = (X, Y)``; ``offset`` (optional, N×C) is subtracted from the outputs (centred model)."""
        del updates, extra_args
        if params is None:
            raise ValueError("natural_gradient needs params: tx.update(grads, state, params, batch=(X, Y))")
        X, Y = batch
        X, Y = jnp.asarray(X), jnp.asarray(Y)
        if settings is not None:
            d = tildes_to_tree(net, params, factored.direction(net, spec, opts, loss, params, X, Y, damping, rcond,
                                                               settings, offset))
        else:
            d = direction(net, spec, opts, loss, params, X, Y, damping, rcond, state.count, offset)
        return d, NaturalGradientState(state.count + 1)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class TrustRegionState(NamedTuple):
    """The factor min(1, √(2κ/q(v))) applied to the last update (1: inside the trust region)."""

    scale: jax.Array


#: Output metrics of :func:`trust_region`: the one q(v) is measured in.
TRUST_METRICS = ("euclidean", "fisher")


def trust_region(net: Network, kappa, loss: str = "mse", metric: str = "euclidean"
                 ) -> optax.GradientTransformationExtraArgs:
    """Scale an update v so that its predicted output change stays within ``kappa`` (docs/THEORY.md "Step size"):

        v ← v · min(1, √(2κ / q(v))),   q(v) = ||P J v||²/N ("euclidean") or ||R J v||²/N = vᵀFv ("fisher"),

    with J v the output change to first order (one forward-mode product through ``net.apply`` at ``params`` on
    ``batch``), P the projection onto logits mod 1_C (cross-entropy; identity for MSE) and R the softmax whitening
    (F = J̃ᵀJ̃/N the *exact* Fisher). "fisher" is K-FAC's KL clipping (Ba, Grosse & Martens 2017) with the exact
    Fisher: ½q(v) is the mean per-sample KL to second order. "euclidean" bounds the mean squared logit change
    instead — the KL of the Gaussian output model, equal to "fisher" for MSE — which stays a bound on the move
    where the softmax Fisher is flat (logits of improbable classes: THEORY "Step size"). Chain it after the learning
    rate (like ``optax.clip_by_global_norm``): it needs the final update, not the direction.
    """
    loss = losses.get(loss)
    if metric not in TRUST_METRICS:
        raise ValueError(f"trust_region metric must be one of {TRUST_METRICS}, got {metric!r}")
    if not _validate.is_traced(kappa) and not (np.isfinite(float(kappa)) and float(kappa) > 0):
        raise ValueError(f"trust_region needs a finite kappa > 0, got {kappa!r}")

    def init_fn(params):
        del params
        return TrustRegionState(jnp.ones([]))

    def update_fn(updates, state, params=None, *, batch, offset=None, **extra_args):
        del state, extra_args
        if params is None:
            raise ValueError("trust_region needs params: tx.update(grads, state, params, batch=(X, Y))")
        X, Y = jnp.asarray(batch[0]), jnp.asarray(batch[1])
        f, jv = jax.jvp(lambda p: net.apply(p, X), (params,), (updates,))
        if offset is not None:
            f = f - offset
        quad = jnp.sum(_output_rows(loss, metric, f, Y, jv) ** 2) / X.shape[0]
        scale = jnp.minimum(1.0, jnp.sqrt(2.0 * kappa / jnp.maximum(quad, jnp.finfo(quad.dtype).tiny)))
        return jax.tree_util.tree_map(lambda v: None if v is None else scale * v, updates,
                                      is_leaf=lambda v: v is None), TrustRegionState(scale)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _output_rows(loss, metric, f, Y, jv):
    """The output change ``jv`` (N, C) in the trust region's metric: R·jv (fisher) or Vᵀ·jv / jv (euclidean)."""
    if metric == "fisher":
        R = loss.whiten(f, Y).R
        return jv if R is None else jnp.einsum("nkc,nc->nk", R, jv)
    basis = loss.left_basis(1, jv.shape[1], jv.dtype)
    return jv if basis is None else jv @ basis[0].T


def ngd(net: Network, learning_rate, method: str = "exact", damping=0.0, loss: str = "mse", form: str = "gram",
        trust_kappa=None, trust_metric: str = "euclidean", **options):
    """``optax.chain(natural_gradient(...), optax.scale_by_learning_rate(learning_rate)[, trust_region(...)])``: a
    ready optimiser (``learning_rate`` a number or an optax schedule), like ``optax.adam``; ``form`` as in
    :func:`natural_gradient`. ``trust_kappa``: κ of the trust region (:func:`trust_region`; None: none —
    :data:`ntk_ngd.trajectory.KL_TRUST_REGION` is the default ``nn.train`` uses for cross-entropy)."""
    parts = [natural_gradient(net, method, damping, loss, form=form, **options),
             optax.scale_by_learning_rate(learning_rate)]
    if trust_kappa is not None:
        parts.append(trust_region(net, trust_kappa, loss, trust_metric))
    return optax.chain(*parts)


__all__ = ["NaturalGradientState", "TRUST_METRICS", "TrustRegionState", "direction", "natural_gradient", "ngd",
           "tildes_to_tree", "trust_region"]

# the online deep-linear natural gradient (imported last: ntk_ngd.factored.minibatch imports tildes_to_tree from here)
from .factored.online import online_natural_gradient, online_ngd  # noqa: E402

__all__ += ["online_natural_gradient", "online_ngd"]
