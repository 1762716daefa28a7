"""`ntk-ngd isotropy`: measured vs theoretical alpha for every method × depth × width."""
from __future__ import annotations

from .. import methods
from ..cli import emit
from ..isotropy_table import DEFAULT_METHODS, agreement, format_table, isotropy_rows
from ._common import int_list, progress_bar, width_list


def register(sub) -> None:
    p = sub.add_parser("isotropy", help="isotropy table: alpha and deviation per method, depth and width",
                       description="Compute Θ_G(X, X) for each method and compare its alpha and deviation "
                       "with theory (THEORY.md claims 1-7), naming the condition that fails.")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma list or 'all' (valid: {', '.join(methods.METHODS)})")
    p.add_argument("--depths", default="1,2,3,4,5", help="comma list or range like 1-8 (default 1,2,3,4,5)")
    p.add_argument("--widths", default="256,inf", help="comma list of hidden widths; 'inf' = infinite width")
    p.add_argument("--n", type=int, default=16, help="training points N (default 16)")
    p.add_argument("--in-dim", type=int, default=32, help="input dimension D (default 32; D+1 < N breaks K-FAC)")
    p.add_argument("--activation", default="relu")
    p.add_argument("--damping", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", choices=("mse", "cross_entropy"), default="mse",
                   help="cross_entropy: isotropy of the whitened softmax operator RΘ_GRᵀ (methods gd, exact, "
                   "block_diag, kfac, ef, ief; default methods: all six)")
    p.add_argument("--classes", type=int, default=3, help="classes C for --loss cross_entropy (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.loss == "cross_entropy":
        return _run_cross_entropy(args)
    names = methods.METHODS if args.methods == "all" else tuple(m.strip() for m in args.methods.split(",") if m.strip())
    names = tuple(m for m in names if m != "pattern") if args.methods == "all" else names
    for m in names:
        methods.get(m)
    depths = int_list("--depths", args.depths)
    widths = width_list(args.widths)
    with progress_bar(len(depths) * len(widths) * len(names), "isotropy", args.json) as bar:
        rows = isotropy_rows(depths, widths, names, n=args.n, in_dim=args.in_dim, activation=args.activation,
                             seed=args.seed, damping=args.damping, progress=bar)
    emit(args, {"rows": rows, "agreement": agreement(rows)}, format_table(rows))
    return 0


def _run_cross_entropy(args) -> int:
    from .. import cross_entropy as ce
    from ..cross_entropy.isotropy import isotropy_rows as ce_rows

    default = args.methods == ",".join(DEFAULT_METHODS)
    names = ce.METHODS if default or args.methods == "all" else tuple(
        m.strip() for m in args.methods.split(",") if m.strip())
    for m in names:
        ce.check_method(m)
    if args.classes < 2:
        raise ValueError(f"--classes must be >= 2 for cross_entropy, got {args.classes}")
    depths = int_list("--depths", args.depths)
    widths = width_list(args.widths)
    with progress_bar(len(depths) * len(widths) * len(names), "isotropy", args.json) as bar:
        rows = ce_rows(depths, widths, names, n=args.n, in_dim=args.in_dim, classes=args.classes,
                       activation=args.activation, seed=args.seed, damping=args.damping, progress=bar)
    emit(args, {"loss": "cross_entropy", "rows": rows, "agreement": agreement(rows)}, format_table(rows))
    return 0
