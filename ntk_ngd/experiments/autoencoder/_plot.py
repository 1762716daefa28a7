"""The autoencoder figure: train loss vs epoch and vs wall time, the Fisher-approximation errors per layer, and the
calibration grid."""
from __future__ import annotations

import numpy as np

from ... import plotting
from ...factored.block_error import APPROXIMATIONS


def _colors(names):
    palette = plotting.COLORS * 3
    return dict(zip(names, palette))


def _curves(ax, judged, colors, x_key):
    for name, runs in judged.items():
        for j, r in enumerate(runs):
            n = len(r["loss"]) if r["diverged_at"] is None else r["diverged_at"] + 1
            ax.plot(r[x_key][:n], r["loss"][:n], "-", color=colors[name], lw=1.4 if j == 0 else 0.8,
                    alpha=1.0 if j == 0 else 0.5, label=name if j == 0 else None)
    ax.set_yscale("log")


def _fisher(ax, fisher, colors):
    trained = next((k for k in ("kfac", *fisher) if k in fisher and k != "initial"), None)
    shades = {**colors, "kpsvd1": "0.55", "kpsvd2": colors.get("kpsvd", "C3")}
    for approx in APPROXIMATIONS:
        color = shades.get(approx, "C7")
        for key, style in (("initial", "o--"), (trained, "s-")):
            if key is None:
                continue
            errs = [e[approx] for e in fisher[key]]
            ax.plot(np.arange(1, len(errs) + 1), errs, style, color=color, ms=4,
                    label=approx if key == "initial" else None, mfc="none" if key == "initial" else color)
    ax.set_xlabel("layer l (last = readout, fitted exactly by all but diag)")
    ax.set_ylabel("relative error ||F_l − F̂_l||_F / ||F_l||_F")
    ax.set_title(f"(c) Fisher block fits on {len(fisher['initial'])} layers: dashed initial weights, "
                 f"solid after {trained} training", fontsize=9)
    ax.set_ylim(-0.02, 1.05)
    ax.legend(fontsize=7, ncol=2)


def _grid(ax, calibration, colors):
    for name, cal in calibration.items():
        rows = [g for g in cal["grid"] if g["damping"] == cal["damping"]]
        lrs = [g["lr"] for g in rows]
        finals = [g["final"] if np.isfinite(g["final"]) else np.nan for g in rows]
        ax.plot(lrs, finals, "o-", color=colors[name], ms=4, label=f"{name} (ρ={cal['damping']})")
        ax.plot([cal["lr"]], [cal["final"]], "*", color=colors[name], ms=10)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate (at the chosen damping; missing = diverged)")
    ax.set_ylabel("train loss after the calibration epochs")
    ax.set_title("(d) calibration seed: grid, ★ chosen", fontsize=9)
    ax.legend(fontsize=7, ncol=2)


def figure(data, cfg):
    judged, names = data["judged"], list(data["judged"])
    colors = _colors(names)
    fig, axes = plotting.figure(2, 2, figsize=(14, 10))
    ax = axes.ravel()
    _curves(ax[0], judged, colors, "epochs")
    ax[0].set_xlabel("epoch (passes over the training images)")
    ax[0].set_ylabel("train loss  ½·Σ_pixels (f − x)², mean over images")
    ax[0].set_title(f"(a) vs epoch, judged seeds {cfg['judged_seeds']} (thick: first); no theory curve", fontsize=9)
    ax[0].legend(fontsize=8, ncol=2)
    _curves(ax[1], judged, colors, "wall")
    ax[1].set_xlabel("wall time (s, this 2-core CPU; full-data evaluations included, compilation excluded)")
    ax[1].set_ylabel("train loss")
    ax[1].set_title("(b) vs wall time (a shared 2-core CPU: load varies between runs, THEORY.md finding-autoencoder-training)",
                    fontsize=9)
    _fisher(ax[2], data["fisher"], colors)
    _grid(ax[3], data["calibration"], colors)
    hidden = "-".join(str(h) for h in cfg["hidden"])
    fig.suptitle(f"{cfg['data'].upper()} autoencoder {cfg['in_dim']}-{hidden}-{cfg['in_dim']} (ReLU, linear output, MSE), "
                 f"{cfg['n']} shipped images, batch {cfg['batch']}, {cfg['dtype']}, T_cov = T_inv = {cfg['t_inv']}, "
                 f"EMA {cfg['decay']}, momentum {cfg['momentum']}\n{cfg['deviation']}", fontsize=9)
    return fig


__all__ = ["figure"]
