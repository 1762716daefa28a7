"""kfac-jax, the external K-FAC, on the package's networks with the conventions matched (optional extra
``[peers]``: ``pip install -e '.[peers]'``; THEORY.md "kfac-jax side by side").

The package's Dense layer z = (σ_w/√d)·h W + σ_b·b is handed to kfac-jax as one bias-free dense layer on the
augmented input,

    z = h̃ W̃,   h̃ = [(σ_w/√d)·h, σ_b],   W̃ = [W; b]   ((d + 1) × m),

which is exactly the scaled input of the package's factored form (:mod:`ntk_ngd.factored.features`), so that
kfac-jax's input factor E[h̃h̃ᵀ] is the package's A_l. (Registering the layer with kfac-jax's own bias would
append a constant 1, not σ_b: the two agree only at σ_b = 1.) The other conventions:

* loss: the package's MSE (1/2N)Σ_n||f_n − y_n||² is kfac-jax's ``register_squared_error_loss(weight=0.5)``
  (kfac-jax's is weight·Σ||·||²/N); its cross-entropy −(1/N)Σ_n yₙᵀlog softmax(f_n) is
  ``register_softmax_cross_entropy_loss(weight=1)``;
* Fisher: ``estimation_mode="ggn_exact"`` (the whitened backward signals of every output; kfac-jax's
  ``ggn_curvature_prop`` is a one-sample estimate for C > 1);
* readout: the package's ``kfac_readout="common"`` (B_L = G_L, no factor N);
* damping: kfac-jax π-splits, (A + π√ρ) ⊗ (G + √ρ/π), π = sqrt((tr A/d)/(tr G/m)): the package's
  ``factored_damping="pi"`` (its default "rule" adds √ρ to each factor, the Gram form's damping);
* curvature average: kfac-jax's is a normalised weighted sum, S_t = (Σ_s ε^{t−s} S_s)/(Σ_s ε^{t−s}) with
  ε = ``curvature_ema``, the package's an EMA S ← d·S + (1 − d)·S_t started at S_0; they coincide at ε = d = 0.
* step: no adaptive learning rate, momentum or damping; θ ← θ − η·(preconditioned gradient).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _validate
from .backends import activations

LOSS_WEIGHTS = {"mse": 0.5, "cross_entropy": 1.0}
ESTIMATION_MODES = ("ggn_exact", "fisher_exact", "ggn_curvature_prop", "fisher_curvature_prop", "fisher_empirical")


def kfac_jax():
    """The kfac_jax module, or a one-line ImportError naming the extra."""
    try:
        import kfac_jax as module
    except ImportError as err:
        raise ImportError("kfac-jax is not installed: pip install -e '.[peers]' (kfac-jax 0.0.8, jax 0.4.38)") from err
    return module


def augmented_params(net, params) -> list:
    """The package's stax-layout ``params`` as kfac-jax's list of W̃_l = [W_l; b_l] (module docstring)."""
    dense = params[::2]
    return [jnp.concatenate([W, b], axis=0) if net.bias else W for W, b in dense]


def stax_params(net, augmented) -> list:
    """Inverse of :func:`augmented_params`: W̃_l back to the package's ``[(W, b), (), ...]``."""
    out = []
    for l, Wt in enumerate(augmented):
        d = net.fan_in[l]
        out.append((Wt[:d], Wt[d:]) if net.bias else (Wt, None))
        if l < net.depth - 1:
            out.append(())
    return out


def augmented_apply(net, augmented, X, register: bool = True):
    """f(X) of ``net`` at W̃ (module docstring), every layer registered with kfac-jax when ``register``."""
    phi = activations.get(net.activation)
    h = jnp.asarray(X)
    for l, Wt in enumerate(augmented):
        h = (net.w_std / jnp.sqrt(net.fan_in[l])) * h
        if net.bias:
            h = jnp.concatenate([h, jnp.full((h.shape[0], 1), net.b_std, h.dtype)], axis=1)
        z = h @ Wt
        if register:
            z = kfac_jax().register_dense(z, h, Wt)
        h = phi(z) if l < net.depth - 1 else z
    return h


def loss_function(net, loss: str = "mse"):
    """value(W̃, (X, Y)) of the package's loss, with its kfac-jax registration (module docstring)."""
    _validate.choice("loss", loss, tuple(LOSS_WEIGHTS))
    kj = kfac_jax()

    def value(augmented, batch):
        X, Y = batch
        f = augmented_apply(net, augmented, X)
        if loss == "mse":
            kj.register_squared_error_loss(f, Y, weight=LOSS_WEIGHTS[loss])
            return 0.5 * jnp.sum((f - Y) ** 2) / f.shape[0]
        kj.register_softmax_cross_entropy_loss(f, Y, weight=LOSS_WEIGHTS[loss])
        return -jnp.sum(Y * jax.nn.log_softmax(f, axis=-1)) / f.shape[0]

    return value


def optimizer(net, loss: str = "mse", inv_every: int = 1, curvature_ema: float = 0.0,
              estimation_mode: str = "ggn_exact"):
    """A kfac-jax ``Optimizer`` with fixed learning rate, momentum and damping (passed to ``step``), inverses
    every ``inv_every`` steps, the Fisher of ``estimation_mode``; float64 if jax's x64 is on."""
    _validate.positive_int("inv_every", inv_every)
    _validate.choice("estimation_mode", estimation_mode, ESTIMATION_MODES)
    ema = _validate.nonnegative("curvature_ema", curvature_ema)
    if not ema < 1:
        raise ValueError(f"curvature_ema must be in [0, 1), got {curvature_ema!r}")
    kj = kfac_jax()
    return kj.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_function(net, loss)),
        l2_reg=0.0,
        use_adaptive_learning_rate=False,
        use_adaptive_momentum=False,
        use_adaptive_damping=False,
        estimation_mode=estimation_mode,
        curvature_ema=ema,
        inverse_update_period=inv_every,
        num_burnin_steps=0,
        multi_device=False,
    )


__all__ = ["ESTIMATION_MODES", "LOSS_WEIGHTS", "augmented_apply", "augmented_params", "kfac_jax", "loss_function",
           "optimizer", "stax_params"]
