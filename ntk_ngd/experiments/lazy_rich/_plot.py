"""The figure of `lazy_rich`: one heat map of D(M, c) per method with its 10 % contour, D(M) at the step rule with
the M^{-1/2} law drawn through the calibration seeds' mean, and the contours of the isotropic methods beside exact
NGD's with the row-2 band."""
from __future__ import annotations

import numpy as np

from ... import plotting
from ._measure import LEVEL

NCOLS = 4


def plot(runs, contours, checks, config):
    names = list(runs)
    n_panels = len(names) + 2
    nrows = -(-n_panels // NCOLS)
    fig, axes = plotting.figure(nrows, NCOLS, figsize=(4.4 * NCOLS, 3.6 * nrows), squeeze=False)
    axes = axes.ravel()
    subset = "" if config.get("methods") is None else f"subset of methods {config['methods']}; "
    fig.suptitle(f"lazy_rich: trained vs linearised-at-theta_0 trajectories, D = max_t ||f_M(t) - f_lin,M(t)||/||Y|| "
                 f"after k={config['steps']} steps ({subset}synthetic data N={config['n']}, depth {config['depth']}, "
                 f"widths {config['widths'][0]}-{config['widths'][-1]}; judged seeds {config['seeds']})", fontsize=9)
    mesh = None
    for ax, name in zip(axes, names):
        mesh = _heat(ax, name, runs[name], contours["log_Mstar_judged"][name], config)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes[min(len(names), NCOLS) - 1], label="log10 D (geo. mean, judged seeds)")
    _slopes(axes[len(names)], runs, config)
    _contours(axes[len(names) + 1], runs, contours, config)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig


def _heat(ax, name, r, log_mstar, config):
    widths = np.asarray(config["widths"], float)
    mults = np.asarray(config["multipliers"], float)
    ncal = len(config["calibration_seeds"])
    with np.errstate(invalid="ignore"):
        z = np.log10(np.exp(np.mean(r["log_deviation"][:, :, ncal:], axis=2))).T  # mults × widths
    z = np.where(np.isfinite(z), z, 2.0)
    mesh = ax.pcolormesh(widths, mults, np.clip(z, -5, 2), shading="nearest", cmap="viridis", vmin=-5, vmax=2)
    inside = np.isfinite(log_mstar)
    ax.plot(np.exp(log_mstar[inside]), mults[inside], "w-o", ms=4, lw=1.5, label="D = 10 % (M*)")
    for c, v in zip(mults[~inside], log_mstar[~inside]):
        edge = widths[0] if v < 0 else widths[-1]
        ax.plot([edge], [c], "w<" if v < 0 else "w>", ms=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width M (units per hidden layer)")
    ax.set_ylabel("lr / (rule step)")
    iso = "isotropic" if r["isotropic"] else "not isotropic"
    ax.set_title(f"{name} ({iso}); rule step {r['lr']:.3g}\n(< / >: M* below / above the grid)", fontsize=8)
    ax.legend(fontsize=6, loc="upper right")
    return mesh


def _slopes(ax, runs, config):
    widths = np.asarray(config["widths"], float)
    keep = widths >= config["slope_min_width"]
    j = [float(m) for m in config["multipliers"]].index(1.0)
    ncal = len(config["calibration_seeds"])
    colors = plotting.method_colors()
    for name, r in runs.items():
        logd = r["log_deviation"][keep, j, :]
        mean = np.exp(np.mean(logd[:, ncal:], axis=1))
        if not np.all(np.isfinite(mean)):
            continue
        ax.plot(widths[keep], mean, "o-", color=colors[name], ms=3, lw=1,
                label=f"{name}: {r['slope']:+.2f} ± {3 * r['slope_se']:.2f} ({r['slope_status']})")
        cal = np.mean(logd[:, :ncal])  # M^-1/2 through the calibration seeds' mean at their mean log M
        x0 = np.mean(np.log(widths[keep]))
        ax.plot(widths[keep], np.exp(cal - 0.5 * (np.log(widths[keep]) - x0)), "--", color=colors[name], lw=0.7)
    ax.axhline(LEVEL, color="k", lw=0.8, ls=":", label="10 %")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width M (units per hidden layer)")
    ax.set_ylabel("D at lr = rule step (geo. mean, judged)")
    ax.set_title("row 1: slope vs KO20's -1/2\n(dashed: M^-1/2 through the calibration mean)", fontsize=8)
    ax.legend(fontsize=5.5)


def _contours(ax, runs, contours, config):
    widths = np.asarray(config["widths"], float)
    mults = np.asarray(config["multipliers"], float)
    colors = plotting.method_colors()
    band = contours["band"]
    exact = np.asarray(contours["log_Mstar_judged"]["exact"], float)
    ok = np.isfinite(exact)
    if np.isfinite(band) and ok.any():
        ax.fill_betweenx(mults[ok], np.exp(exact[ok] - band), np.exp(exact[ok] + band), color="0.85",
                         label=f"exact ± band ({band:.2f} in log M)")
    for name, r in runs.items():
        if not (r["isotropic"] or name == contours["control"]):
            continue
        lm = np.asarray(contours["log_Mstar_judged"][name], float)
        inside = np.isfinite(lm)
        color = "k" if name == "exact" else colors[name]
        style = "-o" if name == "exact" else ("x--" if name == contours["control"] else "o-")
        ax.plot(np.exp(lm[inside]), mults[inside], style, ms=4, lw=1, color=color,
                label=name + (" (control)" if name == contours["control"] else ""))
        for c, v in zip(mults[~inside], lm[~inside]):  # beyond the grid: an arrow at the edge
            ax.plot([widths[0] if v < 0 else widths[-1]], [c], "<" if v < 0 else ">", color=color, ms=6, mfc="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(widths[0] / 1.5, widths[-1] * 1.5)
    ax.set_xlabel("M* where D = 10 % (width, units per hidden layer; clipped to the grid)")
    ax.set_ylabel("lr / (rule step)")
    ax.set_title("row 2: isotropic methods' 10 % contours vs exact NGD's\n(open < / >: beyond the grid)", fontsize=8)
    ax.legend(fontsize=6)


__all__ = ["plot"]
