"""The panels of figure `continual_mnist`: ACC and forgetting bars per (method, projection) ± s.e. over judged
seeds for each benchmark, accuracy matrices of the main runs, and predicted vs measured task-1 forgetting over
width with the M^{-1/2} line."""
from __future__ import annotations

import numpy as np

from ... import plotting

HEATMAPS = ("sgd+none", "sgd+ogd", "ekfac+ong_euclidean", "ekfac+ong")


def _mean_se(values):
    v = np.asarray(list(values), float)
    return float(v.mean()), (float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0)


def figure(cfg, runs, summ, lazy):
    nb = len(cfg["benchmarks"])
    ncols = max(2 * nb, len(HEATMAPS)) + 1
    fig, axes = plotting.figure(2, ncols, figsize=(4.0 * ncols, 8.2),
                                squeeze=False,
                                title=(f"continual_mnist [{cfg['label']}] ({cfg['n_tasks']} tasks, {cfg['epochs']} epoch(s), seeds "
                                       f"{cfg['seeds']} (judged {cfg['judged']}), width {cfg['width']}; "
                                       f"{cfg['n']} shipped MNIST images, 784 inputs, lr calibrated: {cfg['lr']})"))
    for i, bm in enumerate(cfg["benchmarks"]):
        _bars(axes[0, 2 * i], summ[bm], "acc", cfg["judged"], f"{bm}: average accuracy ACC", "ACC (test accuracy)")
        _bars(axes[0, 2 * i + 1], summ[bm], "forgetting", cfg["judged"], f"{bm}: average forgetting F",
              "F (accuracy points)")
    bm = cfg["benchmarks"][0]
    for j, key in enumerate(HEATMAPS):
        ax = axes[1, j]
        if key not in runs[bm]:
            ax.set_visible(False)
            continue
        A = np.mean([np.asarray(a) for a in runs[bm][key].values()], 0)
        im = ax.imshow(A, vmin=0, vmax=1, cmap="viridis")
        for (t, k), v in np.ndenumerate(A):
            ax.text(k, t, f"{v:.2f}", ha="center", va="center", color="w", fontsize=7)
        ax.set(title=f"{key} ({bm}): a[t, j]", xlabel="evaluated task j", ylabel="after training task t",
               xticks=range(A.shape[0]), yticks=range(A.shape[0]))
        ax.grid(False)
    fig.colorbar(im, ax=axes[1, len(HEATMAPS) - 1], label="test accuracy")
    _lazy_panel(fig, axes, lazy, cfg)
    for ax in axes.ravel():
        if not ax.has_data():
            ax.set_visible(False)
    return fig


def _bars(ax, summ, key, judged, title, ylabel):
    names = list(summ)
    stats = [_mean_se(summ[n][key][s] for s in judged) for n in names]
    ax.bar(range(len(names)), [m for m, _ in stats], yerr=[e for _, e in stats], capsize=3,
           color=["C0" if n.startswith("sgd") else "C1" if n.startswith("kfac") else "C2" for n in names],
           label="mean ± s.e. over judged seeds (0 with one seed)")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=7)


def _lazy_panel(fig, axes, lazy, cfg):
    """On the last top-row axis when free, else an inset on the last heat map's row."""
    free = [ax for ax in axes[0] if not ax.has_data()]
    ax = free[0] if free else fig.add_axes([0.83, 0.6, 0.15, 0.25])
    w = np.asarray(lazy["widths"], float)
    for key, mark, lab in (("predicted", "o-", "lazy prediction (NTK at task-2 start)"),
                           ("measured", "s--", "trained (finite width)")):
        ax.errorbar(w, [np.mean(lazy[key][k]) for k in lazy["widths"]],
                    yerr=[np.std(lazy[key][k]) for k in lazy["widths"]], fmt=mark, label=f"‖Δf_A‖ {lab}")
    gap = [np.mean(lazy["gap"][k]) for k in lazy["widths"]]
    ax.plot(w, gap, "^-", label="relative gap")
    ax.plot(w, gap[0] * np.sqrt(w[0] / w), "k:", label="M^-1/2 line")
    ax.plot(w, 3 * gap[0] * np.sqrt(w[0] / w), "r:", label=f"band (M0 = {cfg['M0']})")
    slope = np.polyfit(np.log(w), np.log(gap), 1)[0] if len(w) > 1 else float("nan")
    ax.set(xscale="log", yscale="log", xlabel="hidden width M", ylabel="logit change / relative gap",
           title=f"task-1 forgetting after task 2 (slope {slope:.2f})")
    ax.legend(fontsize=6)
