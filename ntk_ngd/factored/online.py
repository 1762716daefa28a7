r"""Online natural gradient (Bernacchia, Lengyel & Hennequin 2018, "Exact natural gradient in deep linear networks
and its application to the nonlinear case", THEORY.md "Online deep-linear natural gradient") as an optax
transformation.

The paper's exact natural gradient of a deep linear network has a per-layer form (:mod:`ntk_ngd.deep_linear`,
closed_forms step 6–7), Δ_i = (1/L) W_{>i}⁺ (G S⁻¹)(W_{<i} S)⁺ = (1/L) F_ii⁺ ∇_i with the exactly Kronecker-factored
diagonal Fisher block F_ii = (W_{>i}ᵀW_{>i}) ⊗ (W_{<i}Σ_xW_{<i}ᵀ); for a nonlinear network the paper keeps the update

    ΔW_i = −(η/L) · G_i⁻¹ (∂L/∂W_i) A_i⁻¹,

with running (EMA) estimates A_i of the layer input's second moment and G_i of the output-Fisher-whitened backward
signal's. In this package that is K-FAC's factored form (:mod:`.kfac`, readout factor unscaled: ``kfac_readout=
"common"``) amortised over mini-batches (:func:`.minibatch.natural_gradient`: S ← decay·S + (1 − decay)·S_t every
``cov_every`` steps, the damped inverses every ``inv_every`` steps), **divided by the depth L**. In the package's
layout (θ_l = W̃_l = [W_l; b_l], fan_in + bias × fan_out, NTK parametrisation h̃ = [σ_w h/√fan_in, σ_b]):

    u_l = (1/L) (A_l + s_A I)⁻¹ ∇_l (G_l + s_B I)⁻¹,   A_l = E[h̃h̃ᵀ],  G_l = E[Σ_j δ̃_jδ̃_jᵀ],
    (s_A, s_B) = (√ρ, √ρ) (``factored_damping="rule"``) or (π√ρ, √ρ/π) ("pi"),  ρ = 0: pseudo-inverses,

the positive direction (chain a learning rate after it, as after ``optax.scale_by_adam``). On a deep *linear*
network without bias, with exact moments (decay 0, full batch, ``fisher="whitened"``, ρ = 0), the map
W_i = (σ_w/√M_{i−1}) θ_iᵀ to the closed form's layers turns u into (σ_w/√M_{i−1}) u_iᵀ = Δ_i: the step equals
:func:`ntk_ngd.deep_linear.paper_natural_gradient` (and the Moore–Penrose one for L = 1 or balanced scaled-orthogonal
layers on whitened inputs), tests/test_online_ng.py. Without the 1/L every layer alone removes the whole error
(F_ii⁺∇_i changes W by −ηE when W_{>i}, W_{<i} are invertible), so the step overshoots L-fold: rate 1 − Lη.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from .. import _validate
from ..networks import Network
from . import minibatch


class OnlineState(NamedTuple):
    """The amortised K-FAC state (:class:`.minibatch.MinibatchState`: ``count``, EMA ``stats``, ``inverses``,
    ``inverse_updates``); the 1/L is a constant."""

    inner: minibatch.MinibatchState


def _check_net(net) -> Network:
    if not isinstance(net, Network):
        raise ValueError(f"online_natural_gradient needs an ntk_ngd Network (ntk_ngd.mlp(...)), got {type(net).__name__}")
    return net


def online_natural_gradient(net: Network, *, decay: float = 0.95, damping=1e-3, loss: str = "mse",
                            cov_every: int = 1, inv_every: int = 1, fisher: str = "whitened", samples: int = 1,
                            seed: int = 0, rcond=None, factored_damping: str = "rule"
                            ) -> optax.GradientTransformationExtraArgs:
    """The online natural-gradient direction (module docstring): amortised K-FAC divided by the depth L.

    ``decay`` ∈ [0, 1): EMA weight of the old statistics (0.95 in the paper's and K-FAC's online estimates);
    ``damping`` ρ ≥ 0 (ρ = 0: pseudo-inverses of the factors); ``cov_every``/``inv_every`` = T_cov/T_inv;
    ``fisher`` "whitened" (exact backward moments), "sampled" (targets drawn from the model, ``samples`` per
    input, seeded by (``seed``, step)) or "empirical". ``update(grads, state, params, batch=(X, Y))``; the
    incoming ``grads`` are ignored (the batch gradient is recomputed with the curvature signals)."""
    net = _check_net(net)
    inner = minibatch.natural_gradient(net, "kfac", damping, loss, decay=decay, cov_every=cov_every,
                                       inv_every=inv_every, fisher=fisher, samples=samples, seed=seed, rcond=rcond,
                                       kfac_readout="common", factored_damping=factored_damping)
    scale = 1.0 / net.depth

    def init_fn(params):
        return OnlineState(inner.init(params))

    def update_fn(updates, state, params=None, *, batch, **extra):
        direction, new = inner.update(updates, state.inner, params, batch=batch, **extra)
        return jax.tree_util.tree_map(lambda u: scale * u, direction), OnlineState(new)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def online_ngd(net: Network, learning_rate, *, momentum: float | None = None, **options):
    """``chain(online_natural_gradient(net, **options), [optax.trace(momentum)], scale_by_learning_rate(lr))``: a
    ready optimiser like ``optax.adam`` (``learning_rate`` a number or an optax schedule); ``momentum`` None: none
    (the paper's plain step), else heavy-ball on the preconditioned direction (as K-FAC implementations run it)."""
    parts = [online_natural_gradient(net, **options)]
    if momentum is not None:
        m = _validate.nonnegative("momentum", momentum)
        if not m < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        parts.append(optax.trace(m))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


__all__ = ["OnlineState", "online_natural_gradient", "online_ngd"]
