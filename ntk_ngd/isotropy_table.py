"""The isotropy table: measured α and deviation of every method × depth × width beside the
theoretical α and the first failed condition (THEORY.md claims 1–7, issue 4, and "Kronecker-basis
approximations: KPSVD, EKFAC, diagonal Fisher"). Where the theory gives the kernel's diagonal in
closed form (kpsvd, ekfac, diag) the row also holds the deviation that diagonal implies."""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np

from . import datasets, methods
from .diagnostics import isotropy, predict
from .function_space import method_kernels
from .kernels import layer_kernels
from .networks import mlp


def default_methods() -> tuple[str, ...]:
    """Every registered method except the random ones (sf has its own figure), from the registry."""
    return tuple(m.name for m in methods.registered() if not m.random)


def isotropy_rows(
    depths: Iterable[int],
    widths: Sequence[int | None],
    method_names: Sequence[str] | None = None,
    n: int = 16,
    in_dim: int = 32,
    activation: str = "relu",
    seed: int = 0,
    damping: float = 0.0,
    progress=None,
    loss: str = "mse",
    classes: int = 3,
) -> list[dict]:
    """One row per (depth, width, method); width ``None`` is infinite width.

    Data: :func:`datasets.synthetic` (inputs on the sphere); for ``loss="cross_entropy"`` ``classes``
    teacher outputs and labels = their argmax. Outputs f₀(X) at finite width, 0 at infinite width (the
    prior mean); ef/ief use the residual (MSE) or the labels (cross-entropy) there. Methods without an
    infinite-width limit (``finite_width_only``) or without support for ``loss`` give n/a rows with the
    registry's reason; any other error inside a row is recorded in its ``error`` field (a defect, shown as a
    failing check by the figure, never dropped). Options a method needs are its registered ``example_options``
    (pattern: bandwidth 1)."""
    method_names = default_methods() if method_names is None else tuple(method_names)
    specs = [methods.get(m) for m in method_names]
    out_dim = classes if loss == "cross_entropy" else 1
    X, Y = datasets.synthetic(n, in_dim, out_dim=out_dim, seed=seed)
    targets = np.argmax(Y, axis=1) if loss == "cross_entropy" else Y
    nominal = max([w for w in widths if w is not None], default=1024)  # any width: unused at infinite width
    rows = []
    for depth in depths:
        for width in widths:
            net = mlp(depth=depth, width=width or nominal, in_dim=in_dim, out_dim=out_dim, activation=activation)
            params = None if width is None else net.init(seed)
            lk = layer_kernels(net, X, params=params)
            for spec in specs:
                rows.append(_row(net, X, targets, spec, params, lk, damping, depth, width, loss))
            if progress is not None:
                progress(f"depth {depth}, width {width or 'inf'}", f"{len(specs)} methods")
    return rows


def _row(net, X, targets, spec, params, lk, damping, depth, width, loss) -> dict:
    kwargs = dict(spec.example_options, loss=loss, targets=targets, damping=damping, params=params)
    row = {"method": spec.name, "depth": depth, "width": "inf" if width is None else int(width), "loss": loss}
    empty = dict(alpha=None, theory_alpha=None, deviation=None, theory_deviation=None, isotropic=False,
                 predicted_isotropic=False, theory_silent=False)
    skip = _skip_reason(spec, width, loss)
    if skip:
        row.update(empty, failed=skip)
        return row
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            K = method_kernels(net, X, spec.name, train_kernels=lk, **kwargs).train
        iso = isotropy(K)
        pred = predict(net, X, spec.name, lk=lk, **kwargs)
    except Exception as err:  # noqa: BLE001 - a defect inside a row is recorded, never dropped
        row.update(empty, failed=str(err), error=f"{type(err).__name__}: {err}")
        return row
    row.update(
        alpha=iso.alpha,
        theory_alpha=pred.alpha,
        deviation=iso.deviation,
        theory_deviation=pred.deviation,
        isotropic=iso.is_isotropic(1e-8),
        predicted_isotropic=pred.isotropic,
        theory_silent=pred.silent,
        failed=pred.failed[0] if pred.failed else (pred.note if not pred.isotropic else ""),
    )
    return row


def _skip_reason(spec, width, loss) -> str:
    """The registry's reason why ``spec`` has no row here ("" where it must have one)."""
    if width is None and spec.finite_width_only:
        return spec.finite_width_only
    return next((f"unsupported loss {loss!r}: {why}" for name, why in spec.unsupported_losses if name == loss), "")


def _fmt(x, spec):
    """Format a number, or a right-aligned '-' of the same width for a missing one."""
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return "-".rjust(width) if x is None else format(x, spec)


def verdict(row: dict) -> str:
    """'isotropic' / 'not isotropic' ('n/a' where the method does not apply), a flag when measurement and
    theory disagree, the failed condition."""
    if row.get("error"):
        return f"ERROR [{row['error']}]"
    if row["alpha"] is None:
        return f"n/a [{row['failed']}]"
    text = "isotropic" if row["isotropic"] else "not isotropic"
    if row.get("theory_silent"):
        text += " (theory silent)"
    elif row["alpha"] is not None and row["isotropic"] != row["predicted_isotropic"]:
        text += " (THEORY DISAGREES)"
    return text + (f" [{row['failed']}]" if row["failed"] else "")


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """One line per row: plain text, or a markdown table with ``markdown=True``."""
    columns = ("method", "L", "width", "alpha", "theory alpha", "deviation", "theory dev", "verdict")
    specs = ("<14", ">3", ">7", "13.6g", "13.6g", "11.1e", "11.1e", "")
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    else:
        header_specs = ("<14", ">3", ">7", ">13", ">13", ">11", ">11")
        lines = ["".join(format(c, s) for c, s in zip(columns, header_specs)) + "  verdict"]
        lines.append("-" * len(lines[0]))
    for r in rows:
        cells = [r["method"], r["depth"], str(r["width"]), r["alpha"], r["theory_alpha"], r["deviation"],
                 r.get("theory_deviation")]
        if markdown:
            text = [str(c) if i < 3 else _fmt(c, ".6g" if i < 5 else ".1e") for i, c in enumerate(cells)]
            lines.append("| " + " | ".join(text) + f" | {verdict(r)} |")
        else:
            text = [format(c, s) if i < 3 else _fmt(c, s) for i, (c, s) in enumerate(zip(cells, specs))]
            lines.append("".join(text) + "  " + verdict(r))
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    return format_table(rows, markdown=True)


def agreement(rows: list[dict]) -> dict:
    """How often the measured verdict and α match theory (|α − α_th| ≤ 1e-8·α_th when isotropic), and
    how far measured deviations are from predicted ones, |dev − dev_th|/max(dev_th, 1), where predicted."""
    checked = [r for r in rows if r["alpha"] is not None and r["theory_alpha"] is not None and r["predicted_isotropic"]]
    alpha_err = [abs(r["alpha"] - r["theory_alpha"]) / abs(r["theory_alpha"]) for r in checked]
    verdicts = [r["isotropic"] == r["predicted_isotropic"] for r in rows
                if r["alpha"] is not None and not r.get("theory_silent")]
    dev_err = [abs(r["deviation"] - r["theory_deviation"]) / max(r["theory_deviation"], 1.0)
               for r in rows if r["alpha"] is not None and r.get("theory_deviation") is not None]
    return {
        "rows": len(rows),
        "verdicts_agree": int(np.sum(verdicts)),
        "verdicts_checked": len(verdicts),
        "theory_silent": sum(bool(r.get("theory_silent")) for r in rows),
        "max_alpha_rel_error_where_isotropic": float(max(alpha_err)) if alpha_err else None,
        "max_deviation_where_isotropic": float(max(r["deviation"] for r in checked)) if checked else None,
        "deviation_predictions": len(dev_err),
        "max_deviation_error_where_predicted": float(max(dev_err)) if dev_err else None,
    }
