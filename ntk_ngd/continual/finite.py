"""Continual learning at finite width as the OGD/ONG papers run it: real mini-batch training of a network over a
task sequence with :func:`ntk_ngd.fit` (one call per task), the step projected off stored directions of old tasks
(issue 23 item 2; docs/THEORY.md "Continual learning in function space").

Per task t the optimiser is precondition(M_t) → project(V, W) → scale(−lr) (:func:`precondition`, :func:`project`
as stand-alone optax transformations; :func:`train_finite` fuses the three into one transformation whose arrays
sit in its state, so that ``fit``'s jitted step compiles once per shape, not once per task and seed):

* **metric** M_t: identity (``method="sgd"``) or the factored natural-gradient metric of a registry method with a
  factored form (K-FAC, EKFAC: ``Method.factored``) built from the exact whitened Fisher of the task's first
  ``metric_samples`` training samples at the parameters where the task starts, damping ρ, and *frozen for the task*
  (T_cov = T_inv = one task). Preconditioner and projection then use the same M: "consistent" is exact.
* **memory**: after task t the first ``memory`` training samples; per sample the gradient of the ground-truth
  logit g_n = ∇_θ f_{y_n}(x_n; θ_t) (OGD-GTL, as the OGD/ONG code), frozen at θ_t. Stored as dense rows G (m × P)
  (100 per task · 89,400 floats for 784-100-100-10: 36 MB per task in float32).
* **projection** with rows V (basis, m × P) and W (metric rows, m × P) maps u = M⁻¹g to

      d = u − Vᵀc,   (W Vᵀ + δI) c = W u,   δ = 1e-10·tr(W Vᵀ)/m,

  so W d = 0 (up to δ): the step is orthogonal to the basis in the metric named by W. With B = M⁻¹G (the stored
  gradients naturalised with the *current* metric, as :mod:`.projections` defines 𝔅):

  | name | V | W | finite-width version of (:mod:`.projections`) |
  |---|---|---|---|
  | none | — | — | none |
  | ogd | G | G | ogd (Euclidean projection against raw gradients; for NGD claim 4d) |
  | ong | B | MB = G | ong: the consistent ONG (natural basis, projection in M: Bᵀ M d = G d = 0) |
  | ong_euclidean | B | B | ong_euclidean: ONG as published (natural basis, Euclidean projection) |
  | fisher_orthogonal | G | MG | fisher_orthogonal: FOPNG (raw basis, projection in M: g_aᵀ M d = 0) |

  Rows rather than columns: W = MG means the rows (M g_a)ᵀ, so W Vᵀ = G M Gᵀ and W u = G g (the step needs no
  M⁻¹ in its Gram). M comes from the factored form's ``forward`` stage
  (:class:`~ntk_ngd.factored.form.FactoredForm`; K-FAC: (A + s_A)∇(B + s_B), EKFAC: U_A[(U_Aᵀ∇U_G) ⊙ (s + ρ)]U_Gᵀ),
  once per task for the m stored rows. For sgd (M = I) every row is ogd's.

The protected first-order output change of a projected step on stored sample a is −η g_aᵀ d: zero for ogd (sgd)
and ong, non-zero for ong_euclidean (claim 4a) and for fisher_orthogonal (claim 4b: g_aᵀMd = 0 does not give
g_aᵀd = 0 unless span(G) is M-invariant) — the finite-width statement the figure ``continual_mnist`` tests.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .. import losses, methods
from ..damping import Damping
from ..factored.features import whitened_features
from ..factored.form import Settings, context, methods_with_factored_form
from ..fitting import fit
from ..optim import tildes_to_tree

#: projections offered at finite width (module docstring table)
FINITE_PROJECTIONS = ("none", "ogd", "ong", "ong_euclidean", "fisher_orthogonal")
#: projections whose rows need the metric M itself (``FactoredForm.forward``), not only M⁻¹
NEEDS_FORWARD = ("fisher_orthogonal",)
#: relative damping of the Gram solve (≥ 1e-10 · trace)
GRAM_DAMPING = 1e-10


def stored_gradients(net, params, X, labels) -> jax.Array:
    """G (m × P): per sample the flattened gradient of the ground-truth logit f_{y_n}(x_n; θ) at ``params``."""
    flat, unravel = ravel_pytree(params)
    labels = jnp.asarray(labels, dtype=int)

    def one(x, y):
        return jax.grad(lambda v: net.apply(unravel(v), x[None])[0, y])(flat)

    return jax.lax.map(lambda xy: one(*xy), (jnp.asarray(X, flat.dtype), labels))


def methods_with_forward() -> tuple[str, ...]:
    """The registry's methods whose factored form exposes M itself (``FactoredForm.forward``)."""
    return tuple(m for m in methods_with_factored_form() if methods.get(m).factored.forward is not None)


def check_forward(method: str, projection: str) -> None:
    """One-line ValueError: a projection of :data:`NEEDS_FORWARD` with a factored method that has no forward stage."""
    if projection in NEEDS_FORWARD and method != "sgd" and methods.get(method).factored.forward is None:
        raise ValueError(f"projection {projection!r} needs the metric M itself, which the factored form of method "
                         f"{method!r} does not expose (FactoredForm.forward); use 'sgd' or one of "
                         f"{', '.join(methods_with_forward())}")


def factored_inverse(net, method: str, params, X, Y, damping: float):
    """v ↦ M⁻¹v (flat P-vectors, batched over leading axes) for the factored form of ``method`` at ``params`` on
    (X, Y) (exact whitened Fisher, cross-entropy), frozen; its ``forward`` gives v ↦ Mv (built on first use)."""
    spec = methods.get(method)
    if spec.factored is None:
        raise ValueError(f"method {method!r} has no factored form; use one of {', '.join(methods_with_factored_form())}")
    loss = losses.get("cross_entropy")
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    onehot = jnp.eye(net.out_dim, dtype=dtype)[jnp.asarray(Y, dtype=int)]  # Y: class labels (N,)
    feats = whitened_features(net, params, jnp.asarray(X, dtype), onehot, loss)
    opts = spec.normalise_options({}, net.depth)
    ctx = context(net, opts, Damping.of(damping), None, X.shape[0], feats)
    settings = Settings()
    layers = tuple(zip(feats.inputs, feats.deltas))
    stats = tuple(spec.factored.statistics(H, D, ctx) for H, D in layers)
    invs = tuple(spec.factored.inverse(st, H, D, ctx, settings, l)
                 for l, (st, (H, D)) in enumerate(zip(stats, layers)))

    def forwards():
        check_forward(method, NEEDS_FORWARD[0])  # one-line error for a form without one
        return tuple(spec.factored.forward(st, H, D, ctx, settings, l)
                     for l, (st, (H, D)) in enumerate(zip(stats, layers)))

    return FactoredMetric(net, method, invs, params, forwards)


class FactoredMetric:
    """v ↦ M⁻¹v of a factored form from its per-layer inverses ``invs`` (K-FAC/EKFAC apply reads only them);
    :meth:`forward` v ↦ Mv from the per-layer forward data that ``forwards()`` builds (once, on first use)."""

    def __init__(self, net, method, invs, params, forwards=None):
        self.net, self.spec, self.invs = net, methods.get(method), invs
        self.unravel = ravel_pytree(params)[1]
        self._forwards, self._fwds = forwards, None

    def apply_with(self, invs, v):
        """M⁻¹v for flat P-vectors ``v`` (batched over a leading axis) with the inverses ``invs`` (traceable);
        with forward data in place of ``invs``, Mv."""
        def one(v):
            tree = self.unravel(v)
            tildes = [self.spec.factored.apply(inv, _layer_tilde(tree[2 * l]), None, Settings())
                      for l, inv in enumerate(invs)]
            return ravel_pytree(tildes_to_tree(self.net, tree, tildes))[0]

        v = jnp.asarray(v)
        return one(v) if v.ndim == 1 else jax.lax.map(one, v)

    def __call__(self, v):
        return self.apply_with(self.invs, v)

    def forward(self, v):
        """Mv (flat P-vectors, batched like ``__call__``); ValueError where the factored form has no forward."""
        if self._fwds is None:
            if self._forwards is None:
                raise ValueError(f"this metric of method {self.spec.name!r} was built without its forward stage; "
                                 "build it with factored_inverse")
            self._fwds = self._forwards()
        return self.apply_with(self._fwds, v)


def _layer_tilde(layer):
    """W̃_l = [W_l; b_l] (fan_in + bias, fan_out) of one layer's (W, b) (the inverse of :func:`tildes_to_tree`)."""
    W, b = layer
    return W if b is None else jnp.concatenate([W, jnp.reshape(b, (1, -1))])


def precondition(inverse=None) -> optax.GradientTransformation:
    """u = M⁻¹g with ``inverse`` from :func:`factored_inverse` (None: identity, SGD)."""
    if inverse is None:
        return optax.identity()

    def update_fn(updates, state, params=None):
        flat, unravel = ravel_pytree(updates)
        return unravel(inverse(flat)), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def projection_rows(name: str, G, inverse=None):
    """(V, W) of projection ``name`` (module table) from stored gradients G (m × P) and the metric ``inverse``
    (:class:`FactoredMetric`; None: M = I); (None, None) for none."""
    if name not in FINITE_PROJECTIONS:
        raise ValueError(f"unknown finite-width projection {name!r}; choose one of {', '.join(FINITE_PROJECTIONS)}")
    if name == "none" or G is None or G.shape[0] == 0:
        return None, None
    if name == "ogd" or inverse is None:  # sgd: M = I, every projection is OGD
        return G, G
    if name == "fisher_orthogonal":
        return G, inverse.forward(G)
    B = inverse(G)
    return (B, G) if name == "ong" else (B, B)


def project_flat(u, V, W):
    """d = u − Vᵀc, (WVᵀ + δI)c = Wu (module docstring)."""
    gram = W @ V.T
    delta = jnp.maximum(GRAM_DAMPING * jnp.trace(gram) / gram.shape[0], 1e-30)  # floor: V = W = 0 gives d = u
    c = jnp.linalg.solve(gram + delta * jnp.eye(gram.shape[0], dtype=gram.dtype), W @ u)
    return u - V.T @ c


class ProjectionState(NamedTuple):
    """The rows V, W (in the state, not the closure: traced arguments of the jitted step, not constants)."""

    V: jax.Array
    W: jax.Array


def project(V=None, W=None) -> optax.GradientTransformation:
    """The projection u ↦ d as an optax transformation (identity when V is None)."""
    if V is None:
        return optax.identity()

    def update_fn(updates, state, params=None):
        flat, unravel = ravel_pytree(updates)
        return unravel(project_flat(flat, state.V.astype(flat.dtype), state.W.astype(flat.dtype))), state

    return optax.GradientTransformation(lambda params: ProjectionState(jnp.asarray(V), jnp.asarray(W)), update_fn)


def accuracy(net, params, X, labels) -> float:
    return float(np.mean(np.argmax(np.asarray(net.apply(params, jnp.asarray(X, jnp.float32))), 1) == labels))


class _Chain(NamedTuple):
    """The state of :func:`_optimizer`: the metric's per-layer inverses (None: sgd) and the rows V, W."""

    invs: tuple | None
    V: jax.Array
    W: jax.Array


@functools.lru_cache(maxsize=32)
def _optimizer(net, method: str, lr: float, dtype_name: str):
    """One optax chain per (net, method, lr) for every task and seed: precondition → project → scale(−lr), its
    arrays in the state (set through ``holder`` before each ``fit``), so ``fit``'s jitted step compiles once per
    shape instead of once per task."""
    holder, dtype = {}, jnp.dtype(dtype_name)

    def init_fn(params):
        return _Chain(holder["invs"], jnp.asarray(holder["V"], dtype), jnp.asarray(holder["W"], dtype))

    def update_fn(updates, state, params=None):
        flat, unravel = ravel_pytree(updates)
        u = flat if state.invs is None else holder["metric"].apply_with(state.invs, flat)
        return unravel(-lr * project_flat(u, state.V, state.W)), state

    return optax.GradientTransformation(init_fn, update_fn), holder


def train_finite(net, params, tasks, method: str, projection: str, lr: float, *, epochs: int = 1,
                 batch_size: int = 256, memory: int = 100, seed: int = 0, damping: float = 1e-3,
                 metric_samples: int = 1000, test_tasks=None) -> dict:
    """Train ``net`` from ``params`` over ``tasks`` [(X, labels)] (module docstring); ``method`` "sgd" or a
    factored registry method. Per task one ``fit`` with ``precondition(M_t) → project(V, W) → scale(−lr)``.
    Returns {"accuracy": T × T a[t, j] (test accuracy on task j after task t), "params"}."""
    if method != "sgd" and methods.get(method).factored is None:
        raise ValueError(f"method {method!r} has no factored form; use 'sgd' or one of "
                         f"{', '.join(methods_with_factored_form())}")
    projection_rows(projection, None)  # validates the name
    check_forward(method, projection)
    test_tasks = tasks if test_tasks is None else test_tasks
    flat = ravel_pytree(params)[0]
    tx, holder = _optimizer(net, method, float(lr), flat.dtype.name)
    T, G, acc = len(tasks), None, np.zeros((len(tasks), len(tasks)))
    for t, (X, y) in enumerate(tasks):
        metric = None if method == "sgd" else factored_inverse(net, method, params, X[:metric_samples],
                                                                y[:metric_samples], damping)
        V, W = projection_rows(projection, G, metric)
        zero = jnp.zeros((1, flat.size), flat.dtype)
        holder.update(metric=metric, invs=None if metric is None else metric.invs,
                      V=zero if V is None else V, W=zero if W is None else W)
        params = fit(net, params, X, y, tx, loss="cross_entropy", epochs=epochs, batch_size=batch_size,
                     seed=seed * 1000 + t, progress=False, name=f"{method}+{projection}", lr=lr).params
        acc[t] = [accuracy(net, params, Xj, yj) for Xj, yj in test_tasks]
        if projection != "none" and t < T - 1:
            new = stored_gradients(net, params, X[:memory], y[:memory])
            G = new if G is None else jnp.concatenate([G, new])
    return {"accuracy": acc, "params": params}


def average_accuracy(acc) -> float:
    """ACC = mean_j a_{T,j}."""
    return float(np.mean(np.asarray(acc)[-1]))


def average_forgetting(acc) -> float:
    """F = mean_{j<T} max_{t<T} a_{t,j} − a_{T,j}."""
    acc = np.asarray(acc)
    T = acc.shape[0]
    return float(np.mean([acc[:T - 1, j].max() - acc[-1, j] for j in range(T - 1)])) if T > 1 else 0.0


__all__ = ["FINITE_PROJECTIONS", "NEEDS_FORWARD", "FactoredMetric", "ProjectionState", "accuracy", "average_accuracy",
           "average_forgetting", "check_forward", "factored_inverse", "methods_with_forward", "precondition", "project",
           "project_flat", "projection_rows", "stored_gradients", "train_finite"]
