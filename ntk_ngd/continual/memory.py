"""Task sequences and what is kept of old tasks (CONTINUAL.md claim 5, docs/THEORY.md "Continual learning in
function space").

* :func:`check_tasks`: a sequence of ``(X, Y)`` tasks, validated once (same input and output dimensions,
  matching the network).
* :func:`protected_samples`: the rows protected while task t trains — the first ``memory`` samples of every
  earlier task (all of them with ``memory=None``), as global indices into the stacked tasks.
* :class:`Stored`: those rows' directions as the peers (OGD, ONG) keep them, per-sample Jacobians frozen at
  the end of their task — here in Kronecker form, the scaled layer inputs h̃ and backward signals δ of every
  layer (J_l row (n, c) = h̃_n ⊗ δ_{n,c}), O(Σ_l (d_l + C·M_l)) numbers per sample instead of P.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate, losses
from ..kernels import layer_features


def check_loss(loss) -> losses.Loss:
    """The loss of a task sequence: "mse" or "cross_entropy" (one-line ValueError otherwise)."""
    if isinstance(loss, losses.Loss):
        return loss
    if loss not in losses.LOSSES:
        raise ValueError(f"loss={loss!r} is not supported by ntk_ngd.continual; pass loss='mse' or "
                         "loss='cross_entropy'")
    return losses.LOSSES[loss]


def check_tasks(net, tasks, loss="mse") -> list[tuple[np.ndarray, np.ndarray]]:
    """Float64 ``(X, Y)`` pairs with the network's input and output dimensions (one-line ValueError otherwise).
    ``loss="cross_entropy"``: Y are class labels (N,) in 0..C−1 or (N, C) probability rows (one-hot), returned
    as (N, C) rows."""
    loss = check_loss(loss)
    try:
        tasks = [(X, Y) for X, Y in tasks]
    except (TypeError, ValueError):
        raise ValueError("tasks must be a list of (X, Y) pairs") from None
    if not tasks:
        raise ValueError("tasks is empty: give at least one (X, Y) task")
    dims = {np.shape(X)[1] if np.ndim(X) == 2 else None for X, _ in tasks}
    if len(dims) > 1:
        raise ValueError(f"tasks have different input dimensions {sorted(d for d in dims if d is not None)}; every "
                         "task must share the network's input")
    out = []
    for t, (X, Y) in enumerate(tasks):
        X = np.asarray(net.check_inputs(X, f"task {t} X"), float)
        if loss is losses.CROSS_ENTROPY:
            try:
                out.append((X, loss.check_targets(Y, X.shape[0], net.out_dim)))
            except ValueError as err:
                raise ValueError(f"task {t}: {err}") from None
            continue
        Y = np.asarray(Y)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 and net.out_dim == 1 else Y
        Y = np.asarray(_validate.finite_matrix(f"task {t} Y", Y, cols=net.out_dim, rows=X.shape[0]), float)
        out.append((X, Y))
    return out


def check_memory(memory, sizes) -> int | None:
    """``memory`` samples kept per old task: None (all) or 0 ≤ m ≤ the smallest task."""
    if memory is None:
        return None
    m = _validate.positive_int("memory", memory, minimum=0)
    if m > min(sizes):
        raise ValueError(f"memory={m} is larger than the smallest task ({min(sizes)} samples)")
    return m


def offsets(sizes) -> np.ndarray:
    """Start index of each task in the stacked samples (and the total at the end)."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int)


def protected_samples(sizes, t: int, memory: int | None) -> np.ndarray:
    """Global indices of the samples protected while task t trains: the first ``memory`` (None: all) of each
    task s < t."""
    start = offsets(sizes)
    keep = [np.arange(start[s], start[s] + (sizes[s] if memory is None else memory)) for s in range(t)]
    return np.concatenate(keep).astype(int) if keep else np.zeros(0, int)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Stored:
    """Frozen per-sample Jacobian rows in Kronecker form: per layer ``inputs`` (n, d_l) and ``deltas`` (n, C, M_l)."""

    inputs: tuple
    deltas: tuple

    @property
    def n(self) -> int:
        return 0 if not self.inputs else int(self.inputs[0].shape[0])

    @classmethod
    def empty(cls, net, rows: int | None = None) -> "Stored":
        """No stored rows; ``rows`` per sample (default C; cross-entropy: C − 1)."""
        k = net.out_dim if rows is None else rows
        return cls(tuple(jnp.zeros((0, fi + int(net.bias))) for fi in net.fan_in),
                   tuple(jnp.zeros((0, k, fo)) for fo in net.fan_out))

    def concat(self, other: "Stored") -> "Stored":
        return Stored(tuple(jnp.concatenate([a, b]) for a, b in zip(self.inputs, other.inputs)),
                      tuple(jnp.concatenate([a, b]) for a, b in zip(self.deltas, other.deltas)))

    def tree_flatten(self):
        return (self.inputs, self.deltas), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def store(net, params, X, loss="mse") -> Stored:
    """The Jacobian rows of X at ``params`` (Kronecker form): what an old task leaves behind. Cross-entropy: the
    C − 1 rows (I ⊗ Vᵀ)J of the logits modulo 1_C (V = :func:`ntk_ngd.losses.null_basis`, the directions the
    softmax sees; every projection depends only on their span, docs/THEORY.md "Continual learning with
    cross-entropy")."""
    inputs, deltas = layer_features(net, params, jnp.asarray(X))
    if check_loss(loss) is losses.CROSS_ENTROPY:
        V = losses.null_basis(net.out_dim, deltas[0].dtype)
        deltas = [jnp.einsum("ck,ncm->nkm", V, d) for d in deltas]
    return Stored(tuple(inputs), tuple(deltas))


def store_metric_rows(net, params, X, loss="mse", offset=None) -> Stored:
    """The rows a task's *metric* is built from, frozen at its end (``ong_old_factors``): the whitened Jacobian
    rows R_nJ_n at the logits f(X; params) − ``offset`` (cross-entropy; MSE: J itself)."""
    inputs, deltas, f = layer_features(net, params, jnp.asarray(X), with_outputs=True)
    loss = check_loss(loss)
    if loss is losses.CROSS_ENTROPY:
        f = f if offset is None else f - offset
        R = losses.whitening(f, jnp.zeros_like(f).at[:, 0].set(1.0))[0]  # R depends on the logits only
        deltas = [jnp.einsum("nkc,ncm->nkm", R, d) for d in deltas]
    return Stored(tuple(inputs), tuple(deltas))


__all__ = ["Stored", "check_loss", "check_memory", "check_tasks", "offsets", "protected_samples", "store", "store_metric_rows"]
