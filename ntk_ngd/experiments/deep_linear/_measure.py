r"""The runs behind the deep_linear figure: the problems, exact NG and GD trajectories and their
measured rates, and the closed form vs dense reference records (the theory: the package docstring)."""
from __future__ import annotations

import math

import numpy as np

from ... import deep_linear as dl
from ._constants import DOMINANCE, DRIFT, EXACT_FLOOR, FLOOR

# ---------------------------------------------------------------- problems

def problem_data(cfg, cond, out_dim, salt):
    """Same seed for every cond: same rotation, samples and teacher, only Σ_x's spectrum changes."""
    seed = int(cfg["seed"]) + 1000 * salt
    X, Y = dl.make_regression(int(cfg["in_dim"]), out_dim, int(cfg["n"]), cond, seed=seed,
                              noise=float(cfg["noise"]))
    w_star = np.linalg.lstsq(X, Y, rcond=None)[0].T       # independent of deep_linear's W*
    return X, Y, w_star, dl.mse_loss(w_star, X, Y)


def initial_weights(cfg, depth, widths, out_dim, salt):
    return dl.random_weights(int(cfg["in_dim"]), widths, out_dim, seed=int(cfg["seed"]) + 17 * depth + salt)


def _valid(excess, loss_star):
    """Mask of steps whose excess loss is far enough above rounding to form ratios."""
    return excess > max(FLOOR * excess[0], 1e-6 * loss_star, 0.0)


def _ratios(excess, loss_star):
    ok = _valid(excess, loss_star)
    keep = ok[1:] & ok[:-1]
    return (excess[1:] / excess[:-1])[keep]


def _gradient_descent(weights, X, Y, lr, steps):
    """Plain GD W_i ← W_i − η W_{>i}ᵀ G W_{<i}ᵀ (as dl.train(method="gd") without its per-step
    validation); returns the losses at t = 0..steps and the final layers."""
    layers = [np.array(w) for w in weights]
    losses = np.empty(steps + 1)
    for t in range(steps + 1):
        W = dl.end_to_end_map(layers)
        losses[t] = dl.mse_loss(W, X, Y)
        if t == steps:
            break
        grads = dl.layer_gradients(layers, dl.end_to_end_gradient(W, X, Y))
        layers = [w - lr * g for w, g in zip(layers, grads)]
    return losses, layers


def _ntk_spectrum(weights, X, rank):
    """Non-zero eigenvalues of Θ/N (ascending; the top ``rank`` = C·D), Θ = Σ_l Θ_l from the per-layer
    blocks Θ_l = (X W_{<l}ᵀW_{<l}Xᵀ) ⊗ (W_{>l}W_{>l}ᵀ) (equal to J_lJ_lᵀ of the dense Jacobian: tests
    test_deep_linear.py / test_deep_linear_gram.py; the dense Jacobian itself costs minutes at N = 256)."""
    eig = np.linalg.eigvalsh(sum(dl.layer_ntk_blocks(weights, X)) / X.shape[0])
    return eig[-rank:]


def _gd_steps(spectrum, lr, cap):
    """Steps for the second-slowest mode to die out, from the initial spectrum (×1.5 margin)."""
    lam1, lam2, lam_max = spectrum[0], spectrum[1], spectrum[-1]
    if lam2 <= lam1 * (1 + 1e-9):
        return min(cap, 200)
    per_step = -2 * math.log((1 - lr * lam2) / (1 - lr * lam1))
    return int(min(cap, math.ceil(1.5 * math.log(1e4 * lam_max / lam1) / per_step) + 50))


# ---------------------------------------------------------------- runs

def exact_run(cfg, depth, cond):
    """Exact (Moore–Penrose) NG at η and, for the order check, one step at η·order_factor."""
    lr, steps = float(cfg["lr"]), int(cfg["steps"])
    X, Y, w_star, loss_star = problem_data(cfg, cond, int(cfg["out_dim"]), 0)
    w0 = initial_weights(cfg, depth, [int(cfg["width"])] * (depth - 1), int(cfg["out_dim"]), 0)
    run = dl.train(w0, X, Y, "exact", lr, steps)
    excess = run.train_loss - loss_star
    ratios = _ratios(excess, loss_star)
    small_lr = lr * float(cfg["order_factor"])
    small = dl.train(w0, X, Y, "exact", small_lr, 1).train_loss - loss_star
    first_small = abs(small[1] / small[0] - (1 - small_lr) ** 2)
    deviation = np.abs(ratios - (1 - lr) ** 2)
    return {
        "depth": depth, "cond": cond, "loss_star": loss_star, "excess": excess,
        "normalized_excess": excess / excess[0],
        "predicted_normalized": (1 - lr) ** (2 * np.arange(steps + 1)),
        "ratios": ratios, "max_deviation": float(deviation.max()),
        "first_deviation": float(deviation[0]), "first_deviation_small_lr": float(first_small),
        "small_lr": small_lr, "first_ratio_small_lr": float(small[1] / small[0]), "mean_gap": float(np.mean(1 - ratios)),
        "late_gap": float(1 - ratios[-1]),
        "X": X, "Y": Y, "w0": w0, "final": run.params, "maps": dl.end_to_end_maps(run, X),
    }


def _drift(excess, t_late):
    """|gap(t_late) − gap(t_late − k)| / gap(t_late), k = max(3, t_late/5)."""
    k = max(3, t_late // 5)
    if t_late - k < 1:
        return float("inf")
    gap = 1 - excess[t_late] / excess[t_late - 1]
    earlier = 1 - excess[t_late - k] / excess[t_late - k - 1]
    return float(abs(gap - earlier) / abs(gap))


def gd_run(cfg, depth, cond, ng):
    """GD with η = 0.5/λ_max(Θ_0/N), halved (at most 4 times) until η λ_max ≤ 1 at the final weights:
    then every mode contracts by |1 − ηλ| ≤ 1 − ηλ_min and the slowest is the λ_min mode."""
    X, Y, w0 = ng["X"], ng["Y"], ng["w0"]
    loss_star = ng["loss_star"]
    rank = int(cfg["out_dim"]) * int(cfg["in_dim"])
    cap = int(cfg["gd_max_steps"])
    spec0 = _ntk_spectrum(w0, X, rank)
    lr = 0.5 / spec0[-1]
    for halvings in range(5):
        steps = _gd_steps(spec0, lr, cap)
        losses, final = _gradient_descent(w0, X, Y, lr, steps)
        spec = _ntk_spectrum(final, X, rank)
        if lr * spec[-1] <= 1.0:
            break
        lr *= 0.5
    excess = losses - loss_star
    valid = _valid(excess, loss_star)
    t_late = int(np.nonzero(valid)[0][-1])
    steps = len(losses) - 1
    reference = dl.train(w0, X, Y, "gd", lr, min(steps, 20)).train_loss     # the package's own GD
    if np.max(np.abs(reference - losses[: len(reference)]) / reference) > 1e-12:
        raise RuntimeError("the lean GD loop differs from deep_linear.train(method='gd')")
    late_ratio = excess[t_late] / excess[t_late - 1]
    lam1, lam2 = spec[0], spec[1]
    contamination = float((spec[-1] / lam1) * ((1 - lr * lam2) / (1 - lr * lam1)) ** (2 * t_late)) \
        if lam2 > lam1 * (1 + 1e-9) else 0.0
    drift = _drift(excess, t_late)
    predicted_gap = 1 - (1 - lr * lam1) ** 2
    k_eig = np.linalg.eigvalsh(dl.end_to_end_operator(final, dl.input_covariance(X)))
    sample = np.unique(np.concatenate([np.geomspace(1, steps, 28).astype(int), [t_late - 1, t_late]]))
    rec = {
        "depth": depth, "cond": cond, "lr": lr, "lr_halvings": halvings, "steps": steps, "t_late": t_late,
        # the plotted samples (28 log-spaced steps) plus the two steps that give the late ratio
        "t": sample, "normalized_excess": excess[sample] / excess[0], "excess_0": float(excess[0]),
        "late_excess": [float(excess[t_late - 1]), float(excess[t_late])],
        "late_gap": float(1 - late_ratio), "predicted_gap": float(predicted_gap),
        "lambda_min": float(lam1), "lambda_2": float(lam2), "lambda_max": float(spec[-1]),
        "lambda_min_operator": float(k_eig[0]),   # same number from the closed-form 𝒦 (cross-check)
        "contamination": contamination, "drift": drift,
        "asymptotic": bool(contamination <= DOMINANCE and drift <= DRIFT and lr * spec[-1] <= 1.0),
        "rel_error": float(abs((1 - late_ratio) - predicted_gap) / predicted_gap),
    }
    if depth == 1:   # exact: E_t = E_0 (I − ηΣ_x)^t, loss − Loss* = ½ tr(E_t Σ_x E_tᵀ)
        cov = X.T @ X / X.shape[0]
        eig, vec = np.linalg.eigh(cov)
        error0 = (dl.end_to_end_map(w0) - np.linalg.lstsq(X, Y, rcond=None)[0].T) @ vec
        t = np.arange(steps + 1)[:, None]
        theory = 0.5 * np.sum(eig * (error0 ** 2).sum(0) * (1 - lr * eig) ** (2 * t), axis=1)
        control = 0.5 * np.sum(eig * (error0 ** 2).sum(0) * (1 - 0.9 * lr * eig) ** (2 * t), axis=1)
        line = np.unique(np.geomspace(1, steps, 200).astype(int))
        rec["theory_t"], rec["exact_theory_normalized"] = line, theory[line] / theory[0]
        above = valid & (excess > EXACT_FLOOR * excess[0])
        rec["exact_rel_error"] = float(np.max(np.abs(excess[above] - theory[above]) / theory[above]))
        rec["exact_rel_error_at_0.9_lr"] = float(np.max(np.abs(excess[above] - control[above]) / control[above]))
    return rec


def dense_record(label, weights, X, Y):
    """Closed-form Moore–Penrose and per-layer updates vs the dense pinv at ``weights``."""
    grad = dl.end_to_end_gradient(dl.end_to_end_map(weights), X, Y)
    cov = dl.input_covariance(X)
    closed = dl.natural_gradient(weights, grad, cov)
    paper = dl.paper_natural_gradient(weights, grad, cov)
    dense = dl.dense_natural_gradient(weights, X, Y)
    change_dense = dl.end_to_end_change(weights, dense)
    gradient = dl.gradient_direction(weights, grad)  # the negative control: a plain gradient step

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    flat = lambda ds: np.concatenate([d.ravel() for d in ds])  # noqa: E731
    return {
        "net": label, "depth": len(weights), "shapes": [list(w.shape) for w in weights],
        "end_to_end_error": rel(dl.end_to_end_change(weights, closed), change_dense),
        "per_layer_error": rel(flat(closed), flat(dense)),
        "paper_end_to_end_error": rel(dl.end_to_end_change(weights, paper), change_dense),
        "paper_per_layer_error": rel(flat(paper), flat(dense)),
        "gradient_end_to_end_error": rel(dl.end_to_end_change(weights, gradient) * (
            np.linalg.norm(change_dense) / np.linalg.norm(dl.end_to_end_change(weights, gradient))), change_dense),
        "norm_ratio": dl.parameter_norm(paper) / dl.parameter_norm(dense),
        "norm_paper": dl.parameter_norm(paper), "norm_moore_penrose": dl.parameter_norm(dense),
    }


__all__ = ["dense_record", "exact_run", "gd_run", "initial_weights", "problem_data"]
