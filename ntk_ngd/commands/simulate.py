"""`ntk-ngd simulate`: function-space trajectories (closed form or lax.scan) per method."""
from __future__ import annotations

from ..cli import emit
from ..dynamics import simulate
from ._common import progress_bar
from ._problem import add_problem_arguments, build_problem, format_summary, selected_methods, summary_line


def register(sub) -> None:
    p = sub.add_parser("simulate", help="function-space dynamics of each method (infinite or linearised width)",
                       description="Simulate r_t = (I - lr Θ_G)^t r_0 for each method (THEORY.md claim 8); "
                       "--width inf uses neural-tangents' infinite-width kernels, a number linearises the "
                       "network at its initial parameters.")
    add_problem_arguments(p, width_default="inf")
    p.add_argument("--time", choices=("discrete", "continuous"), default="discrete")
    p.set_defaults(func=run)


def run(args) -> int:
    names = selected_methods(args)
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
