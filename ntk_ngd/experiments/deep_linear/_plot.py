"""The deep_linear figure: six panels (exact NG loss curves, its O(η²) coefficient, GD curves, per-step
gaps vs cond, closed form vs dense, norm of the per-layer form vs Moore–Penrose)."""
from __future__ import annotations

import math

import numpy as np

from ... import plotting
from ._constants import DENSE_TOL, FLOOR, RATIO_COEF

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _cond_label(c):
    return "1" if c == 1 else f"1e{int(round(math.log10(c)))}" if c > 1 else f"{c:g}"


def figure(cfg, depths, conds, lr, exact, gd, dense_rows):
    """The matplotlib figure from the runs keyed by (depth, cond) and the dense records."""
    from matplotlib.lines import Line2D

    fig, axes = plotting.figure(2, 3, figsize=(16, 9.2))
    cond_color = {c: plotting.COLORS[i % len(plotting.COLORS)] for i, c in enumerate(conds)}
    depth_marker = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(depths)}
    steps = int(cfg["steps"])

    # (a) exact NG loss curves
    ax = axes[0, 0]
    t = np.arange(steps + 1)
    every = max(1, steps // 10)
    k = 0
    for depth in depths:
        for cond in conds:
            r = exact[(depth, cond)]
            ax.plot(t, r["normalized_excess"], ls="none", marker=depth_marker[depth], color=cond_color[cond],
                    mfc="none", ms=5, markevery=(k % every, every))
            k += 1
    ax.plot(t, (1 - lr) ** (2 * t), "k-", lw=1.3, zorder=0)
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("excess loss (Loss_t − Loss*) / (Loss_0 − Loss*)")
    ax.set_title(f"(a) exact NG, η = {lr:g}: {len(depths) * len(conds)} runs (depths × conds) collapse\n"
                 "line: theory (1−η)^(2t); markers: measured",
                 fontsize=10)

    # (b) O(η²) coefficient vs cond
    ax = axes[0, 1]
    for depth in depths:
        xs = np.array(conds) * (1.0 + 0.08 * (depths.index(depth) - (len(depths) - 1) / 2))
        ax.plot(xs, [max(exact[(depth, c)]["max_deviation"], 1e-17) / lr ** 2 for c in conds],
                marker=depth_marker[depth], color="k", ls="-", lw=0.6, ms=6)
        small = [exact[(depth, c)] for c in conds]
        ax.plot(xs, [max(r["first_deviation_small_lr"], 1e-17) / r["small_lr"] ** 2 for r in small],
                marker=depth_marker[depth], color=plotting.COLORS[3], ls="none", mfc="none", ms=9)
    ax.axhline(RATIO_COEF, color="k", ls=":", lw=1)
    ax.text(conds[0], RATIO_COEF * 1.6, f"tolerance {RATIO_COEF:g}η²", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 1e3)
    ax.set_xlabel("condition number of Σ_x = XᵀX/N")
    ax.set_ylabel("|ρ_t − (1−η)²| / η²  (ρ_t = per-step excess ratio)")
    ax.set_title(f"(b) exact NG deviation from (1−η)² is O(η²), flat in cond\n"
                 f"black: max over steps at η = {lr:g}; open red: first step at η = {lr * float(cfg['order_factor']):g}",
                 fontsize=10)
    ax.text(0.03, 0.5, "top: depth ≥ 2, coefficient O(1) at both η → O(η²)\nbottom: depth 1, exact (linear in θ): "
            "rounding level", transform=ax.transAxes, fontsize=8, va="center")

    # (c) GD loss curves: depth 1 with exact theory, gd_plot_depth measured only
    ax = axes[0, 2]
    plot_depth = int(cfg["gd_plot_depth"]) if int(cfg["gd_plot_depth"]) in depths else depths[-1]
    for cond in conds:
        for depth, filled in ((1, True), (plot_depth, False)):
            if depth not in depths or (depth == 1 and plot_depth == 1 and not filled):
                continue
            r = gd[(depth, cond)]
            ex, tt = r["normalized_excess"], r["t"]
            keep = ex > FLOOR
            ax.plot(tt[keep], ex[keep], ls="none", marker=depth_marker[depth], color=cond_color[cond],
                    mfc=None if filled else "none", ms=5)
            if depth == 1:
                th, keep = r["exact_theory_normalized"], r["exact_theory_normalized"] > FLOOR
                ax.plot(r["theory_t"][keep], th[keep], "-", color=cond_color[cond], lw=1.1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 3)
    ax.set_xlabel("step t (GD, η_GD = 0.5/λ_max(Θ₀/N))")
    ax.set_ylabel("excess loss (Loss_t − Loss*) / (Loss_0 − Loss*)")
    ax.set_title(f"(c) gradient descent: filled depth 1 (lines: exact theory\nE_t = E_0(I−ηΣ_x)^t); "
                 f"open: depth {plot_depth} (measured)", fontsize=10)

    # (d) per-step gap vs cond: NG flat, GD ∝ 1/cond
    ax = axes[1, 0]
    ng_color, gd_color = plotting.COLORS[0], plotting.COLORS[3]
    for depth in depths:
        xs = np.array(conds) * (1.0 + 0.08 * (depths.index(depth) - (len(depths) - 1) / 2))
        ax.plot(xs, [exact[(depth, c)]["mean_gap"] for c in conds], ls="none", marker=depth_marker[depth],
                color=ng_color, ms=6)
        rs = [gd[(depth, c)] for c in conds]
        for x, r in zip(xs, rs):
            ax.plot([x], [r["late_gap"]], ls="none", marker=depth_marker[depth], color=gd_color, ms=6,
                    mfc=gd_color if r["asymptotic"] else "none")
        ax.plot(xs, [r["predicted_gap"] for r in rs], "-", color=gd_color, lw=0.8, alpha=0.8)
    ax.axhline(1 - (1 - lr) ** 2, color=ng_color, lw=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("condition number of Σ_x = XᵀX/N")
    ax.set_ylabel("per-step gap 1 − ρ  (ρ = excess-loss ratio)")
    ax.set_title("(d) convergence rate per step; blue: exact NG (line 1−(1−η)²),\n"
                 "red: GD late gap (lines 1−(1−η λ_min)²; open = not yet asymptotic)", fontsize=10)

    # (e) closed form vs dense
    ax = axes[1, 1]
    net_marker = {}
    for r in dense_rows:
        net_marker.setdefault(r["net"], MARKERS[len(net_marker) % len(MARKERS)])
    nets = list(net_marker)
    for r in dense_rows:
        dx = 0.07 * (conds.index(r["cond"]) - (len(conds) - 1) / 2) + 0.25 * (nets.index(r["net"]) - 1)
        x = depths.index(r["depth"]) + dx
        ax.plot([x], [max(r["end_to_end_error"], 1e-17)], ls="none", marker=net_marker[r["net"]],
                color=cond_color[r["cond"]], ms=5)
        ax.plot([x], [max(r["paper_end_to_end_error"], 1e-17)], ls="none", marker=net_marker[r["net"]],
                color=cond_color[r["cond"]], ms=7, mfc="none")
    ax.axhline(DENSE_TOL, color="k", ls=":", lw=1)
    ax.text(-0.4, DENSE_TOL * 2, f"tolerance {DENSE_TOL:g}", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 1e-5)
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("depth L (number of weight layers)")
    ax.set_ylabel("||ΔW − ΔW_dense|| / ||ΔW_dense||")
    ax.set_title("(e) end-to-end change vs dense Moore–Penrose pinv(F):\nfilled: closed form; "
                 "open: per-layer form (block-diag/L)", fontsize=10)

    # (f) norm ratio
    ax = axes[1, 2]
    for r in dense_rows:
        dx = 0.07 * (conds.index(r["cond"]) - (len(conds) - 1) / 2) + 0.25 * (nets.index(r["net"]) - 1)
        ax.plot([depths.index(r["depth"]) + dx], [r["norm_ratio"]], ls="none", marker=net_marker[r["net"]],
                color=cond_color[r["cond"]], ms=6)
    ax.axhline(1.0, color="k", lw=1.2)
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("depth L (number of weight layers)")
    ax.set_ylabel("||Δ_per-layer/L|| / ||Δ_MP||  (parameter norm)")
    ax.set_title("(f) same ΔW, different split: the per-layer form is longer\n"
                 "line: theory (= 1 at L = 1, ≥ 1 since MP is minimum-norm)", fontsize=10)
    top = max(r["norm_ratio"] for r in dense_rows)
    ax.set_ylim(1 - 0.05 * (top - 1), 1 + 1.45 * (top - 1) + 1e-3)
    ax.text(0.98, 0.97, "every cond gives the same ratio: with all widths ≥ D\nboth updates solve A(Δ) = E, "
            "which is Σ_x-free", transform=ax.transAxes, fontsize=8, ha="right", va="top")

    cond_handles = [Line2D([], [], color=cond_color[c], marker="o", ls="none", label=f"cond(Σ_x) = {_cond_label(c)}")
                    for c in conds]
    depth_handles = [Line2D([], [], color="0.3", marker=depth_marker[d], ls="none", mfc="none", label=f"depth {d}")
                     for d in depths]
    net_handles = [Line2D([], [], color="0.3", marker=net_marker[n], ls="none", label=n) for n in nets]
    fig.legend(handles=cond_handles + depth_handles, loc="outside lower center", ncol=len(conds) + len(depths),
               fontsize=8.5, title="colours in (a), (c), (e), (f) = input conditioning; marker shape in (a)–(d) = depth",
               title_fontsize=8.5)
    axes[1, 2].legend(handles=net_handles, loc="center left", fontsize=8, title="(e), (f) networks",
                      title_fontsize=8)
    n, d = int(cfg["n"]), int(cfg["in_dim"])
    fig.suptitle(f"Deep linear networks (N = {n}, D = {d}, C = {cfg['out_dim']}, hidden width {cfg['width']}): "
                 "exact natural gradient converges at a curvature-independent rate", fontsize=12)
    return fig


__all__ = ["figure"]
