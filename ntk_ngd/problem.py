"""What every entry point does first: check the inputs once, at the public boundary, and assemble
the loss-whitened kernels and the method :class:`~ntk_ngd.methods.Context` (THEORY.md "Setup").

A problem is (network, inputs X, outputs f at X, targets, loss). Outputs default to f(X; params) at
finite width and to the prior mean 0 at infinite width (``params=None``). For MSE a ``residual``
f − Y may be given instead of targets; for cross-entropy the whitening R depends only on the logits,
so kernel methods need no labels and residual-dependent ones (ef, ief) do.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from . import _validate, losses, methods
from .damping import Damping
from .kernels import LayerKernels, layer_kernels
from .networks import Network


@dataclasses.dataclass(frozen=True)
class Problem:
    net: Network
    X: np.ndarray
    params: object
    loss: losses.Loss
    f: np.ndarray  # outputs (N, C) at X
    targets: np.ndarray | None  # Y (MSE) or one-hot labels (cross-entropy)
    residual: np.ndarray | None  # MSE residual given directly (N, C)
    X_test: np.ndarray | None

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def rows(self) -> int:
        return self.loss.rows(self.net.out_dim)

    def whitening(self) -> losses.Whitening | None:
        """R, u, s at (f, targets); None when there is nothing to whiten with (MSE without a residual)."""
        if self.residual is not None:
            r = jnp.asarray(self.residual)
            return losses.Whitening(None, r, jnp.sum(r**2, axis=1), r)
        if self.targets is not None:
            return self.loss.whiten(jnp.asarray(self.f), jnp.asarray(self.targets))
        if self.loss is losses.MSE:
            return None
        dummy = np.eye(self.net.out_dim)[np.zeros(self.n, int)]  # R depends on the logits only
        w = self.loss.whiten(jnp.asarray(self.f), jnp.asarray(dummy))
        return losses.Whitening(w.R, None, None, None)


def check_network(net) -> Network:
    if not isinstance(net, Network):
        raise ValueError(f"net must be an ntk_ngd.networks.Network (from mlp(...)), got {type(net).__name__}")
    return net


def _array(x):
    """float64 numpy array, or the tracer itself inside jit/vmap/grad (validated by shape only)."""
    return x if _validate.is_traced(x) else np.asarray(x, dtype=float)


def prepare(net, X, params=None, loss="mse", targets=None, outputs=None, residual=None, X_test=None) -> Problem:
    """Validate and assemble a :class:`Problem` (module docstring). Works on tracers (jit/vmap/grad):
    their values are not inspected, only their shapes."""
    net = check_network(net)
    loss = losses.get(loss)
    X = _array(net.check_inputs(X, "X"))
    n = X.shape[0]
    if params is not None:
        from .kernels import check_params

        check_params(net, params)
    if outputs is None:
        f = jnp.zeros((n, net.out_dim)) if params is None else _array(net.apply(params, X))
    else:
        f = _array(_validate.finite_matrix("outputs", outputs, cols=net.out_dim, rows=n))
    Y = None
    if targets is not None:
        Y = targets if _validate.is_traced(targets) else loss.check_targets(targets, n, net.out_dim)
    if loss is losses.CROSS_ENTROPY:
        loss.check_targets(np.zeros(n, int), n, net.out_dim)  # out_dim >= 2
    if residual is not None:
        if loss is not losses.MSE:
            raise ValueError("residual= is the MSE residual f - Y; for cross_entropy pass targets= (labels)")
        if targets is not None:
            raise ValueError("pass residual= or targets=, not both")
        residual = _array(_validate.finite_matrix("residual", jnp.reshape(residual, (n, -1)) if _validate.is_traced(
            residual) else np.reshape(np.asarray(residual), (n, -1)), cols=net.out_dim))
    X_test = None if X_test is None else _array(net.check_inputs(X_test, "X_test"))
    return Problem(net, X, params, loss, f, Y, residual, X_test)


def kernels(problem: Problem, train_kernels: LayerKernels | None = None, test_kernels: LayerKernels | None = None):
    """Unwhitened (train X×X, test X_test×X or None) layer kernels at the problem's params."""
    net, params = problem.net, problem.params
    train = layer_kernels(net, problem.X, params=params) if train_kernels is None else train_kernels
    test = test_kernels
    if test is None and problem.X_test is not None:
        test = layer_kernels(net, problem.X_test, problem.X, params=params)
    return train, test


def whiten(problem: Problem, train: LayerKernels, test: LayerKernels | None, R=None):
    """Loss-whitened kernels: train (R, R), test (the loss's left basis, R); MSE: unchanged."""
    if R is None:
        w = problem.whitening()
        R = None if w is None else w.R
    if R is None:
        return train, test
    left = problem.loss.left_basis(0 if test is None else test.fwd.shape[1], problem.net.out_dim, R.dtype)
    return train.whiten(R, R), None if test is None else test.whiten(left, R)


def context(spec: methods.Method, problem: Problem, damping, rcond=None, options: dict | None = None,
            step: int = 0, whitening: losses.Whitening | None = None) -> methods.Context:
    """The method's context: normalised options, damping, whitened residual, iEF weights, SF scores."""
    damping = Damping.of(damping)
    if rcond is not None:
        rcond = _validate.nonnegative("rcond", rcond)
    spec.check_loss(problem.loss.name)
    opts = spec.normalise_options(options or {}, problem.net.depth)
    w = problem.whitening() if whitening is None else whitening
    residual = weights = scores = None
    if w is not None and w.u is not None:
        residual, weights = jnp.reshape(w.u, (-1,)), w.s
    if spec.needs_residual and residual is None:
        need = ("residual= (f(X) - Y)" if problem.loss is losses.MSE else "targets= (labels)")
        raise ValueError(f"method {spec.name!r} needs {need}: it depends on the residual")
    if spec.random:
        scores = spec.draw(problem.loss, problem.f, dict(opts), step)
    return methods.Context(problem.n, damping, opts, rcond, residual, weights, scores, problem.net)


__all__ = ["Problem", "check_network", "context", "kernels", "prepare", "whiten"]
