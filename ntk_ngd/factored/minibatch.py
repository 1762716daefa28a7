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
(``"empirical"``: the empirical Fisher's Kronecker factors). The gradient is always the batch's exact one. Every signal is one reverse pass of an output cotangent
(:func:`.features.reverse_signals`): 1 + S passes a step for the sampled Fisher, 1 for the empirical one, 1 + k for
the exact one (k = C for MSE), never C per sample unless the exact Fisher is asked for; a step that refreshes
neither statistics nor preconditioners skips the S (or k) curvature passes (one reverse pass, as backprop).
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
from .features import Features, gradient, reverse_signals
from .form import Settings, context, damping_in, split_options

FISHERS = ("whitened", "sampled", "empirical")


class MinibatchState(NamedTuple):
    """``count`` steps taken; ``stats``/``inverses`` per layer; ``inverse_updates`` how many times the
    preconditioners were recomputed (the amortisation counter)."""

    count: jax.Array
    stats: tuple
    inverses: tuple
    inverse_updates: jax.Array


def _output_rows(whitening, rows):
    """Whitened-basis rows (N, S, k) as output cotangents (N, S, C): Σ_j rows[n, s, j] R[n, j, c] (R = I for MSE)."""
    return rows if whitening.R is None else jnp.einsum("nsj,njc->nsc", rows, whitening.R)


def cotangents(whitening, f, fisher: str, loss, key, samples: int):
    """(the gradient's output cotangent (N, 1, C), the curvature's (N, S', C)) for :func:`.features.reverse_signals`:
    Rᵀu, and the rows R (whitened: S' = k), Rᵀξ/√S (sampled) or Rᵀu again (empirical) of the module docstring."""
    grad = _output_rows(whitening, whitening.u[:, None, :])
    if fisher == "empirical":
        return grad, grad
    if fisher == "whitened":
        n, k = whitening.u.shape
        return grad, _output_rows(whitening, jnp.broadcast_to(jnp.eye(k, dtype=f.dtype), (n, k, k)))
    xi = loss.sample_scores(key, f, samples) / float(np.sqrt(samples))  # (N, k, S), E[ξξᵀ] = I_k/S
    return grad, _output_rows(whitening, jnp.swapaxes(xi, 1, 2))


def batch_features(net, params, X, Y, loss, fisher: str, key, samples: int, need_curvature=True):
    """(:class:`.features.Features` of the gradient (u = 1, δ̃ = V (N, 1, m)), the curvature's signals per layer
    (N, S', m)) from one forward and 1 + S' reverse passes (C + 1 for the whitened Fisher). ``need_curvature``
    (a traced bool): False skips the S' passes (zeros instead), for the steps that refresh nothing."""
    f, inputs, signals = reverse_signals(net, params, X)
    whitening = loss.whiten(f, Y)
    grad, curv = cotangents(whitening, f, fisher, loss, key, samples)
    grad_signals = signals(grad)
    if fisher == "empirical":
        curv_signals = grad_signals
    elif need_curvature is True:
        curv_signals = signals(curv)
    else:
        shapes = jax.eval_shape(lambda: signals(curv))
        curv_signals = jax.lax.cond(need_curvature, lambda: signals(curv),
                                    lambda: tuple(jnp.zeros(x.shape, x.dtype) for x in shapes))
    ones = jnp.ones((X.shape[0], 1), f.dtype)
    return Features(inputs, grad_signals, ones, f, whitening), curv_signals


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
        dtype = jax.tree_util.tree_leaves(params)[0].dtype  # the state in the parameters' precision
        ctx, shapes = context(net, opts, damping_in(damping, dtype), rcond, 1), []
        for l, (d, m) in enumerate(zip(_fan_ins(net), net.fan_out)):
            H, D = jnp.zeros((1, d), dtype), jnp.zeros((1, 1, m), dtype)
            shapes.append(jax.eval_shape(lambda H, D, l=l: _pipeline(form, H, D, ctx, settings, l), H, D))
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return MinibatchState(jnp.zeros([], jnp.int32), tuple(z[0] for z in zeros), tuple(z[1] for z in zeros),
                              jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, batch, **extra):
        del updates, extra
        if params is None:
            raise ValueError("the mini-batch natural gradient needs params: tx.update(grads, state, params, batch=(X, Y))")
        dtype = jax.tree_util.tree_leaves(params)[0].dtype  # the step in the parameters' precision (as the state)
        X, Y = jnp.asarray(batch[0], dtype), _in_precision(batch[1], dtype)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), state.count)
        first = state.count == 0
        cov_refresh, refresh = (state.count % cov_every == 0) | first, (state.count % inv_every == 0) | first
        feats, curv = batch_features(net, params, X, Y, loss, fisher, key, samples, cov_refresh | refresh)
        ctx = context(net, opts, damping, rcond, X.shape[0], feats)
        stats = jax.lax.cond(cov_refresh,
                             lambda: _averaged(form, feats.inputs, curv, ctx, state.stats, jnp.where(first, 0.0, decay)),
                             lambda: state.stats)
        inverses = jax.lax.cond(refresh, lambda: tuple(form.inverse(s, H, D, ctx, settings, l) for l, (s, H, D)
                                                       in enumerate(zip(stats, feats.inputs, curv))),
                                lambda: state.inverses)
        tildes = [form.apply(inv, gradient(H, D, feats.u), ctx, settings)
                  for inv, H, D in zip(inverses, feats.inputs, feats.deltas)]
        new_state = MinibatchState(state.count + 1, stats, inverses, state.inverse_updates + refresh.astype(jnp.int32))
        return tildes_to_tree(net, params, tildes), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _in_precision(Y, dtype):
    """Floating targets in ``dtype`` (integer class labels stay integers)."""
    Y = jnp.asarray(Y)
    return Y.astype(dtype) if jnp.issubdtype(Y.dtype, jnp.floating) else Y


def _fan_ins(net):
    return tuple(d + int(net.bias) for d in net.fan_in)


def _pipeline(form, H, D, ctx, settings: Settings, l: int):
    stats = form.statistics(H, D, ctx)
    return stats, form.inverse(stats, H, D, ctx, settings, l)


def _averaged(form, inputs, curv, ctx, old, decay):
    """decay·old + (1 − decay)·new, per layer and leaf."""
    new = tuple(form.statistics(H, D, ctx) for H, D in zip(inputs, curv))
    return jax.tree_util.tree_map(lambda o, s: decay * o + (1.0 - decay) * s, old, new)


__all__ = ["FISHERS", "MinibatchState", "batch_features", "check_decay", "cotangents", "natural_gradient"]
