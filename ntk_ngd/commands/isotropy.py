"""`ntk-ngd isotropy`: measured vs theoretical alpha for every method × depth × width, either loss."""
from __future__ import annotations

from .. import losses, methods
from ..isotropy_table import agreement, default_methods, format_table, isotropy_rows
from .. import progress as _progress
from ._common import add_progress_flag, emit, int_list, width_list


def register(sub) -> None:
    p = sub.add_parser("isotropy", help="isotropy table: alpha and deviation per method, depth and width",
                       description="Compute Θ_G(X, X) for each method and compare its alpha and deviation "
                       "with theory (THEORY.md claims 1-7), naming the condition that fails. With --loss "
                       "cross_entropy the operator is the whitened softmax metric RΘ_GRᵀ.")
    p.add_argument("--methods", default="default",
                   help=f"comma list, 'all' or 'default' (every non-random method: {', '.join(default_methods())})")
    p.add_argument("--depths", default="1,2,3,4,5", help="comma list or range like 1-8 (default 1,2,3,4,5)")
    p.add_argument("--widths", default="256,inf", help="comma list of hidden widths; 'inf' = infinite width")
    p.add_argument("--n", type=int, default=16, help="training points N (default 16)")
    p.add_argument("--in-dim", type=int, default=32, help="input dimension D (default 32; D+1 < N breaks K-FAC)")
    p.add_argument("--activation", default="relu")
    p.add_argument("--damping", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", choices=tuple(losses.LOSSES), default="mse",
                   help="mse (default) or cross_entropy (isotropy of the whitened softmax operator RΘ_GRᵀ)")
    p.add_argument("--classes", type=int, default=3, help="classes C for --loss cross_entropy (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_progress_flag(p)
    p.set_defaults(func=run)


def selected(text: str) -> tuple[str, ...]:
    if text == "default":
        return default_methods()
    if text == "all":
        return methods.METHODS
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    for m in names:
        methods.get(m)
    return names


def run(args) -> int:
    names = selected(args.methods)
    if args.loss == "cross_entropy" and args.classes < 2:
        raise ValueError(f"--classes must be >= 2 for cross_entropy, got {args.classes}")
    depths = int_list("--depths", args.depths)
    widths = width_list(args.widths)
    progress = _progress.from_args(args, "isotropy", len(depths) * len(widths))
    rows = isotropy_rows(depths, widths, names, n=args.n, in_dim=args.in_dim, activation=args.activation,
                         seed=args.seed, damping=args.damping, progress=progress, loss=args.loss, classes=args.classes)
    emit(args, {"loss": args.loss, "rows": rows, "agreement": agreement(rows)}, format_table(rows))
    return 0
