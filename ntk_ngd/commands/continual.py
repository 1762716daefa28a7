"""`ntk-ngd continual`: a task sequence (permuted or rotated digits/MNIST) learned by each method × projection,
in closed form in function space (infinite width, or linearised at a finite width) or by real training; a table
of average accuracy and forgetting (docs/THEORY.md "Continual learning in function space")."""
from __future__ import annotations

import numpy as np

from .. import methods
from ..continual import PROJECTIONS, permuted_tasks, rotated_tasks, sequential, train_sequential
from ..continual.projections import check_method, get as get_projection, supports
from ..damping import Damping
from ..networks import mlp
from .. import progress as _progress
from ._common import add_progress_flag, emit
from ._problem import is_infinite_width


def register(sub) -> None:
    p = sub.add_parser("continual", help="continual learning: average accuracy and forgetting per method x projection",
                       description="Learn a sequence of permuted or rotated digit (or MNIST) tasks with each method and "
                       f"projection ({', '.join(PROJECTIONS)}) and print the "
                       "average accuracy and forgetting (CONTINUAL.md). --width inf (default): closed form at "
                       "infinite width; --width M: the network linearised at init; add --train for real training. "
                       "--projection all (default) runs the projections each method defines (ong_old_factors: the methods "
                       "whose metric declares the previous task's metric).")
    p.add_argument("--tasks", choices=("permuted", "rotated"), default="rotated")
    p.add_argument("--n-tasks", type=int, default=5, help="number of tasks T (default 5)")
    p.add_argument("--n", type=int, default=40, help="samples per task (default 40)")
    p.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    p.add_argument("--classes", type=int, default=10, help="digit classes (default 10)")
    p.add_argument("--loss", choices=("mse", "cross_entropy"), default="mse",
                   help="mse on one-hot targets (default) or softmax cross-entropy on the class labels")
    p.add_argument("--max-angle", type=float, default=None, help="rotated: angle of the last task (default 10 per task)")
    p.add_argument("--method", action="append", metavar="NAME",
                   help=f"repeatable, or 'all' (default: exact); valid: {', '.join(methods.METHODS)}")
    p.add_argument("--projection", action="append", metavar="NAME",
                   help=f"repeatable, or 'all' (default: all); valid: {', '.join(PROJECTIONS)}")
    p.add_argument("--width", default="inf", help="hidden width, or 'inf' (default)")
    p.add_argument("--train", action="store_true", help="real parameter-space training (needs a finite --width)")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--activation", default="relu")
    p.add_argument("--steps", type=int, default=20, help="steps per task (default 20)")
    p.add_argument("--lr", type=float, default=None,
                   help="step size (default: 1/lambda_max of the method's kernel on task 0, stable for every mode)")
    p.add_argument("--memory", type=int, default=None, help="stored samples per old task (default: all)")
    p.add_argument("--damping", type=float, default=1e-3, help="rho (default 1e-3; > 0 for ong and its variants)")
    p.add_argument("--basis-damping", type=float, default=None, help="ong_stale's basis damping (default 10 rho)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    add_progress_flag(p)
    p.set_defaults(func=run)


def _choices(given, every, default, kind):
    chosen = given or default
    if "all" in chosen:
        return tuple(every)
    unknown = [c for c in chosen if c not in every]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown[0]!r}; choose from: {', '.join(every)} or all")
    return tuple(dict.fromkeys(chosen))


def _tasks(args):
    if args.tasks == "permuted":
        tasks = permuted_tasks(args.n_tasks, args.n, dataset=args.dataset, seed=args.seed, classes=args.classes)
    else:
        tasks = rotated_tasks(args.n_tasks, args.n, dataset=args.dataset, max_angle=args.max_angle, seed=args.seed,
                              classes=args.classes)
    return tasks if args.loss == "mse" else [(X, np.argmax(Y, axis=1)) for X, Y in tasks]  # one-hot → labels


def _stable_lr(net, X, Y, method, params, damping, loss="mse") -> float:
    from ..function_space import method_kernels

    f0 = np.zeros((X.shape[0], net.out_dim)) if params is None else np.asarray(net.apply(params, X))
    given = dict(residual=f0 - Y) if loss == "mse" else dict(loss=loss, targets=Y, outputs=f0)
    K = np.asarray(method_kernels(net, X, method, params=params, damping=damping, **given,
                                  **dict(methods.get(method).example_options)).train)
    return 1.0 / float(np.linalg.eigvalsh(0.5 * (K + K.T))[-1])


def run(args) -> int:
    names = _choices(args.method, methods.METHODS, ["exact"], "method")
    projs = _choices(args.projection, PROJECTIONS, ["all"], "projection")
    every = "all" in (args.projection or ["all"])  # all: each method's own projections (an explicit one must exist)
    infinite = is_infinite_width(args)
    if args.train and infinite:
        raise ValueError("--train needs a finite --width")
    try:
        width = 1024 if infinite else int(args.width)
    except ValueError:
        raise ValueError(f"--width must be an integer or 'inf', got {args.width!r}") from None
    tasks = _tasks(args)
    net = mlp(depth=args.depth, width=width, in_dim=tasks[0][0].shape[1], out_dim=args.classes,
              activation=args.activation)
    params = None if infinite else net.init(args.seed)
    rows = []
    total = sum(len([p for p in projs if not every or supports(methods.get(m), p)]) for m in names)
    progress = _progress.from_args(args, "continual", total)
    for m in names:
        spec = methods.get(m)
        if spec.finite_width_only and infinite:
            raise ValueError(f"{spec.finite_width_only} (or drop --width inf)")
        mine = [p for p in projs if supports(spec, p)] if every else projs
        for p in mine:  # every impossible combination fails before any work
            check_method(spec, get_projection(p), Damping.of(args.damping))
        lr = args.lr if args.lr is not None else _stable_lr(net, *tasks[0], m, params, args.damping, args.loss)
        for p in mine:
            kw = dict(lr=lr, steps=args.steps, memory=args.memory, damping=args.damping,
                      basis_damping=args.basis_damping, loss=args.loss, **dict(spec.example_options))
            run_ = (train_sequential(net, params, tasks, m, p, **kw) if args.train
                    else sequential(net, tasks, m, p, params=params, **kw))
            rows.append(run_.summary() | {"accuracy": np.asarray(run_.accuracy).tolist()})
            progress.done(f"{m} × {p}", f"average accuracy {rows[-1]['average_accuracy']:.3f}")
    regime = rows[0]["regime"] if rows else ""
    emit(args, {"tasks": args.tasks, "n_tasks": args.n_tasks, "n": args.n, "regime": regime, "rows": rows},
         _table(rows, regime, args))
    return 0


def _table(rows, regime, args) -> str:
    lines = [f"{args.tasks} {args.dataset}, T = {args.n_tasks}, N = {args.n} per task, {args.loss}, {regime}, "
             f"{args.steps} steps per task, damping {args.damping:g}",
             f"{'method':<12}{'projection':<19}{'avg acc':>8}{'avg forg':>10}{'loss forg':>11}{'final loss':>12}"
             f"{'lr':>10}"]
    for r in rows:
        tail = "" if r["diverged_at"] is None else f"  diverged (task {r['diverged_at']})"
        lines.append(f"{r['method']:<12}{r['projection']:<19}{r['average_accuracy']:>8.3f}{r['average_forgetting']:>10.3f}"
                     f"{r['average_loss_forgetting']:>11.2e}{r['final_loss']:>12.3e}{r['lr']:>10.3g}{tail}")
    return "\n".join(lines)
