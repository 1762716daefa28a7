"""`ntk-ngd deep-linear`: exact natural gradient in a deep linear network (THEORY.md claim 9).

Trains f(x) = W_L⋯W_1 x on a least-squares problem whose input covariance has eigenvalue
spread ``--cond`` with the Moore–Penrose natural gradient, and prints the measured loss next
to the closed-form prediction Loss* + (1 − η)^{2t}(Loss_0 − Loss*), which does not depend on
the conditioning. Plain gradient descent (step min(lr, 1/λ_max of the Fisher at init)) is
shown for contrast.
"""
from __future__ import annotations

import numpy as np

from .. import deep_linear as dl
from .._validate import nonnegative, positive_int
from ._common import emit


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "deep-linear",
        help="exact natural gradient in deep linear networks vs its closed-form loss curve",
        description=__doc__,
    )
    parser.add_argument("--depth", type=int, default=3, help="number of weight layers L (>= 1)")
    parser.add_argument("--widths", type=str, default=None,
                        help="hidden widths M_1,...,M_{L-1} as a comma list "
                             "(default: max(in-dim, out-dim) for every hidden layer)")
    parser.add_argument("--in-dim", type=int, default=3, help="input dimension D")
    parser.add_argument("--out-dim", type=int, default=3, help="output dimension C")
    parser.add_argument("--n", type=int, default=20, help="number of samples N (>= in-dim)")
    parser.add_argument("--cond", type=float, default=1.0,
                        help="eigenvalue spread of the input covariance (>= 1, e.g. 1..1e6)")
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--lr", type=float, default=0.01, help="step size eta (0 < eta <= 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for data and weights")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def parse_widths(text: str | None, depth: int, in_dim: int, out_dim: int) -> list[int]:
    """Hidden widths from ``--widths``; exactly depth − 1 positive integers."""
    if text is None:
        return [max(in_dim, out_dim)] * (depth - 1)
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        widths = [int(item) for item in items]
    except ValueError:
        raise ValueError(f"--widths must be a comma list of integers, got {text!r}") from None
    if len(widths) != depth - 1:
        raise ValueError(f"--widths needs depth - 1 = {depth - 1} entries, got {len(widths)}")
    return [positive_int("--widths entry", w) for w in widths]


def _check_args(args) -> tuple[int, list[int], float]:
    depth = positive_int("--depth", args.depth)
    in_dim, out_dim = positive_int("--in-dim", args.in_dim), positive_int("--out-dim", args.out_dim)
    positive_int("--steps", args.steps, minimum=0)
    lr = nonnegative("--lr", args.lr)
    if not 0 < lr <= 1:
        raise ValueError(f"--lr must be in (0, 1], got {args.lr}")
    return depth, parse_widths(args.widths, depth, in_dim, out_dim), lr


def _gd_step_size(weights, X, lr: float) -> float:
    """min(lr, 1/λ_max(𝒦)): 𝒦 shares its nonzero spectrum with the Fisher, so this is stable."""
    top = np.linalg.eigvalsh(dl.end_to_end_operator(weights, dl.input_covariance(X)))[-1]
    return float(min(lr, 1.0 / top))


def _max_relative_deviation(measured, predicted, floor: float) -> float:
    return float(np.max(np.abs(measured - predicted) / np.maximum(np.abs(predicted), floor)))


def run(args) -> int:
    depth, widths, lr = _check_args(args)
    X, Y = dl.make_regression(args.in_dim, args.out_dim, args.n, args.cond, args.seed, noise=0.1)
    weights = dl.random_weights(args.in_dim, widths, args.out_dim, seed=args.seed + 1)
    exact = dl.train(weights, X, Y, "exact", lr, args.steps)
    predicted = dl.predicted_loss(weights, X, Y, lr, args.steps, "first_order")
    gd_lr = _gd_step_size(weights, X, lr)
    gd = dl.train(weights, X, Y, "gd", gd_lr, args.steps)
    loss_star = dl.mse_loss(dl.least_squares_map(X, Y), X, Y)
    excess_floor = 1e-12 * max(exact.train_loss[0], 1.0)
    agreement = _max_relative_deviation(exact.train_loss - loss_star, predicted - loss_star, excess_floor)
    payload = {
        "depth": depth, "widths": widths, "in_dim": args.in_dim, "out_dim": args.out_dim,
        "n": args.n, "cond": args.cond, "lr": lr, "gd_lr": gd_lr, "steps": args.steps,
        "seed": args.seed, "loss_star": loss_star,
        "loss_exact": exact.train_loss.tolist(), "loss_predicted": predicted.tolist(),
        "loss_gd": gd.train_loss.tolist(),
        "max_rel_deviation": agreement,
        "reachable": dl.end_to_end_reachable(weights, dl.input_covariance(X)),
    }
    rows = [f"{t:>5d} {a:>14.6e} {b:>14.6e} {c:>14.6e}"
            for t, (a, b, c) in enumerate(zip(exact.train_loss, predicted, gd.train_loss))]
    text = "\n".join([
        f"deep linear net: depth {depth}, widths {widths}, D={args.in_dim}, C={args.out_dim}, "
        f"N={args.n}, cond(Σ_x)={args.cond:g}, lr={lr:g} (gd lr={gd_lr:.3g})",
        f"{'step':>5} {'loss exact':>14} {'predicted':>14} {'loss gd':>14}",
        *rows,
        f"Loss* = {loss_star:.6e}; max relative deviation of the excess loss "
        f"(exact vs (1-lr)^(2t)): {agreement:.3e}",
    ])
    emit(args, payload, text)
    return 0
