"""Real parameter-space training over a task sequence with a projected preconditioned step (docs/THEORY.md
"Continual learning in function space"; the projections in :mod:`.projections`).

Not linearised: every step recomputes the current task's features at the current parameters. The protected
directions are the old tasks' per-sample Jacobian rows frozen at the end of their task (:class:`.memory.Stored`,
as OGD and ONG keep them). With rows R = [B; A] (A the stored rows) every kernel of the projection is a Gram over
R, and the step is, in Gram form (no P×P matrix, no explicit Jacobian),

    d = −u + 𝔅 [0; β]/N_B,   u = (G_B + ρI)⁻¹J_Bᵀr_B/N_B (the method's own direction),   β = Mid_AA⁺ Right_AB r_B,

with 𝔅 one of J_Rᵀ (``linalg.jt``), M⁻¹J_Rᵀ or M_b⁻¹J_Rᵀ (``Metric.direction``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate, losses, methods
from ..damping import Damping
from ..function_space import method_kernels
from ..kernels import LayerKernels, check_params, layer_features
from ..methods._metric import jt_all
from ..optim import tildes_to_tree
from ..trajectory import check_lr, first_divergence
from . import memory as _memory, projections as _projections, results
from .._warn import once_per_call
from .kernels import RowKernels, mid_solve, sample_rows
from .sequential import _initial_lr


def _basis_step(rk: RowKernels, projection, stored_n: int):
    """𝔅[0; β]/N_B per layer (module docstring)."""
    n_b, c = rk.n_b, rk.c
    A = sample_rows(jnp.arange(n_b, n_b + stored_n), c)
    mid = rk[projection.middle][A][:, A]
    right = rk[projection.right][A][:, : n_b * c]
    beta = mid_solve(mid, right @ rk.ctx.residual, rk.ctx.rcond)
    coefficients = jnp.concatenate([jnp.zeros(n_b * c, beta.dtype), beta]) / n_b
    if projection.left == "ntk":
        return jt_all(rk.lk, coefficients)
    ctx = rk.ctx if projection.left == "metric" else rk.basis_ctx
    return rk.spec.metric.direction(rk.lk, n_b, ctx, coefficients)


def _direction_eager(params, X, Y, stored, damping, basis_damping, step, offset=None, *, net, method, projection,
                     opts, rcond):
    """(d, f(X)) at ``params``: the projected step direction as a params-shaped tree (θ ← θ + ηd). ``offset`` is
    subtracted from the outputs (the centred model f(x; θ) − f(x; θ₀): same Jacobian and Fisher)."""
    spec, proj = methods.get(method), _projections.get(projection)
    inputs, deltas, f = layer_features(net, params, X, with_outputs=True)
    f = f if offset is None else f - offset
    w = losses.MSE.whiten(f, Y)
    scores = spec.draw(losses.MSE, f, dict(opts), step) if spec.random else None
    n_b = X.shape[0]
    ctx = methods.Context(n_b, damping, opts, rcond, jnp.reshape(w.u, (-1,)), w.s, scores, net)
    d = [-x for x in spec.direction(LayerKernels.from_features(inputs, deltas), ctx)]
    if proj.left is not None and stored.n > 0:
        lk = LayerKernels.from_features([jnp.concatenate([a, b]) for a, b in zip(inputs, stored.inputs)],
                                        [jnp.concatenate([a, b]) for a, b in zip(deltas, stored.deltas)])
        basis_ctx = ctx.replace(damping=basis_damping) if proj.uses_basis_damping else None
        d = [a + b for a, b in zip(d, _basis_step(RowKernels(lk, n_b, spec, ctx, basis_ctx), proj, stored.n))]
    return tildes_to_tree(net, params, d), f


#: compiled once per (network, method, projection, options, stored-row count): training steps
_direction = jax.jit(_direction_eager, static_argnames=("net", "method", "projection", "opts", "rcond"))


def _settings(net, method, projection, damping, basis_damping, options):
    spec, proj = methods.get(method), _projections.get(projection)
    opts = spec.normalise_options(options, net.depth)
    damping = Damping.of(damping)
    _projections.check_method(spec, proj, damping)
    basis = Damping.of(10.0 * float(damping.value) if basis_damping is None else basis_damping)
    return spec, proj, opts, damping, basis


def projected_direction(net, params, X, Y, stored: _memory.Stored, method: str, projection: str,
                        damping: float = 1e-3, basis_damping: float | None = None, rcond: float | None = None,
                        step: int = 0, **options):
    """The projected step direction d (θ ← θ + ηd, a params-shaped tree) of ``method`` with ``projection`` on the
    task (X, Y), protecting the ``stored`` rows (:func:`.memory.store`); Gram form (module docstring)."""
    check_params(net, params)
    X = jnp.asarray(net.check_inputs(X, "X"), float)
    Y = jnp.asarray(_memory.check_tasks(net, [(X, Y)])[0][1])
    spec, proj, opts, damping, basis = _settings(net, method, projection, damping, basis_damping, options)
    d, _ = _direction_eager(params, X, Y, stored, damping, basis, step, net=net, method=spec.name,
                            projection=proj.name, opts=opts, rcond=rcond)  # one call: no compilation
    return d


@once_per_call
def train_sequential(net, params, tasks, method: str, projection: str, lr: float | None = None, steps: int = 20,
                     memory: int | None = None, damping: float = 1e-3, basis_damping: float | None = None,
                     rcond: float | None = None, center: bool = False, progress: bool = False,
                     **options) -> results.ContinualTrajectory:
    """Train the finite network on the ``tasks`` in turn, ``steps`` full-batch projected steps each, protecting the
    stored rows of ``memory`` samples per earlier task (None: all), frozen at the end of their task. ``lr=None``:
    the method's step rule on task 0's kernel at ``params``. ``center``: train the centred model
    f(x; θ) − f(x; θ₀), whose outputs start at 0 like the infinite-width prior mean. Divergence stops the run
    (NaN afterwards)."""
    check_params(net, params)
    tasks = _memory.check_tasks(net, tasks)
    sizes = [X.shape[0] for X, _ in tasks]
    memory = _memory.check_memory(memory, sizes)
    steps = _validate.positive_int("steps", steps, minimum=0)
    spec, proj, opts, damping, basis = _settings(net, method, projection, damping, basis_damping, options)
    X_all, Y_all = np.concatenate([X for X, _ in tasks]), np.concatenate([Y for _, Y in tasks])
    offset_all = np.asarray(net.apply(params, X_all)) if center else np.zeros(Y_all.shape)
    start = _memory.offsets(sizes)
    if lr is None:
        X0, Y0 = tasks[0]
        r0 = np.asarray(net.apply(params, X0)) - offset_all[: sizes[0]] - Y0
        K = method_kernels(net, X0, spec.name, params=params, damping=float(damping.value), residual=r0,
                           rcond=rcond, **dict(opts)).train
        ctx_like = methods.Context(len(X0), damping, opts, rcond, jnp.reshape(r0, (-1,)))
        lr, lr_rule = _initial_lr(spec, K, ctx_like)
    else:
        lr, lr_rule = check_lr(lr), "given"
    stored = _memory.Stored.empty(net)
    F = np.full((len(tasks) + 1,) + Y_all.shape, np.nan)
    F[0] = np.asarray(net.apply(params, X_all)) - offset_all
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks) * steps, desc=f"train_sequential {spec.name}/{proj.name}", unit="step")
    diverged_at = None
    for t, (X, Y) in enumerate(tasks):
        Xj, Yj, off = jnp.asarray(X), jnp.asarray(Y), jnp.asarray(offset_all[start[t]:start[t + 1]])
        loss0 = float(losses.MSE.value(net.apply(params, Xj) - off, Yj))
        for k in range(steps):
            d, _ = _direction(params, Xj, Yj, stored, damping, basis, t * steps + k, off, net=net, method=spec.name,
                              projection=proj.name, opts=opts, rcond=rcond)
            new = jax.tree_util.tree_map(lambda p, q: p + lr * q, params, d)
            f = np.asarray(net.apply(new, Xj) - off)
            value = float(losses.MSE.value(f, Y)) if np.all(np.isfinite(f)) else np.inf
            if first_divergence([loss0, value]) is not None:
                diverged_at = t + 1
                break
            params = new
            if bar is not None:
                bar.update(1)
        if diverged_at is not None:
            break
        F[t + 1] = np.asarray(net.apply(params, X_all)) - offset_all
        m = X.shape[0] if memory is None else memory
        if m:
            stored = stored.concat(_memory.store(net, params, X[:m]))
    if bar is not None:
        bar.close()
    return results.build(spec.name, proj.name, F, Y_all, sizes, lr, lr_rule, float(damping.value), memory,
                         "trained, centred" if center else "trained",
                         steps, diverged_at, params)


__all__ = ["projected_direction", "train_sequential"]
