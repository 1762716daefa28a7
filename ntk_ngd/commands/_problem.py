"""The options shared by `ntk-ngd simulate` and `ntk-ngd train`: data, network, methods."""
from __future__ import annotations

import numpy as np

from .. import datasets, methods
from ..networks import mlp

#: Methods `simulate`/`train` run for `--method all` ('pattern' needs a pattern matrix).
RUNNABLE = tuple(m for m in methods.METHODS if m != "pattern")


def add_problem_arguments(p, width_default: str) -> None:
    p.add_argument("--method", action="append", metavar="NAME",
                   help=f"repeatable, or 'all' (default: all); valid: {', '.join(RUNNABLE)}")
    p.add_argument("--dataset", choices=("synthetic", "digits"), default="synthetic")
    p.add_argument("--n", type=int, default=32, help="training points N (default 32)")
    p.add_argument("--n-test", type=int, default=0, help="held-out points (default 0)")
    p.add_argument("--in-dim", type=int, default=64, help="input dimension for synthetic data (default 64)")
    p.add_argument("--classes", type=int, default=2, help="digit classes for --dataset digits (2: ±1 target)")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", default=width_default, help=f"hidden width (default {width_default})")
    p.add_argument("--activation", default="relu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=None, help="step size (default: the method's rule, e.g. 1/alpha)")
    p.add_argument("--damping", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of the summary")


def selected_methods(args, supported: tuple[str, ...] = RUNNABLE, command: str = "simulate") -> tuple[str, ...]:
    """The --method choices; 'all' means every method in ``supported``."""
    chosen = args.method or ["all"]
    if "all" in chosen:
        return supported
    for m in chosen:
        methods.get(m)
        if m not in supported and m != "pattern":
            raise ValueError(f"method {m!r} is not available to `ntk-ngd {command}` here; choose from: "
                             f"{', '.join(supported)}")
    return tuple(chosen)


def is_infinite_width(args) -> bool:
    return str(args.width).lower() in ("inf", "infinite")


def build_problem(args, allow_infinite: bool):
    """(net, params or None, X, Y, X_test or None) from the parsed options."""
    infinite = is_infinite_width(args)
    if infinite and not allow_infinite:
        raise ValueError("--width inf is not trainable: give a finite hidden width")
    n_total = args.n + args.n_test
    if args.dataset == "digits":
        X, Y = datasets.digits(n_total, classes=args.classes, seed=args.seed,
                               targets="pm1" if args.classes == 2 else "onehot")
    else:
        X, Y = datasets.synthetic(n_total, args.in_dim, seed=args.seed)
    try:
        hidden = 1024 if infinite else int(args.width)
    except ValueError:
        raise ValueError(f"--width must be an integer or 'inf', got {args.width!r}") from None
    net = mlp(depth=args.depth, width=hidden, in_dim=X.shape[1], out_dim=Y.shape[1], activation=args.activation)
    params = None if infinite else net.init(args.seed)
    X_test = X[args.n:] if args.n_test else None
    return net, params, X[: args.n], Y[: args.n], X_test


def summary_line(method, loss, lr, rule, diverged_at=None) -> dict:
    loss = np.asarray(loss)
    hit = np.flatnonzero(loss <= 1e-6 * loss[0])
    return {
        "method": method,
        "initial_loss": float(loss[0]),
        "final_loss": float(loss[-1]),
        "steps_to_1e-6": int(hit[0]) if hit.size else None,
        "lr": float(lr),
        "lr_rule": rule,
        "diverged_at": diverged_at,
    }


def format_summary(rows) -> str:
    lines = [f"{'method':<14}{'lr':>11}  {'rule':<20}{'final loss':>12}  steps to 1e-6 of initial"]
    for r in rows:
        steps = "never" if r["steps_to_1e-6"] is None else str(r["steps_to_1e-6"])
        if r.get("diverged_at") is not None:
            steps += f" (diverged at {r['diverged_at']})"
        lines.append(f"{r['method']:<14}{r['lr']:>11.4g}  {r['lr_rule']:<20}{r['final_loss']:>12.3e}  {steps}")
    return "\n".join(lines)
