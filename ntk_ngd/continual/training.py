"""Real parameter-space training over a task sequence with a projected preconditioned step (docs/THEORY.md
"Continual learning in function space"; the projections in :mod:`.projections`).

Not linearised: every step recomputes the current task's features at the current parameters. The protected
directions are the old tasks' per-sample Jacobian rows frozen at the end of their task (:class:`.memory.Stored`,
as OGD and ONG keep them). With rows R = [B; A] (A the stored rows) every kernel of the projection is a Gram over
R, and the step is, in Gram form (no P×P matrix, no explicit Jacobian),

    d = −u + 𝔅 [0; β]/N_B,   u = (G_B + ρI)⁻¹J_Bᵀr_B/N_B (the method's own direction),   β = Mid_AA⁺ Right_AB r_B,

with 𝔅 one of J_Rᵀ (``linalg.jt``), M⁻¹J_Rᵀ or M_b⁻¹J_Rᵀ (``Metric.direction``).

Cross-entropy: the current task's backward signals are whitened at the current logits (δ̃ = R_nδ, the metric's
rows J̃_B and u = ũ), the stored rows are the logits modulo 1_C, (I ⊗ Vᵀ)J_A (:func:`.memory.store`).
``ong_old_factors`` also carries the previous task's metric rows frozen at its end
(:func:`.memory.store_metric_rows`), appended to R after the stored ones.
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
    """𝔅[0; β; 0]/N_B per layer (module docstring; the trailing zeros on the old metric's rows, if any)."""
    n_b, c = rk.n_b, rk.c
    A = sample_rows(jnp.arange(n_b, n_b + stored_n), c)
    mid = rk[projection.middle][A][:, A]
    right = rk[projection.right][A][:, : n_b * c]
    beta = mid_solve(mid, right @ rk.ctx.residual, rk.ctx.rcond)
    after = rk.lk.fwd.shape[1] * c - (n_b + stored_n) * c
    coefficients = jnp.concatenate([jnp.zeros(n_b * c, beta.dtype), beta, jnp.zeros(after, beta.dtype)]) / n_b
    if projection.left == "ntk":
        return jt_all(rk.lk, coefficients)
    ctx = rk.ctx if projection.left == "metric" else rk.basis_ctx
    return rk.spec.metric.direction(rk.lk, n_b, ctx, coefficients)


def _direction_eager(params, X, Y, stored, damping, basis_damping, step, offset=None, old=None, *, net, method,
                     projection, opts, rcond, loss="mse"):
    """(d, f(X)) at ``params``: the projected step direction as a params-shaped tree (θ ← θ + ηd). ``offset`` is
    subtracted from the outputs (the centred model f(x; θ) − f(x; θ₀): same Jacobian and Fisher). ``old``: the
    previous task's metric rows (``ong_old_factors``)."""
    spec, proj, loss = methods.get(method), _projections.get(projection), losses.get(loss)
    inputs, deltas, f = layer_features(net, params, X, with_outputs=True)
    f = f if offset is None else f - offset
    w = loss.whiten(f, Y)
    if w.R is not None:  # cross-entropy: the metric's rows J̃ = RJ
        deltas = [jnp.einsum("nkc,ncm->nkm", w.R, d) for d in deltas]
    scores = spec.draw(loss, f, dict(opts), step) if spec.random else None
    n_b = X.shape[0]
    ctx = methods.Context(n_b, damping, opts, rcond, jnp.reshape(w.u, (-1,)), w.s, scores, net)
    d = [-x for x in spec.direction(LayerKernels.from_features(inputs, deltas), ctx)]
    if proj.left is not None and stored.n > 0:
        rows = [stored] + ([old] if proj.uses_old_metric and old is not None else [])
        lk = LayerKernels.from_features([jnp.concatenate([a] + [r.inputs[l] for r in rows]) for l, a in enumerate(inputs)],
                                        [jnp.concatenate([a] + [r.deltas[l] for r in rows]) for l, a in enumerate(deltas)])
        basis_ctx = ctx.replace(damping=basis_damping) if proj.uses_basis_damping else None
        n_old = 0 if len(rows) == 1 else old.n
        rk = RowKernels(lk, n_b, spec, ctx, basis_ctx, jnp.arange(n_b + stored.n, n_b + stored.n + n_old), n_old)
        d = [a + b for a, b in zip(d, _basis_step(rk, proj, stored.n))]
    return tildes_to_tree(net, params, d), f


#: compiled once per (network, method, projection, options, stored-row count): training steps
_direction = jax.jit(_direction_eager, static_argnames=("net", "method", "projection", "opts", "rcond", "loss"))


def _settings(net, method, projection, damping, basis_damping, options):
    spec, proj = methods.get(method), _projections.get(projection)
    opts = spec.normalise_options(options, net.depth)
    damping = Damping.of(damping)
    _projections.check_method(spec, proj, damping)
    basis = Damping.of(10.0 * float(damping.value) if basis_damping is None else basis_damping)
    return spec, proj, opts, damping, basis


def projected_direction(net, params, X, Y, stored: _memory.Stored, method: str, projection: str,
                        damping: float = 1e-3, basis_damping: float | None = None, rcond: float | None = None,
                        step: int = 0, loss: str = "mse", old: _memory.Stored | None = None, **options):
    """The projected step direction d (θ ← θ + ηd, a params-shaped tree) of ``method`` with ``projection`` on the
    task (X, Y), protecting the ``stored`` rows (:func:`.memory.store`, with the same ``loss``); Gram form (module
    docstring). ``loss="cross_entropy"``: Y are labels. ``old``: the previous task's metric rows
    (:func:`.memory.store_metric_rows`), needed by ``ong_old_factors`` with exact NGD."""
    check_params(net, params)
    loss = _memory.check_loss(loss)
    X = jnp.asarray(net.check_inputs(X, "X"), float)
    Y = jnp.asarray(_memory.check_tasks(net, [(X, Y)], loss)[0][1])
    spec, proj, opts, damping, basis = _settings(net, method, projection, damping, basis_damping, options)
    _check_rows(net, stored, loss, "stored")
    if proj.uses_old_metric and spec.name != "gd" and stored.n and (old is None or old.n == 0):
        raise ValueError("projection 'ong_old_factors' needs old= (the previous task's metric rows, "
                         "ntk_ngd.continual.memory.store_metric_rows)")
    d, _ = _direction_eager(params, X, Y, stored, damping, basis, step, None, old, net=net, method=spec.name,
                            projection=proj.name, opts=opts, rcond=rcond, loss=loss.name)  # one call: no compilation
    return d


def _check_rows(net, stored, loss, name):
    k = loss.rows(net.out_dim)
    if stored.deltas and stored.deltas[0].shape[1] != k:
        raise ValueError(f"{name} rows have {stored.deltas[0].shape[1]} outputs per sample but loss {loss.name!r} "
                         f"needs {k}: store them with loss={loss.name!r}")


def _initial(net, params, X0, Y0, off0, spec, opts, damping, rcond, loss):
    """The method's step rule on task 0's kernel at ``params`` (:func:`.sequential._initial_lr`)."""
    f0 = np.asarray(net.apply(params, X0)) - off0
    w = loss.whiten(jnp.asarray(f0), jnp.asarray(Y0))
    given = dict(residual=f0 - Y0) if loss is losses.MSE else dict(loss=loss.name, targets=Y0, outputs=f0)
    K = method_kernels(net, X0, spec.name, params=params, damping=float(damping.value), rcond=rcond, **given,
                       **dict(opts)).train
    return _initial_lr(spec, K, methods.Context(len(X0), damping, opts, rcond, jnp.reshape(w.u, (-1,))))


@once_per_call
def train_sequential(net, params, tasks, method: str, projection: str, lr: float | None = None, steps: int = 20,
                     memory: int | None = None, damping: float = 1e-3, basis_damping: float | None = None,
                     rcond: float | None = None, center: bool = False, progress: bool = False, loss: str = "mse",
                     **options) -> results.ContinualTrajectory:
    """Train the finite network on the ``tasks`` in turn, ``steps`` full-batch projected steps each, protecting the
    stored rows of ``memory`` samples per earlier task (None: all), frozen at the end of their task. ``lr=None``:
    the method's step rule on task 0's kernel at ``params``. ``center``: train the centred model
    f(x; θ) − f(x; θ₀), whose outputs start at 0 like the infinite-width prior mean. ``loss="cross_entropy"``:
    targets are class labels (or one-hot rows), the stored rows the logits mod 1_C. ``ong_old_factors``: the
    previous task's metric rows are frozen at its end beside the stored ones. Divergence stops the run (NaN
    afterwards)."""
    check_params(net, params)
    loss = _memory.check_loss(loss)
    tasks = _memory.check_tasks(net, tasks, loss)
    sizes = [X.shape[0] for X, _ in tasks]
    memory = _memory.check_memory(memory, sizes)
    steps = _validate.positive_int("steps", steps, minimum=0)
    spec, proj, opts, damping, basis = _settings(net, method, projection, damping, basis_damping, options)
    X_all, Y_all = np.concatenate([X for X, _ in tasks]), np.concatenate([Y for _, Y in tasks])
    offset_all = np.asarray(net.apply(params, X_all)) if center else np.zeros(Y_all.shape)
    start = _memory.offsets(sizes)
    if lr is None:
        lr, lr_rule = _initial(net, params, *tasks[0], offset_all[: sizes[0]], spec, opts, damping, rcond, loss)
    else:
        lr, lr_rule = check_lr(lr), "given"
    stored = old = _memory.Stored.empty(net, loss.rows(net.out_dim))
    F = np.full((len(tasks) + 1,) + Y_all.shape, np.nan)
    F[0] = np.asarray(net.apply(params, X_all)) - offset_all
    bar = _bar(progress, len(tasks) * steps, spec.name, proj.name)
    kw = dict(net=net, method=spec.name, projection=proj.name, opts=opts, rcond=rcond, loss=loss.name)
    diverged_at = None
    for t, (X, Y) in enumerate(tasks):
        Xj, Yj, off = jnp.asarray(X), jnp.asarray(Y), jnp.asarray(offset_all[start[t]:start[t + 1]])
        loss0 = float(loss.value(net.apply(params, Xj) - off, Yj))
        for k in range(steps):
            d, _ = _direction(params, Xj, Yj, stored, damping, basis, t * steps + k, off, old, **kw)
            new = jax.tree_util.tree_map(lambda p, q: p + lr * q, params, d)
            f = np.asarray(net.apply(new, Xj) - off)
            value = float(loss.value(f, Y)) if np.all(np.isfinite(f)) else np.inf
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
            stored = stored.concat(_memory.store(net, params, X[:m], loss))
        if proj.uses_old_metric:
            old = _memory.store_metric_rows(net, params, X, loss, off)
    if bar is not None:
        bar.close()
    return results.build(spec.name, proj.name, F, Y_all, sizes, lr, lr_rule, float(damping.value), memory,
                         "trained, centred" if center else "trained", steps, diverged_at, params, loss.name)


def _bar(progress: bool, total: int, method: str, projection: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"train_sequential {method}/{projection}", unit="step")


__all__ = ["projected_direction", "train_sequential"]
