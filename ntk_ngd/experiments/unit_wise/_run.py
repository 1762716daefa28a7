"""Run the unit_wise figure: the kernels, the checks, the figure and its JSON."""
from __future__ import annotations

from ... import plotting
from .._base import ExperimentResult
from ._checks import evaluate
from ._measure import _summarise, measure
from ._plot import _plot


def run(config: dict, out_dir) -> ExperimentResult:
    widths = [int(w) for w in config["widths"]]
    depths = [int(d) for d in config["depths"]]
    activations = list(config.get("activations", ["relu", "erf"]))
    runs, predictions, limits, init_max_diff = measure(config)
    summary_rows = _summarise(runs, activations, depths, widths)
    checks = evaluate(runs, predictions, limits, config)
    slopes = {int(c.claim.split()[2].rstrip(":")): c.measured for c in checks
              if c.claim.startswith("ReLU depth") and "slope" in c.claim}
    fig = _plot(summary_rows, predictions, slopes, config, depths, widths, activations)
    data = {
        "runs": [{k: v for k, v in r.items() if k not in ("kernel_diagonal",)} for r in runs],
        "summary": summary_rows,
        "fitted_slopes": {str(k): v for k, v in slopes.items()},
        "computed_limit_active_fraction": {f"{a}/L={d}": v for (a, d), v in limits.items()},
        "compiled_init_max_abs_diff_vs_net_init": init_max_diff,
        "arc_cosine_prediction": [{"depth": d, "width": w, **v} for (d, w), v in predictions.items()],
    }
    png, js = plotting.save(fig, "unit_wise", data, out_dir, config=config)
    parts = [f"depth {d}: slope {s:+.3f}" for d, s in slopes.items()]
    if "erf" in activations:
        parts.append(f"erf max deviation {max(r['deviation'] for r in runs if r['activation'] == 'erf'):.1e}")
    summary = "ReLU unit-wise deviation vs width: " + ", ".join(parts)
    return ExperimentResult("unit_wise", png, js, checks, summary, 0.0)


__all__ = ["run"]
