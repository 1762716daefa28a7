"""Projected step kernels: forgetting and learning predicted from cross-task kernels (docs/THEORY.md
"Continual learning in function space"; the projections in :mod:`.projections`).

All kernels live on one row set R whose first n_b samples are the task being trained (B); the protected
rows A are any other samples of R. In the lazy regime (infinite width, or the network linearised at its
parameters) one step θ ← θ + ηd moves the outputs on every row of R by

    Δf_R = −η K^P_{R,B} r_B,     K^P_{R,B} = K_{R,B} − Left_{R,A} Mid_AA⁺ Right_AB,

with K_{R,B} = J_R M⁻¹J_Bᵀ/N_B the method's own kernel (``Method.kernel`` with R as test rows: it exists for
every method, at ρ = 0 too) and the other kernels from the method's metric (:mod:`ntk_ngd.methods._metric`).
Everything is a Gram of at most |R|·k rows: no P×P matrix, and one code path for finite and infinite width.

Cross-entropy (docs/THEORY.md "Continual learning with cross-entropy"): the layer kernels are whitened per
sample, R_B on the task trained (the method's metric is built from J̃_B = R_BJ_B, the step acts on ũ_B) and the
left basis Vᵀ (C − 1 rows) on every other row, so K^P_{R,B} ũ_B is VᵀΔf: the logit step modulo 1_C. The
protected directions are the old rows (I ⊗ Vᵀ)J_A; every projection depends only on their span, which is that
of R_AJ_A for any whitening R_A of rank C − 1 (so the old logits' Λ_A does not enter the step).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from .. import linalg, losses, methods, problem as _problem
from ..damping import Damping
from ..kernels import LayerKernels, layer_kernels
from ..methods._metric import task_and_all
from . import memory as _memory, projections as _projections


def sample_rows(samples, c: int):
    """Row indices (n·c + j) of the given samples."""
    samples = jnp.asarray(samples, dtype=int)
    return (samples[:, None] * c + jnp.arange(c)[None, :]).reshape(-1)


def reorder(lk: LayerKernels, order) -> LayerKernels:
    """The square layer kernels with their samples permuted to ``order`` (rows and columns alike)."""
    order = np.asarray(order, dtype=int)
    c = lk.n_outputs_per_sample
    rows = np.asarray(sample_rows(order, c))

    def feats(fs):
        return None if fs is None else tuple(f[order] for f in fs)

    return LayerKernels(lk.fwd[:, order][:, :, order], lk.bwd[:, rows][:, :, rows], lk.ntk[:, rows][:, :, rows],
                        lk.out_dim, lk.output_diagonal, feats(lk.deltas), feats(lk.deltas2), feats(lk.inputs),
                        feats(lk.inputs2), lk.whitened, lk.finite)


def kernel_rows(lk: LayerKernels, spec) -> int:
    """Kernel rows per sample: 1 for output-diagonal kernels (infinite width, standing for ⊗ I_C), else C —
    also at infinite width for residual-dependent or random methods, whose kernels are full there."""
    if lk.output_diagonal and not (lk.out_dim > 1 and (spec.needs_residual or spec.random)):
        return 1
    return lk.out_dim


class RowKernels:
    """The named kernels of :mod:`.projections` over the rows R of ``lk`` (first ``n_b`` samples: task B),
    computed once each on demand. ``full``: residual-dependent or random methods have full-output kernels
    even where the layer kernels are output-diagonal (infinite width), so everything is expanded to match."""

    def __init__(self, lk: LayerKernels, n_b: int, spec: methods.Method, ctx, basis_ctx=None, old_samples=None,
                 n_old: int = 0):
        self.lk, self.n_b, self.spec, self.ctx, self.basis_ctx = lk, n_b, spec, ctx, basis_ctx
        self.old_samples, self.n_old = old_samples, n_old  # the previous task's samples O in R (ong_old_factors)
        self.c = kernel_rows(lk, spec)
        self.full = lk.output_diagonal and self.c > 1
        self._cache: dict = {}

    @property
    def n_rows_b(self) -> int:
        return self.n_b * self.c

    def _match(self, K):
        return linalg.kron_identity(K, self.lk.out_dim) if self.full and K.shape[0] == self.lk.fwd.shape[1] else K

    def _compute(self, name: str):
        lk, n_b, spec, ctx = self.lk, self.n_b, self.spec, self.ctx
        if name == "step":
            train, rows = task_and_all(lk, n_b)
            return spec.kernel(train, rows, ctx).test
        if name == "ntk":
            return lk.total_ntk / ctx.n
        metric = spec.require_metric(f"the {name!r} kernel")
        if name == "metric":
            return metric.inverse(lk, n_b, ctx)
        if name == "square":
            return metric.sandwich_kernel(lk, n_b, ctx, None)
        if name == "forward":
            return metric.forward(lk, n_b, ctx)
        if name == "basis":
            return metric.inverse(lk, n_b, self.basis_ctx)
        if name == "stale":
            return metric.sandwich_kernel(lk, n_b, self.basis_ctx, ctx.damping)
        raise ValueError(f"unknown kernel {name!r}")

    def old_square(self):
        """S_o = J M⁻¹M_oM⁻¹Jᵀ/N_B over R with M_o the previous task's metric (:mod:`.projections`), from the
        method's own ``Metric.old_sandwich`` (exact NGD: ρS + (N_B/N_O)K_{·O}K_{O·}; gd: S)."""
        stored = self.old_samples is not None and self.n_old > 0
        O = sample_rows(self.old_samples, self.c) if stored else None
        return self.spec.metric.old_sandwich(self["metric"], self["square"], O, self.ctx.damping.value, self.n_b,
                                             self.n_old)

    def __getitem__(self, name: str):
        if name not in self._cache:
            self._cache[name] = self.old_square() if name == "old_square" else self._match(self._compute(name))
        return self._cache[name]


def correction(rk: RowKernels, protected_rows, projection):
    """(Left_{R,A}, Mid_AA, Right_AB) of ``projection`` (:mod:`.projections`) on the protected rows."""
    A, B = protected_rows, slice(0, rk.n_rows_b)
    left = rk[projection.left][:, A]
    mid = rk[projection.middle][A][:, A]
    right = rk[projection.right][A][:, B]
    return left, mid, right


def mid_solve(mid, rhs, rcond=None):
    """Mid_AA⁺ rhs (the pseudo-inverse with the solves' one cut-off: protected rows may be dependent)."""
    return linalg.solve(mid, rhs, 0.0, rcond)


def step_kernel(rk: RowKernels, protected_rows, projection):
    """K^P_{R,B} (module docstring): Δf_R = −η K^P_{R,B} r_B."""
    step = rk["step"]
    if projection.left is None or protected_rows.shape[0] == 0:
        return step
    left, mid, right = correction(rk, protected_rows, projection)
    return step - left @ mid_solve(mid, right, rk.ctx.rcond)


def basis_context(ctx, projection, damping, basis_damping):
    """The context of the basis metric M_b (``ong_stale``): the same method with damping ρ_b."""
    if not projection.uses_basis_damping:
        return None
    rho_b = 10.0 * float(damping) if basis_damping is None else basis_damping
    return ctx.replace(damping=Damping.of(rho_b))


@dataclasses.dataclass(frozen=True)
class ProjectedKernels:
    """The two kernels of claim 2 for one projected step on X_new protecting X_old (lazy regime):

    Δf(X_old) = −η ``forgetting`` r_new,   Δf(X_new) = −η ``learning`` r_new,

    ``forgetting`` (N_old·k × N_new·k) is 0 for consistent projections; ``learning`` (N_new·k square) is the
    Schur complement K_BB − K_BA K_AA⁻¹ K_AB for ``ong``. k = C at finite width (rows n·C + c); at infinite
    width the kernels are output-diagonal and stored N×N (standing for ⊗ I_C) except for ef/sf.

    Cross-entropy (``loss="cross_entropy"``, k = C − 1, r_new the whitened residual ũ): ``forgetting`` has the
    rows (I ⊗ Vᵀ) of the old logits, ``learning`` the whitened rows R_B (the metric form Θ̃, whose ong Schur
    complement is symmetric PSD), ``learning_logits`` the rows (I ⊗ Vᵀ) of the new logits (MSE: ``learning``);
    ``residual`` the ũ (N_new, k) at the linearisation point (when targets were given)."""

    forgetting: np.ndarray
    learning: np.ndarray
    method: str
    projection: str
    damping: float
    basis_damping: float | None
    output_diagonal: bool
    loss: str = "mse"
    learning_logits: np.ndarray | None = None
    residual: np.ndarray | None = None
    classes: int = 0

    def step(self, residual=None):
        """(Δf(X_old), Δf(X_new)) per unit learning rate. MSE: for a new-task residual (N_new, C). Cross-entropy:
        for a whitened residual ũ (N_new, C − 1) (default: the one at the linearisation point), as logit steps
        (N, C) orthogonal to 1_C: V·(−K ũ)."""
        if self.loss == "cross_entropy":
            u = self.residual if residual is None else residual
            if u is None:
                raise ValueError("step() needs the whitened residual: pass it, or targets= (labels) to "
                                 "projected_kernels")
            V = np.asarray(losses.null_basis(self.classes, np.float64))
            u = np.asarray(u, float).reshape(-1)
            k = V.shape[1]
            return (-self.forgetting @ u).reshape(-1, k) @ V.T, (-self.learning_logits @ u).reshape(-1, k) @ V.T
        if residual is None:
            raise ValueError("step() needs the new task's residual f - Y (N_new, C)")
        r = np.asarray(residual, float)
        c = r.shape[-1]
        r = r if self.output_diagonal else r.reshape(-1)
        return (-self.forgetting @ r).reshape(-1, c), (-self.learning @ r).reshape(-1, c)


def projected_kernels(net, X_old, X_new, method: str, projection: str, params=None, damping: float = 1e-3,
                      basis_damping: float | None = None, residual=None, targets=None, rcond: float | None = None,
                      loss: str = "mse", outputs=None, old_outputs=None, **options) -> ProjectedKernels:
    """The forgetting and learning kernels (claim 2) of ``method`` with ``projection`` (:mod:`.projections`)
    for a step on X_new that protects X_old: infinite width with ``params=None``, else the network linearised at
    ``params``. ``damping`` ρ (ρ > 0 for the projections that need two-sided kernels), ``basis_damping`` ρ_b of
    ``ong_stale`` (default 10ρ). ef/sf need the new task's ``residual`` (f − Y) or ``targets``; ``options`` go
    to the method. ``loss="cross_entropy"``: ``targets`` are the new task's labels (classes (N,) or one-hot),
    the kernels are whitened (module docstring); ``outputs``/``old_outputs``: the logits the whitening is taken
    at (default f(X; params), 0 at infinite width). ``ong_old_factors`` takes the previous task to be X_old at
    ``old_outputs``."""
    return every_projection(net, X_old, X_new, method, (projection,), params, damping, basis_damping, residual,
                            targets, rcond, loss, outputs, old_outputs, **options)[_projections.get(projection).name]


def row_layout(n_b: int, n_a: int, cross_entropy: bool, old: bool):
    """Sample order of the rows R of :func:`every_projection` and where each group sits: B first (the metric's
    rows), then A; cross-entropy adds B again (rows Vᵀ: the new logits) and, for ``ong_old_factors``, A again
    (rows R_O at the old logits: the old metric's samples). Returns (order, A, B_logits, O) as sample indices."""
    B, A = np.arange(n_b), np.arange(n_b, n_b + n_a)
    if not cross_entropy:
        return np.arange(n_b + n_a), A, B, A
    order = np.concatenate([B, A, B] + ([A] if old else []))
    b_logits = np.arange(n_b + n_a, 2 * n_b + n_a)
    return order, A, b_logits, (np.arange(2 * n_b + n_a, 2 * (n_b + n_a)) if old else None)


def whiten_rows(lk: LayerKernels, R_B, R_O=None):
    """Cross-entropy: the square layer kernels whitened per sample, R_B on the first samples (task B), R_O on
    the last ones (the old metric's samples, when given) and Vᵀ on the rest (module docstring)."""
    n = lk.fwd.shape[1]
    n_b, n_o = R_B.shape[0], 0 if R_O is None else R_O.shape[0]
    V = losses.null_basis(lk.out_dim, R_B.dtype)
    parts = [R_B, jnp.broadcast_to(V.T, (n - n_b - n_o,) + V.T.shape)] + ([] if R_O is None else [R_O])
    W = jnp.concatenate(parts)
    return lk.whiten(W, W)


def logit_whitening(net, X, params, outputs):
    """R (N, C − 1, C) of the softmax at the logits (``outputs``; default f(X; params), or 0 at infinite width)."""
    return _problem.prepare(net, X, params, "cross_entropy", None, outputs).whitening().R


def every_projection(net, X_old, X_new, method: str, projections=_projections.NAMES, params=None,
                     damping: float = 1e-3, basis_damping: float | None = None, residual=None, targets=None,
                     rcond: float | None = None, loss: str = "mse", outputs=None, old_outputs=None,
                     **options) -> dict[str, ProjectedKernels]:
    """{projection: :class:`ProjectedKernels`} for several projections at once: one set of layer kernels and one
    :class:`RowKernels` (every named kernel computed once). Arguments as :func:`projected_kernels`."""
    spec, chosen = methods.get(method), [_projections.get(p) for p in projections]
    loss = _memory.check_loss(loss)
    ce = loss is losses.CROSS_ENTROPY
    X_old = np.asarray(net.check_inputs(X_old, "X_old"), float)
    X_new = np.asarray(net.check_inputs(X_new, "X_new"), float)
    if spec.finite_width_only and params is None:
        raise ValueError(spec.finite_width_only)
    prob = _problem.prepare(net, X_new, params, loss.name, targets, outputs, residual)
    ctx = _problem.context(spec, prob, damping, rcond, options)
    for proj in chosen:
        _projections.check_method(spec, proj, ctx.damping)
    n_b, n_a = X_new.shape[0], X_old.shape[0]
    old = any(p.uses_old_metric for p in chosen)
    order, A, B_logits, O = row_layout(n_b, n_a, ce, old)
    lk = reorder(layer_kernels(net, np.concatenate([X_new, X_old]), params=params), order)
    w = prob.whitening() if ce else None
    if ce:
        lk = whiten_rows(lk, w.R, logit_whitening(net, X_old, params, old_outputs) if old else None)
    basis = basis_context(ctx, _projections.get("ong_stale"), damping, basis_damping)
    rk = RowKernels(lk, n_b, spec, ctx, basis, O, n_a)
    old_rows, logit_rows = np.asarray(sample_rows(A, rk.c)), np.asarray(sample_rows(B_logits, rk.c))
    out = {}
    for proj in chosen:
        K = np.asarray(step_kernel(rk, sample_rows(A, rk.c), proj))
        out[proj.name] = ProjectedKernels(
            K[old_rows], K[: rk.n_rows_b], spec.name, proj.name, float(ctx.damping.value),
            float(basis.damping.value) if proj.uses_basis_damping else None, lk.output_diagonal and not rk.full,
            loss.name, K[logit_rows], None if (w is None or w.u is None) else np.asarray(w.u), net.out_dim)
    return out


__all__ = ["ProjectedKernels", "RowKernels", "basis_context", "correction", "every_projection", "kernel_rows",
           "logit_whitening", "mid_solve", "projected_kernels", "reorder", "row_layout", "sample_rows", "step_kernel",
           "whiten_rows"]
