"""The problems and runs of the online_ng figure: square deep linear networks in the package's NTK parametrisation,
trained with ``nn.fit``; the independent numpy predictions (exact recurrence, linearised online recursion)."""
from __future__ import annotations

import numpy as np
import optax

from ... import deep_linear as dl
from ...factored import minibatch
from ...factored.online import online_ngd
from ...fitting import fit
from ...networks import mlp


def problem(cfg, depth: int):
    """(net, θ_0, X, Y, layers W_0) for ``depth``: D = C = M = ``dim``, XᵀX/N with condition ``cond``, well-conditioned
    layers (:func:`ntk_ngd.deep_linear.random_weights`, the same seed for every depth) and a realisable teacher
    W* = (I − r_0 O) W_0 (O a random orthogonal matrix), so that ‖E_0W_0⁻¹‖₂ = r_0 exactly and Loss* = 0."""
    dim, n, seed = int(cfg["dim"]), int(cfg["n"]), int(cfg["seed"])
    X, _ = dl.make_regression(dim, dim, n, cond=float(cfg["cond"]), seed=seed)
    layers = dl.random_weights(dim, [dim] * (depth - 1), dim, seed=seed + 1, jitter=float(cfg["jitter"]))
    rotation, _ = np.linalg.qr(np.random.default_rng(seed + 2).standard_normal((dim, dim)))
    teacher = (np.eye(dim) - float(cfg["r0"]) * rotation) @ dl.end_to_end_map(layers)
    net = mlp(depth=depth, width=[dim] * (depth - 1), in_dim=dim, out_dim=dim, activation="linear", bias=False)
    return net, to_params(net, layers), X, X @ teacher.T, layers


def to_params(net, layers):
    """θ_i = W_iᵀ/c_i with c_i = σ_w/√M_{i−1}: the package's parameters of the closed form's layers W_i."""
    import jax.numpy as jnp

    out = []
    for l, W in enumerate(layers):
        out.append((jnp.asarray(W.T * np.sqrt(W.shape[1]) / net.w_std), None))
        if l < len(layers) - 1:
            out.append(())
    return out


def fisher_lambda_max(net, params, X) -> float:
    """λ_max of the Fisher JᵀJ/N in the package's parameters (J from jax.jacobian; P ≤ a few hundred)."""
    import jax
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)
    J = np.asarray(jax.jacobian(lambda v: net.apply(unravel(v), X).reshape(-1))(flat))
    return float(np.linalg.eigvalsh(J.T @ J / X.shape[0])[-1])


def optimiser(kind: str, net, lr: float, decay: float):
    """The optax transformation of a run: "online" (our optimiser), "no_1/L" (the same amortised K-FAC without the
    1/L: :func:`ntk_ngd.factored.minibatch.natural_gradient`), "gd" (optax.sgd). Exact pseudo-inverses (ρ = 0)."""
    if kind == "online":
        return online_ngd(net, lr, decay=decay, damping=0.0, fisher="whitened")
    if kind == "no_1/L":
        return optax.chain(minibatch.natural_gradient(net, "kfac", 0.0, "mse", decay=decay, fisher="whitened"),
                           optax.scale_by_learning_rate(lr))
    return optax.sgd(lr)


def excess(losses, X, Y) -> np.ndarray:
    """Loss − Loss*, Loss* of the least-squares map (numpy lstsq; 0 up to rounding for realisable targets)."""
    return np.asarray(losses, float) - dl.mse_loss(dl.least_squares_map(X, Y), X, Y)


def train(cfg, depth: int, kind: str, mode: str, lr: float) -> dict:
    """One ``nn.fit`` run; ``mode`` "full" (full batch, EMA decay 0: exact moments) or "online" (mini-batches of
    ``batch``, EMA ``decay``). Returns the excess-loss curve per step (evaluated after every step)."""
    net, params, X, Y, _ = problem(cfg, depth)
    full = mode == "full"
    batch = X.shape[0] if full else int(cfg["batch"])
    steps = int(cfg["full_steps"]) if full else int(cfg["online_steps"])
    epochs = steps if full else steps // (X.shape[0] // batch)
    tx = optimiser(kind, net, lr, 0.0 if full else float(cfg["decay"]))
    traj = fit(net, params, X, Y, tx, epochs=epochs, batch_size=batch, seed=int(cfg["seed"]), eval_every=None,
               name=f"{kind} L={depth}", progress=False)  # evaluated once per epoch: every step at full batch
    curve = excess(traj.train_loss, X, Y)
    return {"depth": depth, "kind": kind, "mode": mode, "lr": lr, "steps": traj.times.tolist(),
            "excess": curve.tolist(), "diverged_at": traj.diverged_at, "wall_s": float(traj.wall_time[-1])}


#: rates are fitted where the excess is ≥ RATE_FLOOR × its start (float64 keeps ~1e-5 relative accuracy there)
RATE_FLOOR = 1e-20


def fitted_rate(times, curve, start: int = 0, stop: int | None = None) -> float:
    """Least-squares slope of log(excess) against the step over the evaluated steps in [start, stop] (a positively
    weighted average of the per-step log ratios, so it lies within their range), using the points whose excess is
    ≥ RATE_FLOOR × the start. A curve that falls below that floor before ``start`` (the fast no-1/L controls) is
    fitted from step 0 instead. NaN if fewer than 3 points remain."""
    t, y = np.asarray(times, float), np.asarray(curve, float)
    stop = t[-1] if stop is None else stop
    above = np.isfinite(y) & (y >= RATE_FLOOR * y[0])
    sel = above & (t >= start) & (t <= stop)
    if sel.sum() < 3:
        sel = above & (t <= stop)
    if sel.sum() < 3:
        return float("nan")
    return float(np.polyfit(t[sel], np.log(y[sel]), 1)[0])


def exact_prediction(cfg, depth: int, lr: float) -> dict:
    """The closed-form predictions of the full-batch run: ``deep_linear.predicted_loss`` "exact" (the recurrence
    W' = (I − (η/L)EW⁻¹)^L W) and "first_order" ((1 − η)^{2t}), and r̄ = max_t ‖E_tW_t⁻¹‖₂ along the recurrence."""
    _, _, X, Y, layers = problem(cfg, depth)
    steps = int(cfg["full_steps"])
    maps = dl.predicted_end_to_end_maps(layers, X, Y, lr, steps, form="exact")
    target = dl.least_squares_map(X, Y)
    ratio = max(np.linalg.norm((m - target) @ np.linalg.inv(m), 2) for m in maps)
    return {"exact": excess(dl.predicted_loss(layers, X, Y, lr, steps, form="exact"), X, Y).tolist(),
            "first_order": excess(dl.predicted_loss(layers, X, Y, lr, steps, form="first_order"), X, Y).tolist(),
            "r_max": float(ratio)}


def batch_orders(n: int, batch: int, steps: int, seed: int):
    """The batches ``nn.fit`` draws (a permutation per epoch from ``default_rng(seed)``, consecutive slices)."""
    rng, per_epoch, out = np.random.default_rng(seed), n // batch, []
    while len(out) < steps:
        order = rng.permutation(n)
        out += [order[b * batch:(b + 1) * batch] for b in range(per_epoch)]
    return out[:steps]


def linearised_online(cfg, depth: int, lr: float, seed: int) -> np.ndarray:
    """Excess loss of E_{t+1} = E_t(I − ηΣ_{b_t}Â_t⁻¹), Â_t = βÂ_{t−1} + (1 − β)Σ_{b_t} (Â_0 = Σ_{b_0}): the first-order
    online natural gradient of a square deep linear network at any depth (exact at depth 1), numpy, on the batches
    of ``seed``."""
    _, _, X, Y, layers = problem(cfg, depth)
    n, beta, steps = X.shape[0], float(cfg["decay"]), int(cfg["online_steps"])
    E = dl.end_to_end_map(layers) - dl.least_squares_map(X, Y)
    cov, A, out = dl.input_covariance(X), None, []
    for t, idx in enumerate(batch_orders(n, int(cfg["batch"]), steps, seed)):
        out.append(0.5 * np.trace(E @ cov @ E.T))
        Sb = X[idx].T @ X[idx] / idx.size
        A = Sb if t == 0 else beta * A + (1.0 - beta) * Sb
        E = E - lr * E @ Sb @ np.linalg.inv(A)
    out.append(0.5 * np.trace(E @ cov @ E.T))
    return np.asarray(out)  # at steps 0..online_steps


__all__ = ["batch_orders", "RATE_FLOOR", "exact_prediction", "excess", "fisher_lambda_max", "fitted_rate", "linearised_online",
           "optimiser", "problem", "to_params", "train"]
