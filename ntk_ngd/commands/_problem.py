"""The options shared by `ntk-ngd simulate` and `ntk-ngd train`: data, network, loss, methods."""
from __future__ import annotations

import sys

import numpy as np

from .. import budget as _budget, datasets, losses, methods
from .. import progress as _progress
from ..methods._cost import Size
from ..networks import mlp
from ._common import add_progress_flag, emit

DATASETS = ("synthetic", "digits", "mnist")


def add_problem_arguments(p, width_default: str) -> None:
    p.add_argument("--method", action="append", metavar="NAME",
                   help=f"repeatable, or 'all' (default: all); valid: {', '.join(methods.METHODS)}")
    p.add_argument("--dataset", choices=DATASETS, default="synthetic")
    p.add_argument("--loss", choices=tuple(losses.LOSSES), default="mse",
                   help="mse (default) or cross_entropy (softmax over the outputs; labels = argmax of one-hot "
                   "targets, or the sign of a single ±1 column)")
    p.add_argument("--n", type=int, default=32, help="training points N (default 32)")
    p.add_argument("--n-test", type=int, default=0, help="held-out points (default 0)")
    p.add_argument("--in-dim", type=int, default=64, help="input dimension for synthetic data (default 64)")
    p.add_argument("--classes", type=int, default=2, help="digit classes for digits/mnist (2: ±1 target with mse)")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", default=width_default, help=f"hidden width (default {width_default})")
    p.add_argument("--activation", default="relu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=None, help="step size (default: the method's rule, e.g. 1/alpha)")
    p.add_argument("--damping", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of the summary")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="skip every method whose estimated time (from its declared complexity at this size) exceeds "
                   f"SECONDS; 0: no limit (default: {_budget.DEFAULT_BUDGET_S:g} s per method with --method all, "
                   "no limit for methods named with --method)")
    p.add_argument("--force", action="store_true", help="run every method whatever its estimate (= --budget 0)")
    add_progress_flag(p)


def budget_of(args) -> float | None:
    """The per-method budget in seconds (None: no limit): --force, --budget, or the default for --method all."""
    if args.force or args.budget == 0:
        return None
    if args.budget is not None:
        if args.budget < 0:
            raise ValueError(f"--budget must be >= 0 seconds (0: no limit), got {args.budget:g}")
        return args.budget
    return _budget.DEFAULT_BUDGET_S if "all" in (args.method or ["all"]) else None


def problem_size(args, net, infinite: bool = False) -> Size:
    """The :class:`~ntk_ngd.methods._cost.Size` of the run (N, whitened rows per sample, layer widths)."""
    return Size.of(net, args.n, losses.get(args.loss).rows(net.out_dim), infinite=infinite)


def selected_methods(args, infinite: bool = False) -> tuple[str, ...]:
    """The --method choices; 'all' means every registered method (those without an infinite-width limit
    are left out at --width inf)."""
    chosen = args.method or ["all"]
    if "all" in chosen:
        return tuple(m.name for m in methods.registered() if not (infinite and m.finite_width_only))
    for m in chosen:
        spec = methods.get(m)
        if infinite and spec.finite_width_only:
            raise ValueError(f"{spec.finite_width_only} (or drop --width inf)")
    return tuple(chosen)


def method_options(name: str, args) -> dict:
    """The registered example options (pattern: bandwidth 1) and the run's seed for random methods."""
    spec = methods.get(name)
    opts = dict(spec.example_options)
    if "seed" in spec.option_names:
        opts["seed"] = args.seed
    return opts


def is_infinite_width(args) -> bool:
    return str(args.width).lower() in ("inf", "infinite")


def build_problem(args, allow_infinite: bool):
    """(net, params or None, X, Y, X_test, Y_test) from the parsed options; Y are class labels for cross-entropy."""
    infinite = is_infinite_width(args)
    if infinite and not allow_infinite:
        raise ValueError("--width inf is not trainable: give a finite hidden width")
    n_total = args.n + args.n_test
    cross_entropy = args.loss == "cross_entropy"
    if args.dataset in ("digits", "mnist"):
        load = datasets.digits if args.dataset == "digits" else datasets.mnist
        X, Y = load(n_total, classes=args.classes, seed=args.seed,
                    targets="pm1" if args.classes == 2 and not cross_entropy else "onehot")
    else:
        X, Y = datasets.synthetic(n_total, args.in_dim, out_dim=args.classes if cross_entropy else 1, seed=args.seed)
    if cross_entropy:
        Y = np.argmax(Y, axis=1) if Y.shape[1] > 1 else (Y[:, 0] > 0).astype(int)
    try:
        hidden = 1024 if infinite else int(args.width)
    except ValueError:
        raise ValueError(f"--width must be an integer or 'inf', got {args.width!r}") from None
    out_dim = max(2, int(np.max(Y)) + 1, args.classes) if cross_entropy else Y.shape[1]
    net = mlp(depth=args.depth, width=hidden, in_dim=X.shape[1], out_dim=out_dim, activation=args.activation)
    params = None if infinite else net.init(args.seed)
    test = slice(args.n, None) if args.n_test else None
    return (net, params, X[: args.n], Y[: args.n], None if test is None else X[test],
            None if test is None else Y[test])


def summary_line(traj) -> dict:
    """One method's summary from its :class:`~ntk_ngd.trajectory.Trajectory`."""
    loss = np.asarray(traj.train_loss[: traj.steps_run + 1])
    hit = np.flatnonzero(loss <= 1e-6 * loss[0])
    row = {
        "method": traj.method,
        "initial_loss": float(loss[0]),
        "final_loss": float(loss[-1]),
        "steps_to_1e-6": int(hit[0]) if hit.size else None,
        "lr": float(traj.lr),
        "lr_rule": traj.lr_rule,
        "diverged_at": traj.diverged_at,
        "monotone": traj.monotone,
        "spectral_radius": traj.spectral_radius,
        "step_norm_first": traj.step_norm_first,
        "step_norm_max": traj.step_norm_max,
    }
    if traj.loss == "cross_entropy":
        row["final_accuracy"] = float(traj.train_accuracy[traj.steps_run])
    return row


def format_summary(rows) -> str:
    """The summary table: loss, steps to 1e-6, the relative parameter step ||Δθ||/||θ|| (first / max; real training
    only: "left the lazy regime" as a number) and the step rule with its reason, last."""
    lines = [f"{'method':<14}{'lr':>11}{'final loss':>12}  {'to 1e-6':<8}{'|dθ|/|θ| 1st/max':>18}  rule"]
    for r in rows:
        steps = "never" if r["steps_to_1e-6"] is None else str(r["steps_to_1e-6"])
        notes = []
        if r.get("diverged_at") is not None:
            notes.append(f"diverged at {r['diverged_at']}")
        elif not r.get("monotone", True):
            notes.append("loss not monotone")
        if "final_accuracy" in r:
            notes.append(f"accuracy {r['final_accuracy']:.3f}")
        norms = "-" if r.get("step_norm_first") is None else f"{r['step_norm_first']:.2g} / {r['step_norm_max']:.2g}"
        tail = f"  [{'; '.join(notes)}]" if notes else ""
        lines.append(f"{r['method']:<14}{r['lr']:>11.4g}{r['final_loss']:>12.3e}  {steps:<8}{norms:>18}  "
                     f"{r['lr_rule']}{tail}")
    return "\n".join(lines)


def run_methods(args, names, run_one, label: str, estimate=None) -> int:
    """Run ``run_one(name) -> Trajectory`` for each method, one progress line per finished method
    (:mod:`ntk_ngd.progress`), and print the summary. ``estimate(name) -> seconds``: methods over the budget
    (:func:`budget_of`) are skipped with one line each and listed under the table and in the JSON."""
    limit = budget_of(args)
    estimates = {m: (estimate(m) if estimate is not None else 0.0) for m in names}
    names, skipped = _budget.split(estimates, limit)
    progress = _progress.from_args(args, label, len(names))
    for s in skipped:  # what changes the result is said even off a terminal (stderr; not under --json)
        if progress.enabled or not args.json:
            print(f"[{label}] {s.line()}", file=sys.stderr, flush=True)
    if estimate is not None:
        progress.note(f"{len(names)} method(s), estimated {sum(estimates[m] for m in names):.0f} s in total "
                      f"{_budget.load_note()}")
    rows, curves = [], {}
    progress.start()
    for m in names:
        traj = run_one(m)
        row = summary_line(traj)
        rows.append(row)
        curves[m] = traj.train_loss.tolist()
        progress.done(m, f"estimated {estimates[m]:.2g} s; final loss {row['final_loss']:.3e}" if estimate
                      else f"final loss {row['final_loss']:.3e}")
    payload = {"loss": args.loss, "summary": rows, "train_loss": curves, "budget_s": limit,
               "skipped": [s.as_dict() for s in skipped]}
    emit(args, payload, format_summary(rows) + format_skipped(skipped))
    return 0


def format_skipped(skipped) -> str:
    """The line under the table naming the skipped methods (empty when none was)."""
    if not skipped:
        return ""
    names = ", ".join(f"{s.method} (~{s.estimate_s:.2g} s)" for s in skipped)
    return f"\nskipped, estimated over the {skipped[0].budget_s:g} s budget (--force runs them): {names}"
