"""The four panels: (a) train loss vs step, (b) γ/γ_NG of each method's own update vs step, (c) final train loss vs
damping, (d) γ/γ_NG vs damping (ef/sf/ief from the sweep runs; exact NG at fixed snapshots of the iEF runs)."""
from __future__ import annotations

import warnings

import numpy as np

from ... import plotting
from . import _measure as M

COLOR = {"sgd": "#000000", "adam": "#CC79A7", "ef": "#D55E00", "sf": "#E69F00", "ief": "#009E73", "exact": "#0072B2"}
LABEL = {"sgd": "SGD", "adam": "Adam", "ef": "EF", "sf": "SF (1 sample)", "ief": "iEF", "exact": "exact NG"}


def _band(ax, x, ys, color, label, marker=None):
    ys = np.asarray(ys, float)
    with np.errstate(invalid="ignore"):
        mid = np.exp(np.nanmean(np.log(ys), axis=0))
        ax.fill_between(x, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=color, alpha=0.18, lw=0)
    ax.plot(x, mid, color=color, label=label, marker=marker, ms=3)


def _aligned(rs, attr):
    n = min(len(getattr(r, attr)) for r in rs)
    return n, [np.asarray(getattr(r, attr), float)[:n] for r in rs]


def figure(cfg, runs, sweeps, exact, chosen):
    arch = "-".join(str(w) for w in (784 if cfg["data"] == "mnist" else 64, *cfg["widths"], 10))
    title = (f"iEF vs EF vs SF vs SGD vs Adam as optimisers (Wu et al. 2024 claims) — deviations: {cfg['data'].upper()} "
             f"subset of {cfg['n']:,} images,\n"
             f"{arch} ReLU MLP, batch {cfg['batch']}, {cfg['epochs']} epochs, float64 (paper: fine-tuning of pretrained "
             f"models); exact NG not trained (reference only)")
    fig, axes = plotting.figure(2, 2, figsize=(14, 10), title=title)
    (a, b), (c, d) = axes
    for m in M.TRAINED:
        rs = runs[m]
        n, losses = _aligned(rs, "loss")
        lab = f"{LABEL[m]} (lr {chosen[m]['lr']:g}" + (f", ρ {chosen[m]['damping']:g})" if m in M.NATURAL else ")")
        _band(a, rs[0].steps[:n], losses, COLOR[m], lab)
        n, own = _aligned(rs, "own")
        ng = [np.asarray(r.ng, float)[:n] for r in rs]
        _band(b, rs[0].snap_steps[:n], [o / g for o, g in zip(own, ng)], COLOR[m], LABEL[m], "o")
    a.set_yscale("log")
    a.set_xlabel("training step (mini-batches of %d)" % cfg["batch"])
    a.set_ylabel("train cross-entropy on all %d images (nats)" % cfg["n"])
    a.set_title(f"(a) train loss, judged seeds {cfg['judged_seeds']}: geometric mean, band min–max", fontsize=10)
    a.legend(fontsize=8)
    b.set_yscale("log")
    b.axhline(1.0, color=COLOR["exact"], ls="--", lw=1.2, label="exact NG (γ_NG, Cauchy–Schwarz minimum)")
    b.set_xlabel("training step")
    b.set_ylabel("γ(own update) / γ_NG on the fixed eval batch (≥ 1)")
    b.set_title("(b) indicator γ = √(ΔθᵀFΔθ)/|Δθᵀ∇L| of each method's update at its own parameters", fontsize=10)
    b.legend(fontsize=8)
    top = max(r.loss[0] for rs in runs.values() for r in rs)
    for m, sw in sweeps.items():
        rhos = np.array(sorted(sw))
        fin = np.array([[r.final_loss for r in sw[rho]] for rho in rhos], float)
        bad = ~np.all(np.isfinite(fin), axis=1)
        fin[~np.isfinite(fin)] = np.nan
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mid = np.exp(np.nanmean(np.log(fin), axis=1))
            c.plot(rhos[~bad], mid[~bad], "o-", color=COLOR[m], label=LABEL[m] + f" (lr {chosen[m]['lr']:g})")
            c.fill_between(rhos[~bad], np.nanmin(fin, axis=1)[~bad], np.nanmax(fin, axis=1)[~bad], color=COLOR[m],
                           alpha=0.15, lw=0)
        if bad.any():
            c.plot(rhos[bad], [top] * int(bad.sum()), "x", color=COLOR[m], ms=9, mew=2,
                   label=f"{LABEL[m]}: a run diverged (drawn at the initial loss)")
        ratio = np.array([np.nanmedian(np.concatenate([np.asarray(r.own) / np.asarray(r.ng) for r in sw[rho]]))
                          for rho in rhos])
        d.plot(rhos, ratio, "-", color=COLOR[m], label=LABEL[m] + " (own update, median over snapshots/seeds)")
        d.plot(rhos[~bad], ratio[~bad], "o", color=COLOR[m])
        d.plot(rhos[bad], ratio[bad], "o", color=COLOR[m], mfc="white")
    for m in ("sgd", "adam"):
        final = np.exp(np.mean(np.log([r.final_loss for r in runs[m]])))
        c.axhline(final, color=COLOR[m], ls=":", lw=1.2, label=f"{LABEL[m]} (no damping)")
    if exact:
        rhos = sorted(exact[0]["gamma_damped"])
        ratio = [np.median([e["gamma_damped"][r] / e["closed_form"] for e in exact]) for r in rhos]
        d.plot(rhos, ratio, "s--", color=COLOR["exact"], label=f"exact NG at {len(exact)} fixed snapshots of the iEF runs")
    c.axvspan(1e-8, 1e-2, color="0.9", zorder=0, label="iEF claim range 1e-8 … 1e-2")
    for ax in (c, d):
        ax.set_xscale("log")
        ax.set_xlabel("damping ρ (EF/SF/exact: G + ρI; iEF: GGᵀ + ρI)")
    c.set_yscale("log")
    c.set_ylabel("final train cross-entropy (nats)")
    c.set_title("(c) final train loss vs damping (judged seeds, band min–max)", fontsize=10)
    c.legend(fontsize=8)
    d.set_yscale("log")
    d.axhline(1.0, color="0.5", lw=0.8)
    d.set_ylabel("γ / γ_NG (≥ 1)")
    d.plot([], [], "o", color="0.4", mfc="white", label="open: run diverged (snapshots before it)")
    d.set_title("(d) indicator vs damping", fontsize=10)
    d.legend(fontsize=8)
    return fig


__all__ = ["figure"]
