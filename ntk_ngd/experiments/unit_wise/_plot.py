"""The unit_wise figure: ReLU deviation vs width with the arc-cosine theory, erf round-off, α per unit."""
from __future__ import annotations

import numpy as np

from ... import plotting
from ._checks import ERF_TOL, SLOPE
from ._measure import _interp_prediction


def _errorbar(ax, rows, key, fmt, color, label, floor=None, hollow=False):
    w = np.array([r["width"] for r in rows])
    mean, lo, hi = (np.array([r[f"{key}_{s}"] for r in rows]) for s in ("mean", "min", "max"))
    if floor is not None:
        mean, lo, hi = (np.maximum(v, floor) for v in (mean, lo, hi))
    ax.errorbar(w, mean, yerr=[mean - lo, hi - mean], fmt=fmt, color=color, mfc="none" if hollow else None,
                ms=5, capsize=3, label=label)


def _plot(rows, predictions, slopes, config, depths, widths, activations):
    fig, ax0 = plotting.figure(1, 1, figsize=(15, 5.2),
                               title=f"Unit-wise NGD kernel Θ_uw on N={config['n']} inputs (D={config['in_dim']}), "
                                     f"{config['seeds']} seeds: markers = seed mean, bars = min–max, lines = theory")
    ax0.remove()
    gs = fig.add_gridspec(2, 3)
    ax_relu, ax_erf = fig.add_subplot(gs[:, 0]), fig.add_subplot(gs[:, 1])
    ax_top, ax_bot = fig.add_subplot(gs[0, 2]), fig.add_subplot(gs[1, 2])
    colors = {d: plotting.COLORS[i] for i, d in enumerate(depths)}
    erf_colors = {d: plotting.COLORS[2 + i] for i, d in enumerate(depths)}
    grid = np.geomspace(widths[0], widths[-1], 64)
    of = lambda act, depth: [r for r in rows if r["activation"] == act and r["depth"] == depth]  # noqa: E731

    if "relu" in activations:
        ax = ax_relu
        for depth in depths:
            sel = of("relu", depth)
            _errorbar(ax, sel, "deviation", "o", colors[depth],
                      f"L={depth} measured, fitted slope {slopes[depth]:+.3f}")
            ax.plot(grid, [_interp_prediction(predictions, depth, widths, g) for g in grid], "-",
                    color=colors[depth], lw=1.3, alpha=0.8, label=f"L={depth} arc-cosine theory")
        top = max(r["deviation_max"] for r in rows if r["activation"] == "relu")
        bottom = min(r["deviation_min"] for r in rows if r["activation"] == "relu")
        ax.plot(grid, 1.6 * top * (grid / grid[0]) ** SLOPE, ":", color="k", lw=1.2, label="reference slope −1/2")
        ax.set_ylim(bottom / 6, top * 3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width M (hidden units per layer)")
        ax.set_ylabel("relative deviation ||Θ_uw − αI||_F / ||αI||_F")
        ax.set_title("ReLU: deviation ~ M^(−1/2)", fontsize=10)
        ax.legend(loc="lower left", fontsize=8)

    if "erf" in activations:
        ax = ax_erf
        floor = 1e-17
        for depth in depths:
            _errorbar(ax, of("erf", depth), "deviation", "s", erf_colors[depth], f"erf L={depth} measured",
                      floor=floor, hollow=True)
        ax.axhline(ERF_TOL, color="0.3", ls="--", lw=1, label="check tolerance 1e-8")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(floor, 1e-3)
        ax.set_xlabel("width M (hidden units per layer)")
        ax.set_ylabel("relative deviation ||Θ_uw − αI||_F / ||αI||_F")
        ax.set_title("erf (δ never 0): theory deviation exactly 0;\n"
                     "measured = round-off of the unit-block pseudo-inverses", fontsize=10)
        ax.legend(loc="upper center", fontsize=8, ncol=3)

    for ax, act, p in ((ax_top, "erf", 1.0), (ax_bot, "relu", 0.5)):
        if act not in activations:
            ax.set_visible(False)
            continue
        cmap = erf_colors if act == "erf" else colors
        for depth in depths:
            _errorbar(ax, of(act, depth), "alpha_over_sum_width", "s" if act == "erf" else "o", cmap[depth],
                      f"{act} L={depth}", hollow=act == "erf")
            S = grid * (depth - 1)
            ax.plot(grid, (p * S + 1) / S, "-", color=cmap[depth], lw=1.1, alpha=0.7)
        ax.axhline(p, color="k", ls=":", lw=1, label=f"active fraction {p:g}")
        ax.set_xscale("log", base=2)
        ax.set_ylabel("α / Σ_l M_l")
        ax.legend(loc="upper right", fontsize=7.5, ncol=3)
    ax_top.set_title("α = tr(Θ_uw)/N per hidden unit → active fraction p\n"
                     "lines: (pΣM + 1)/ΣM, p = 1 (erf), 1/2 (ReLU)", fontsize=10)
    ax_bot.set_xlabel("width M (hidden units per layer)")
    return fig


__all__ = ["_plot"]
