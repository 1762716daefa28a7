"""`ntk-ngd simulate`: function-space trajectories (closed form or lax.scan) per method.

``--loss mse`` (default): residual dynamics r_t = (I − lr Θ_G)^t r_0 (THEORY.md claim 8).
``--loss cross_entropy``: softmax logit dynamics f_{t+1} = f_t − lr Θ_G(f_t) g(f_t) for the methods of
:data:`ntk_ngd.cross_entropy.METHODS` (THEORY.md "Cross-entropy NGD in function space"); class labels
are the argmax of the one-hot targets (digits with --classes >= 3) or the sign of a single ±1 / real
target column (2 classes).
"""
from __future__ import annotations

import numpy as np

from .. import cross_entropy as ce
from ..cli import emit
from ..dynamics import simulate
from ..networks import mlp
from ._common import progress_bar
from ._problem import (RUNNABLE, add_problem_arguments, build_problem, format_summary, is_infinite_width,
                       selected_methods, summary_line)

LOSSES = ("mse", "cross_entropy")


def register(sub) -> None:
    p = sub.add_parser("simulate", help="function-space dynamics of each method (infinite or linearised width)",
                       description="Simulate r_t = (I - lr Θ_G)^t r_0 for each method (THEORY.md claim 8); "
                       "--width inf uses neural-tangents' infinite-width kernels, a number linearises the "
                       "network at its initial parameters. --loss cross_entropy runs softmax logit dynamics "
                       f"(methods: {', '.join(ce.METHODS)}).")
    add_problem_arguments(p, width_default="inf")
    p.add_argument("--time", choices=("discrete", "continuous"), default="discrete")
    p.add_argument("--loss", choices=LOSSES, default="mse",
                   help="mse (default) or cross_entropy (softmax over the outputs; digits: --classes)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.loss == "cross_entropy":
        return _run_cross_entropy(args)
    # the diagonal Fisher needs individual units: no infinite-width form
    supported = tuple(m for m in RUNNABLE if not (m == "diag" and is_infinite_width(args)))
    names = selected_methods(args, supported, "simulate --width inf" if is_infinite_width(args) else "simulate")
    net, params, X, Y, X_test = build_problem(args, allow_infinite=True)
    rows, curves = [], {}
    with progress_bar(len(names), "simulate", args.json) as bar:
        for m in names:
            time = args.time if m not in ("ef", "ief", "sf") else "discrete"
            res = simulate(net, X, Y, m, params=params, lr=args.lr, steps=args.steps, X_test=X_test,
                           damping=args.damping, time=time, seed=args.seed, samples=max(1, net.out_dim))
            rows.append(summary_line(m, res.train_loss, res.lr, res.lr_rule, res.diverged_at))
            curves[m] = res.train_loss.tolist()
            bar.update(1)
    emit(args, {"summary": rows, "train_loss": curves}, format_summary(rows))
    return 0


def _ce_methods(args) -> tuple[str, ...]:
    chosen = args.method or ["all"]
    if "all" in chosen:
        return ce.METHODS
    for m in chosen:
        ce.check_method(m)
    return tuple(chosen)


def labels_from_targets(Y) -> tuple[np.ndarray, int]:
    """(class indices, C): argmax of a multi-column target, sign of a single column (C = 2)."""
    Y = np.asarray(Y)
    if Y.shape[1] == 1:
        return (Y[:, 0] > 0).astype(int), 2
    return np.argmax(Y, axis=1), Y.shape[1]


def _run_cross_entropy(args) -> int:
    if args.time != "discrete":
        raise ValueError("--loss cross_entropy has no closed form in time: use --time discrete")
    names = _ce_methods(args)
    net, params, X, Y, X_test = build_problem(args, allow_infinite=True)
    labels, classes = labels_from_targets(Y)
    if net.out_dim != classes:  # one logit per class
        net = mlp(depth=net.depth, width=list(net.hidden), in_dim=net.in_dim, out_dim=classes,
                  activation=net.activation)
        params = None if params is None else net.init(args.seed)
    rows, curves, accuracy = [], {}, {}
    with progress_bar(len(names), "simulate", args.json) as bar:
        for m in names:
            res = ce.simulate(net, X, labels, m, params=params, lr=args.lr, steps=args.steps, X_test=X_test,
                              damping=args.damping)
            row = summary_line(m, res.train_loss, res.lr, res.lr_rule, res.diverged_at)
            row["final_accuracy"] = float(res.train_accuracy[-1])
            rows.append(row)
            curves[m] = res.train_loss.tolist()
            accuracy[m] = res.train_accuracy.tolist()
            bar.update(1)
    text = format_summary(rows) + "\n" + "  ".join(f"{r['method']}: acc {r['final_accuracy']:.3f}" for r in rows)
    emit(args, {"loss": "cross_entropy", "classes": classes, "summary": rows, "train_loss": curves,
                "train_accuracy": accuracy}, text)
    return 0
