"""The four panels of the online_ng figure."""
from __future__ import annotations

import numpy as np

from ... import plotting


def _normalised(curve):
    c = np.asarray(curve, float)
    return c / c[0]


def _curves(ax, res, mode, lr, colors, window=None):
    steps = 0
    for (L, r), color in zip(res.items(), colors):
        runs = r[mode]
        t = np.asarray(runs["online"]["steps"])
        steps = max(steps, t[-1])
        ax.plot(t, _normalised(runs["online"]["excess"]), color=color, label=f"online NG, L={L}")
        ax.plot(t, _normalised(runs["gd"]["excess"]), ":", color=color, lw=1.2)
        if "no_1/L" in runs:
            ax.plot(t, _normalised(runs["no_1/L"]["excess"]), "-.", color=color, lw=1.0, alpha=0.8)
        if mode == "full":
            ex = _normalised(r["prediction"]["exact"])
            ax.plot(t[::5], ex[::5], "o", color=color, mfc="none", ms=4)
        else:
            lin = _normalised(r["linearised"])
            ax.plot(np.arange(lin.size), lin, "--", color=color, lw=0.9, alpha=0.8)
    t = np.arange(steps + 1)
    ax.plot(t, (1 - lr) ** (2 * t), "k--", lw=1.4, label=r"theory $(1-\eta)^{2t}$")
    if window is not None:
        ax.axvspan(*window, color="0.9", zorder=0, label="rate-fit window")
    ax.set_yscale("log")
    ax.set_ylim(1e-22, 3)
    ax.set_xlabel("step t")
    ax.set_ylabel("excess loss (L_t − L*) / (L_0 − L*)")


def figure(cfg, res, lag, window):
    lr, depths = float(cfg["lr"]), list(res)
    colors = plotting.COLORS[: len(depths)]
    fig, axes = plotting.figure(2, 2, figsize=(13, 9.5),
                                title=f"Online deep-linear natural gradient (Bernacchia et al. 2018) via nn.fit: square "
                                      f"D=C=M={cfg['dim']}, N={cfg['n']}, cond Σ_x={cfg['cond']:g}, η={lr:g}; small nets "
                                      "(the claim is width-free)")
    ax = axes[0, 0]
    _curves(ax, res, "full", lr, colors)
    ax.set_title("(a) full batch, exact moments: solid online NG, ○ closed-form recurrence,\n"
                 ":  GD (lr 0.5/λ_max),  -.  block-diag NG without 1/L", fontsize=9.5)
    ax.legend(fontsize=7.5, loc="lower left")
    ax = axes[0, 1]
    _curves(ax, res, "online", lr, colors, window)
    ax.set_title(f"(b) online: EMA {cfg['decay']}, batch {cfg['batch']}; -- linearised online NG (numpy, same batches),\n"
                 ":  SGD,  -.  without 1/L", fontsize=9.5)
    ax.legend(fontsize=7.5, loc="lower left")
    ax = axes[1, 0]
    x = np.asarray(depths, float)
    rate = lambda mode, key: np.array([-res[L]["rates"][mode][key] for L in depths])  # noqa: E731
    ax.plot(x, rate("full", "online"), "o", ms=8, color=plotting.COLORS[0], label="online NG, full batch")
    ax.plot(x + 0.08, rate("online", "online"), "s", ms=7, color=plotting.COLORS[2], label="online NG, EMA + mini-batch")
    ax.plot(x, rate("full", "no_1/L"), "^", color=plotting.COLORS[3], label="without 1/L, full batch")
    ax.plot(x + 0.08, rate("online", "no_1/L"), "v", color=plotting.COLORS[4], label="without 1/L, online")
    grid = np.linspace(1, max(depths), 50)
    ax.plot(grid, -2 * np.log(np.clip(1 - grid * lr, 1e-9, None)), ":", color=plotting.COLORS[3],
            label="theory −2 log(1 − Lη) (no 1/L)")
    ax.plot(x, rate("full", "gd"), "x", ms=8, color="0.3", label="GD, full batch")
    ax.plot(x + 0.08, rate("online", "gd"), "+", ms=9, color="0.5", label="SGD, mini-batch")
    ax.axhline(-2 * np.log(1 - lr), color="k", ls="--", label="theory −2 log(1 − η)")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xlabel("depth L")
    ax.set_ylabel("fitted decay rate −d log(excess)/dt per step")
    ax.set_title("(c) fitted rate vs depth (bands: panel d)", fontsize=10)
    ax.legend(fontsize=7.5, ncol=2, loc="upper left")
    ax = axes[1, 1]
    theory = 2 * np.log(1 - lr)
    full_dev = np.array([res[L]["rates"]["full"]["online"] - theory for L in depths])
    onl_dev = np.array([res[L]["rates"]["online"]["online"] - theory for L in depths])
    lin_dev = np.array([res[L]["rates"]["online"]["linearised"] - theory for L in depths])
    ax.errorbar(x - 0.06, full_dev, yerr=[res[L]["full_band"] for L in depths], fmt="o", capsize=4,
                color=plotting.COLORS[0], label="full batch ± its band")
    ax.errorbar(x + 0.06, onl_dev, yerr=[lag[L] for L in depths], fmt="s", capsize=4, color=plotting.COLORS[2],
                label="online ± lag band (around the linearised rate)")
    ax.plot(x + 0.06, lin_dev, "k_", ms=14, mew=2, label="linearised online NG (numpy)")
    ax.axhline(0, color="k", ls="--", lw=1)
    ax.set_xticks(x)
    ax.set_xlabel("depth L")
    ax.set_ylabel("fitted rate − 2 log(1 − η)  (per step)")
    ax.set_title("(d) deviation from the paper's rate (GD and no-1/L are off this scale)", fontsize=10)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.legend(fontsize=7.5, loc="best")
    return fig


__all__ = ["figure"]
