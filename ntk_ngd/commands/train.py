"""`ntk-ngd train`: real parameter-space training of a finite network with each preconditioner."""
from __future__ import annotations

from ..cli import emit
from ..diagnostics import predict
from ..training import METHODS as TRAINING_METHODS, train
from ._common import progress_bar
from ._problem import add_problem_arguments, build_problem, format_summary, selected_methods, summary_line

#: What `train --method all` runs: the preconditioners training.py implements ('pattern' needs a matrix).
TRAINABLE = tuple(m for m in TRAINING_METHODS if m != "pattern")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a finite network with each preconditioner (parameter space)",
                       description="Full-batch training of the (nonlinear) network with Δθ = -lr (G + ρI)^-1 ∇Loss "
                       "for each method, computed from N-sized Grams (no P×P matrix). Without --lr, isotropic "
                       "methods use 1/alpha (theory at the initial parameters) and the others the function-space "
                       "rule of `simulate` (gd: 1/lambda_max, ef: min r^2, sf: 1).")
    add_problem_arguments(p, width_default="512")
    p.set_defaults(func=run)


def _default_lr(net, params, X, Y, method, damping):
    """(lr, rule) when --lr is absent."""
    if method in ("gd", "ef", "sf", "unit_wise"):
        from ..dynamics import simulate  # the function-space rule at the initial parameters

        res = simulate(net, X, Y, method, params=params, steps=0, damping=damping)
        return res.lr, res.lr_rule
    residual = net.apply(params, X) - Y
    pred = predict(net, X, method, params=params, damping=damping, residual=residual)
    if not pred.isotropic:
        raise ValueError(f"{pred.summary()}: pass --lr for this method")
    return 1.0 / pred.alpha, "1/alpha"


def run(args) -> int:
    names = selected_methods(args, TRAINABLE, "train")
    net, params, X, Y, X_test = build_problem(args, allow_infinite=False)
    rows, curves = [], {}
    with progress_bar(len(names) * args.steps, "train", args.json) as bar:
        for m in names:
            lr, rule = (args.lr, "given") if args.lr is not None else _default_lr(net, params, X, Y, m, args.damping)
            res = train(net, params, X, Y, m, lr=lr, steps=args.steps, damping=args.damping, X_test=X_test,
                        **({"seed": args.seed} if m == "sf" else {}))
            rows.append(summary_line(m, res.train_loss[: res.steps_run + 1], res.lr, rule, res.diverged_at))
            curves[m] = res.train_loss.tolist()
            bar.update(args.steps)
    emit(args, {"summary": rows, "train_loss": curves}, format_summary(rows))
    return 0
