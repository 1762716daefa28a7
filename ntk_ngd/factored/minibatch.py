"""Mini-batch factored natural gradient as practitioners run it, as an optax transformation (THEORY.md "Factored
form (parameter space)", "Mini-batch curvature").

Per step t on a batch: the method's per-layer statistics S_t (K-FAC's A and G, the diagonal Fisher's D) are
refreshed every ``cov_every`` = T_cov steps as an exponential moving average

    S ← decay·S + (1 − decay)·S_t          (S = S_0 at the first step: no zero-initialisation bias),

the preconditioners (eigendecompositions, fitted Kronecker terms) every ``inv_every`` = T_inv steps from S and the
current batch's features, and every step applies them to the batch gradient (K-FAC: two matmuls per layer). The
curvature's backward signals are the exact whitened ones (``fisher="whitened"``: the Fisher itself), targets
sampled from the model (``"sampled"``: ξ ~ the model, seeded by (seed, step), S draws per sample, so
G_t = (1/(N·S)) Σ_{n,s} (Σ_j ξ_{njs}δ̃_{n,j})(…)ᵀ with E[G_t] the exact G), or the per-sample loss gradients
(``"empirical"``: the empirical Fisher's Kronecker factors). The gradient is always the batch's exact one.
With decay = 0 and T_cov = T_inv = 1 every step is the full-batch factored direction on its batch.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _validate, losses, methods
from ..damping import Damping
from ..optim import tildes_to_tree
from .features import gradient, whitened_features
from .form import Settings, context, split_options

FISHERS = ("whitened", "sampled", "empirical")


class MinibatchState(NamedTuple):
    """``count`` steps taken; ``stats``/``inverses`` per layer; ``inverse_updates`` how many times the
    preconditioners were recomputed (the amortisation counter)."""

    count: jax.Array
    stats: tuple
    inverses: tuple
    inverse_updates: jax.Array


def curvature_deltas(feats, fisher: str, loss, key, samples: int):
    """The backward signals the curvature is built from (module docstring), per layer (N, rows, m)."""
    if fisher == "whitened":
        return feats.deltas
    if fisher == "empirical":
        return tuple(jnp.einsum("nj,njm->nm", feats.u, d)[:, None, :] for d in feats.deltas)
    xi = loss.sample_scores(key, feats.f, samples) / np.sqrt(samples)  # (N, k, S), E[ξξᵀ] = I_k/S
    return tuple(jnp.einsum("njs,njm->nsm", xi, d) for d in feats.deltas)


def check_decay(decay) -> float:
    value = _validate.nonnegative("decay", decay)
    if not value < 1:
        raise ValueError(f"decay must be in [0, 1) (the EMA weight of the old curvature), got {decay!r}")
    return value


def natural_gradient(net, method: str = "kfac", damping=1e-3, loss: str = "mse", decay: float = 0.95,
                     cov_every: int = 1, inv_every: int = 1, fisher: str = "whitened", samples: int = 1,
                     seed: int = 0, rcond=None, **options) -> optax.GradientTransformationExtraArgs:
    """The amortised mini-batch factored direction of ``method`` (module docstring); ``options`` the method's
    and the factored form's (:class:`.form.Settings`). ``update(grads, state, params, batch=(X, Y))``."""
    spec = methods.get(method)
    settings, options = split_options(spec, "factored", options)
    loss = losses.get(loss)
    spec.check_loss(loss.name)
    opts = spec.normalise_options(options, net.depth)
    damping = Damping.of(damping)
    decay = check_decay(decay)
    cov_every = _validate.positive_int("cov_every (T_cov)", cov_every)
    inv_every = _validate.positive_int("inv_every (T_inv)", inv_every)
    fisher = _validate.choice("fisher", fisher, FISHERS)
    samples = _validate.positive_int("samples", samples)
    form = spec.factored

    def init_fn(params):
        """Zero statistics and preconditioners of the right shapes (replaced at the first step)."""
        ctx, shapes = context(net, opts, damping, rcond, 1), []
        for l, (d, m) in enumerate(zip(_fan_ins(net), net.fan_out)):
            H, D = jnp.zeros((1, d)), jnp.zeros((1, 1, m))
            shapes.append(jax.eval_shape(lambda H, D, l=l: _pipeline(form, H, D, ctx, settings, l), H, D))
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return MinibatchState(jnp.zeros([], jnp.int32), tuple(z[0] for z in zeros), tuple(z[1] for z in zeros),
                              jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, batch, **extra):
        del updates, extra
        if params is None:
            raise ValueError("the mini-batch natural gradient needs params: tx.update(grads, state, params, batch=(X, Y))")
        X, Y = jnp.asarray(batch[0]), jnp.asarray(batch[1])
        feats = whitened_features(net, params, X, Y, loss)
        ctx = context(net, opts, damping, rcond, X.shape[0], feats)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), state.count)
        curv = curvature_deltas(feats, fisher, loss, key, samples)
        first = state.count == 0
        stats = jax.lax.cond((state.count % cov_every == 0) | first,
                             lambda: _averaged(form, feats.inputs, curv, ctx, state.stats, jnp.where(first, 0.0, decay)),
                             lambda: state.stats)
        refresh = (state.count % inv_every == 0) | first
        inverses = jax.lax.cond(refresh, lambda: tuple(form.inverse(s, H, D, ctx, settings, l) for l, (s, H, D)
                                                       in enumerate(zip(stats, feats.inputs, curv))),
                                lambda: state.inverses)
        tildes = [form.apply(inv, gradient(H, D, feats.u), ctx, settings)
                  for inv, H, D in zip(inverses, feats.inputs, feats.deltas)]
        new_state = MinibatchState(state.count + 1, stats, inverses, state.inverse_updates + refresh.astype(jnp.int32))
        return tildes_to_tree(net, params, tildes), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _fan_ins(net):
    return tuple(d + int(net.bias) for d in net.fan_in)


def _pipeline(form, H, D, ctx, settings: Settings, l: int):
    stats = form.statistics(H, D, ctx)
    return stats, form.inverse(stats, H, D, ctx, settings, l)


def _averaged(form, inputs, curv, ctx, old, decay):
    """decay·old + (1 − decay)·new, per layer and leaf."""
    new = tuple(form.statistics(H, D, ctx) for H, D in zip(inputs, curv))
    return jax.tree_util.tree_map(lambda o, s: decay * o + (1.0 - decay) * s, old, new)


__all__ = ["FISHERS", "MinibatchState", "check_decay", "curvature_deltas", "natural_gradient"]
