"""Figure `isotropy_table`: α (measured vs theory) and deviation for every method × depth, at
two finite widths and at infinite width (THEORY.md claims 1–7)."""
from __future__ import annotations

import os

from .. import plotting
from ..isotropy_table import agreement, default_methods, isotropy_rows, markdown_table
from ._base import ExperimentResult, check_below

PROFILES = {
    "tiny": {"depths": [1, 2, 3], "widths": [32, None], "n": 6, "in_dim": 8, "methods": list(default_methods())},
    "quick": {"depths": list(range(1, 9)), "widths": [64, 256, None], "n": 16, "in_dim": 24,
              "methods": list(default_methods())},
    "full": {"depths": list(range(1, 9)), "widths": [1024, 4096, None], "n": 64, "in_dim": 96,
             "methods": list(default_methods())},
}

TOL = 1e-8


def run(config: dict, out_dir) -> ExperimentResult:
    rows = isotropy_rows(config["depths"], config["widths"], config["methods"], n=config["n"],
                         in_dim=config["in_dim"], seed=config.get("seed", 0))
    stats = agreement(rows)
    fig = _plot(rows, config)
    table = markdown_table(rows)
    data = {"rows": rows, "agreement": stats, "markdown": table}
    png, js = plotting.save(fig, "isotropy_table", data, out_dir, config=config)
    with open(os.path.join(out_dir, "isotropy_table.md"), "w", encoding="utf-8") as fh:
        fh.write(table + "\n")
    checks = [
        check_below("max |alpha - theory|/theory where theory predicts isotropy",
                    stats["max_alpha_rel_error_where_isotropic"], TOL),
        check_below("max deviation ||K - alpha I||/||alpha I|| where theory predicts isotropy",
                    stats["max_deviation_where_isotropic"], TOL),
        check_below("rows whose measured verdict (deviation <= 1e-8) disagrees with theory",
                    stats["verdicts_checked"] - stats["verdicts_agree"], 0),
    ]
    if stats["deviation_predictions"]:  # kpsvd: its diagonal kernel's deviation in closed form
        checks.append(check_below("max |deviation - predicted deviation|/max(predicted, 1) where theory gives the "
                                  "kernel's diagonal (kpsvd)", stats["max_deviation_error_where_predicted"], 1e-8))
    summary = (f"{stats['verdicts_agree']}/{stats['verdicts_checked']} verdicts agree with theory; "
               f"max alpha error {stats['max_alpha_rel_error_where_isotropic']:.1e}, "
               f"max deviation {stats['max_deviation_where_isotropic']:.1e} where isotropic")
    return ExperimentResult("isotropy_table", png, js, checks, summary, 0.0)


def _plot(rows, config):
    widths = [("inf" if w is None else w) for w in config["widths"]]
    methods = config["methods"]
    fig, axes = plotting.figure(1, 2, figsize=(13, 5))
    colors = dict(zip(methods, plotting.COLORS + ("#8C564B", "#7F7F7F", "#17BECF", "#BCBD22", "#9467BD")))
    markers = ["o", "s", "^", "D"]
    for m in methods:
        color = colors.get(m)
        theory_plotted = False
        for wi, w in enumerate(widths):
            sel = [r for r in rows if r["method"] == m and r["width"] == w and r["alpha"] is not None]
            if not sel:
                continue
            L = [r["depth"] for r in sel]
            line = axes[0].plot(L, [r["alpha"] for r in sel], markers[wi % 4], color=color, ms=5, alpha=0.8,
                                label=m if wi == 0 else None, mfc="none" if w != "inf" else None)
            color = line[0].get_color()
            dev = [max(r["deviation"], 1e-17) for r in sel]
            axes[1].plot(L, dev, markers[wi % 4] + "-", color=color, ms=4, lw=0.8, alpha=0.8,
                         mfc="none" if w != "inf" else None)
            th = [(r["depth"], r["theory_alpha"]) for r in sel if r["theory_alpha"] is not None]
            if th and not theory_plotted:
                axes[0].plot(*zip(*th), "-", color=color, lw=1.2, alpha=0.6)
                theory_plotted = True
    axes[0].set_yscale("log")
    axes[0].set_xlabel("depth L (number of weight layers)")
    axes[0].set_ylabel("alpha = tr(Θ_G)/N (dimensionless)")
    marker_key = ", ".join(f"{markers[i]} M={w}" for i, w in enumerate(widths))
    axes[0].set_title(f"alpha: markers measured ({marker_key}; filled = infinite width), lines theory", fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=len(methods), fontsize=9)
    axes[1].set_yscale("log")
    axes[1].axhline(TOL, color="k", ls=":", lw=1)
    axes[1].text(1, TOL * 2, "isotropy tolerance 1e-8", fontsize=8)
    axes[1].set_xlabel("depth L (number of weight layers)")
    axes[1].set_ylabel("deviation ||Θ_G − αI||_F / ||αI||_F")
    axes[1].set_title(f"deviation from isotropy (N={config['n']}, D={config['in_dim']}); exact 0 drawn at 1e-17",
                      fontsize=10)
    axes[1].set_ylim(1e-17, 1e2)
    for ax in axes:
        ax.set_xticks(sorted({r["depth"] for r in rows}))
    return fig


__all__ = ["PROFILES", "run"]
