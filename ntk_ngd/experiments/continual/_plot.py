"""The panels of figure `continual`."""
from __future__ import annotations

import numpy as np

from ... import plotting
from ._checks import slope
from ._measure import PROJECTIONS

FLOOR = 1e-18  # where an exact zero is drawn on a log axis


def figure(config, one, seqs, trained, sweep, mem, draws, counter):
    fig, first = plotting.figure(1, 1, figsize=(19, 15))  # the project style; the grid replaces the one axes
    first.remove()
    grid = fig.add_gridspec(3, 4)
    _one_step(fig.add_subplot(grid[0, :3]), one, config)
    _counter(fig.add_subplot(grid[0, 3]), draws, counter)
    heat = grid[1, :3].subgridspec(1, len(config["heatmaps"]))
    for i, p in enumerate(config["heatmaps"]):
        _heatmap(fig.add_subplot(heat[0, i]), seqs[config["trained_method"]][p], p, config, trained.get(p))
    _table(fig.add_subplot(grid[1, 3]), seqs)
    _width(fig.add_subplot(grid[2, :2]), sweep, config)
    _memory(fig.add_subplot(grid[2, 2:]), mem, config)
    return fig


def _one_step(ax, one, config):
    methods, colors = list(one), plotting.method_colors()
    x = np.arange(len(PROJECTIONS))
    w = 0.8 / len(methods)
    for i, m in enumerate(methods):
        pos = x - 0.4 + (i + 0.5) * w
        pred = [max(one[m][p]["predicted"], FLOOR) if p in one[m] else np.nan for p in PROJECTIONS]
        real = [max(one[m][p]["trained"], FLOOR) if p in one[m] else np.nan for p in PROJECTIONS]  # nan: undefined
        ax.bar(pos - w / 4, pred, w / 2, color=colors[m], alpha=0.45, hatch="//",
               label=f"{m}: lazy prediction η‖K^P_AB r_B‖")
        ax.bar(pos + w / 4, real, w / 2, color=colors[m], label=f"{m}: one real step (η = 0.1/λ_max)")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 10, 1e9)  # room for the legend above the bars
    ax.set_xticks(x, PROJECTIONS)
    ax.set_ylabel("forgetting ‖f_A(θ + ηd) − f_A(θ)‖ (one step)")
    ax.set_title(f"(a) one-step forgetting of task A while training task B: lazy prediction vs real step "
                 f"(erf, L={config['depth']}, M={config['width']}, N={config['n']} per task, ρ={config['damping']:g}; "
                 "consistent projections: 0 predicted, O(η²) measured)", fontsize=9)
    ax.legend(fontsize=6, ncol=min(len(methods), 6), loc="upper center")


def _counter(ax, draws, counter):
    colors = plotting.method_colors()
    for i, (m, rec) in enumerate(draws.items()):
        vals = np.asarray(rec["ogd_min_ratio"])
        ax.scatter(np.full(vals.shape, i), vals, color=colors[m], s=14, label="digit draws (one column per method)" if i == 0 else None)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.scatter([len(draws)], [counter["ogd"] / abs(counter["none"])], marker="*", s=160, color=plotting.COLORS[3],
               label="2-D counterexample (rᵀLr / |rᵀL_plain r|)")
    ax.set_xticks(range(len(draws) + 1), list(draws) + ["counter-\nexample"], rotation=90, fontsize=7)
    ax.set_ylabel("λ_min / λ_max of sym(L_ogd)   (< 0: ascent)")
    ax.set_title("(claim 4d) OGD-projected NGD: descent?", fontsize=9)
    ax.legend(fontsize=7)


def _heatmap(ax, rec, p, config, trained):
    A = np.asarray(rec["accuracy"], float)
    ax.imshow(A, vmin=0, vmax=1, cmap="viridis")
    for (t, s), v in np.ndenumerate(A):
        ax.text(s, t, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    T = A.shape[0]
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_xlabel("evaluated on task s")
    ax.set_ylabel("after training task t")
    extra = f"; trained {trained['average_accuracy']:.3f}" if trained else ""
    ax.set_title(f"(b) {config['trained_method']} + {p}: avg acc {rec['average_accuracy']:.3f}, "
                 f"forg {rec['average_forgetting']:.3f}{extra}", fontsize=8)


def _table(ax, seqs):
    methods = list(seqs)
    A = np.array([[seqs[m][p]["average_accuracy"] if p in seqs[m] else np.nan for p in PROJECTIONS] for m in methods])
    F = np.array([[seqs[m][p]["average_loss_forgetting"] if p in seqs[m] else np.nan for p in PROJECTIONS]
                  for m in methods])  # nan: the projection is not defined for the method (ong_old_factors)
    ax.imshow(A, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(A):
        ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}\n{F[i, j]:.1e}", ha="center", va="center", fontsize=6,
                color="w" if np.isnan(v) or v < 0.6 else "k")
    ax.set_xticks(range(len(PROJECTIONS)), [p.replace("_", "\n") for p in PROJECTIONS], fontsize=6)
    ax.set_yticks(range(len(methods)), methods)
    ax.set_title("(c) rotated digits, infinite width: average accuracy\n(and average loss forgetting) per method × "
                 "projection", fontsize=8)


def _width(ax, sweep, config):
    widths = np.asarray(sweep["widths"], float)
    for i, (key, label) in enumerate((("kernel_none", "forgetting kernel (none) vs ∞"),
                                      ("kernel_ong", "learning kernel (ong) vs ∞"),
                                      ("trained_none", "trained (centred) forgetting vs lazy ∞ prediction"),
                                      ("trained_ong", "ong trained forgetting / plain (→ 0)"),
                                      ("control_kernel", "control: kernel vs a wrong limit (gd's)"))):
        vals = np.asarray(sweep[key], float)
        geo = np.exp(np.mean(np.log(vals), axis=1))
        ax.plot(widths, geo, "o-", color=plotting.COLORS[i],
                label=f"{label} (slope {slope(widths, vals):.2f})")
        ax.scatter(np.repeat(widths, vals.shape[1]), vals.ravel(), color=plotting.COLORS[i], s=8, alpha=0.4)
    ref = np.exp(np.mean(np.log(np.asarray(sweep["kernel_none"], float)[0])))
    ax.plot(widths, ref * (widths / widths[0]) ** -0.5, ":", color="k", label="M^-1/2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(widths, [str(int(w)) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("hidden width M")
    ax.set_ylabel("relative deviation (geometric mean over seeds)")
    ax.set_title(f"(d) width: finite → lazy infinite-width prediction ({config['trained_method']}, ReLU, T = 2, "
                 f"{config['width_steps']} steps per task)", fontsize=9)
    ax.legend(fontsize=7)


def _memory(ax, mem, config):
    m = np.asarray(mem["memory"], float)
    partial = m < config["n_memory"]  # with every sample stored there are no unstored ones
    right = ax.twinx()
    for i, key in enumerate(k for k in mem if "/" in k):
        ax.plot(m[partial], np.asarray(mem[key]["unstored"])[partial], "o-", color=plotting.COLORS[i],
                label=f"{key}: unstored samples (left)")
        right.plot(m[m > 0], np.maximum(np.asarray(mem[key]["stored"])[m > 0], FLOOR), "s--", color=plotting.COLORS[i],
                   alpha=0.6, label=f"{key}: stored samples, max (right)")
    ax.set_ylim(0, 1.1)
    right.set_yscale("log")
    right.set_ylim(FLOOR / 10, 1)
    right.set_ylabel("stored: max |Δf| / ‖Δf_plain‖ (rounding)")
    ax.set_xlabel("memory m (stored samples of task A)")
    ax.set_ylabel("unstored: ‖Δf_U‖ / ‖Δf_plain‖")
    ax.set_title(f"(e) finite memory (infinite width, N = {config['n_memory']} per task): stored samples keep "
                 "their outputs, unstored ones move by the cross-kernel prediction", fontsize=9)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")


__all__ = ["figure"]
