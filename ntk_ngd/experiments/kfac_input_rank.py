"""Figure `kfac_input_rank`: K-FAC is isotropic only when the first layer's input Gram has full
rank, D + 1 ≥ N (THEORY.md claim 3, first-layer condition).

At ρ → 0, K-FAC's layer l contributes [N·P^H_l] ⊙ [N·P^Δ_l]/N with P the projectors onto the
ranges of K^H_l and K^Δ_l. Hidden layers 2..L−1 (full-rank Grams) give N·I each, the readout gives
I (one common learning rate, ``kfac_readout="common"``). The first layer's K^H_1 = X̃X̃ᵀ with
X̃ = [σ_w X/√D, σ_b·1] has rank min(N, D+1):

* D + 1 ≥ N: P^H_1 = I, the first layer gives N·I and Θ_kfac = (N(L−1)+1)·I (isotropic).
* D + 1 < N: P^H_1 = hat matrix of X̃ and P^Δ_1 = I, so the first layer gives N·diag(hat) =
  N·diag(leverage scores of X̃): Θ_kfac = diag(N(L−2) + 1 + N·lev_n), diagonal, not isotropic.

The theory line uses leverage scores from a Householder QR of X̃ written here (lev_n = ||Q_n||²),
independent of the package's kernels and of its SVD-based ``leverage_scores``. A Forster
transform (``forster_transform(X, append_one=True)``, fed with its D+1 columns to a bias-free
network) makes every leverage score (D+1)/N, restoring isotropy with α = N(L−2) + 1 + (D+1).
"""
from __future__ import annotations

import math

import numpy as np

from .. import datasets, plotting
from ..diagnostics import isotropy
from ..function_space import preconditioned_kernel
from ..networks import mlp
from ..preprocessing import forster_transform, leverage_scores
from ._base import (ExperimentResult, check_below, check_range, control_below, control_range, identity,
                    progress as _progress)

PROFILES = {
    "tiny": {"n": 12, "depth": 3, "width": 64, "in_dims": [3, 5, 10, 11, 15, 23], "seeds": [0],
             "forster_min_ratio": 1.3},
    "quick": {"n": 32, "depth": 3, "width": 512, "in_dims": [3, 5, 7, 11, 15, 23, 30, 31, 47, 63, 127],
              "seeds": [0, 1], "forster_min_ratio": 1.3},
    "full": {"n": 256, "depth": 3, "width": 4096,
             "in_dims": [3, 7, 15, 31, 63, 127, 191, 254, 255, 383, 511, 1023], "seeds": [0, 1],
             "forster_min_ratio": 1.3},
}
#: ``forster_min_ratio``: the Forster transform is applied where N/(D+1) >= this. Near D+1 = N the
#: package's fixed-point iteration converges slowly (N=32, D+1=31: ~25 s; N=256, D+1=128: ~45 s,
#: D+1=192: ~100 s on a shared 2-core CPU), and at D+1 >= N the raw inputs are already isotropic.

#: floating point throughout: K-FAC's Gram-form projectors and the Householder QR are backward stable, so
#: every equality below holds to κ·eps with κ ≤ 1e6 on these Grams (≲ 2e-10); NT's infinite-width ReLU
#: kernel is accurate to ~√eps on its diagonal only, which the projectors do not amplify
DIAG_TOL = 1e-9
OFF_DIAG_TOL = 1e-10
#: the isotropy tolerance of every figure; "not isotropic" (D + 1 < N) means a deviation above it, and the
#: size of the break is checked against the leverage-score prediction, not against a hand-set floor
ISO_TOL = 1e-8
FP_MODEL = "floating point: kappa*eps of the Gram-form projectors and the QR, kappa <= 1e6: tolerance {:g}"


def _qr_leverage(A) -> np.ndarray:
    """Leverage scores of the rows of A (rank min(N, cols) assumed): row norms² of Q from a QR."""
    Q, _ = np.linalg.qr(np.asarray(A, dtype=float), mode="reduced")
    return np.sum(Q**2, axis=1)


def _deviation_of_diagonal(d) -> float:
    """||diag(d) − mean(d) I||_F / ||mean(d) I||_F, written out (no package code)."""
    d = np.asarray(d, dtype=float)
    return float(np.sqrt(np.mean((d - d.mean()) ** 2)) / abs(d.mean()))


def _measure(net, X, params, prediction):
    K = np.asarray(preconditioned_kernel(net, X, "kfac", params=params))
    iso = isotropy(K)
    diag = np.diag(K)
    return {
        "alpha": iso.alpha,
        "deviation": iso.deviation,
        "off_diagonal": iso.off_diagonal,
        "diag": diag,
        "prediction": prediction,
        "diag_rel_error": float(np.max(np.abs(diag - prediction) / prediction)),
        "predicted_deviation": _deviation_of_diagonal(prediction),
    }


def run(config: dict, out_dir) -> ExperimentResult:
    n, depth, width = int(config["n"]), int(config["depth"]), int(config["width"])
    in_dims = [int(d) for d in config["in_dims"]]
    seeds = [int(s) for s in config["seeds"]]
    base = n * (depth - 2) + 1  # hidden layers 2..L-1 give N each, the readout 1

    records = []
    jobs = [(D, s) for D in in_dims for s in seeds]
    nets = {}
    lev_pkg_diff = 0.0
    for D, seed in _progress(jobs, len(jobs), "kfac_input_rank"):
        if D not in nets:  # one network object per D: its jit cache is reused across seeds
            nets[D] = (mlp(depth=depth, width=width, in_dim=D),
                       mlp(depth=depth, width=width, in_dim=D + 1, bias=False)
                       if n / (D + 1) >= float(config.get("forster_min_ratio", 1.0)) else None)
        net, net_forster = nets[D]
        X = datasets.sphere(n, D, seed)
        Xt = np.concatenate([net.w_std * X / math.sqrt(D), np.full((n, 1), net.b_std)], axis=1)
        lev = _qr_leverage(Xt)
        lev_pkg_diff = max(lev_pkg_diff, float(np.max(np.abs(lev - leverage_scores(Xt)))))
        prediction = base + n * lev  # = N(L−1)+1 for every n when D+1 >= N (all scores 1)
        common = {"in_dim": D, "seed": seed, "ratio": n / (D + 1), "rank_deficient": D + 1 < n, "leverage": lev}
        for label, params in (("finite", net.init(seed)), ("infinite", None)):
            records.append({**common, "inputs": "raw", "width": label, **_measure(net, X, params, prediction)})
        if net_forster is not None:
            XF = forster_transform(X, append_one=True)
            lev_f = _qr_leverage(XF)  # bias-free first layer: X̃ = σ_w XF/√(D+1), same column space
            pred_f = base + n * lev_f
            for label, params in (("finite", net_forster.init(seed)), ("infinite", None)):
                records.append({**common, "inputs": "forster", "width": label, "leverage": lev_f,
                                **_measure(net_forster, XF, params, pred_f)})

    raw = [r for r in records if r["inputs"] == "raw"]
    broken = [r for r in raw if r["rank_deficient"]]
    full = [r for r in raw if not r["rank_deficient"]]
    forster = [r for r in records if r["inputs"] == "forster"]
    checks = _checks(raw, broken, full, forster, n, depth, base, config, nets)
    fig = _plot(records, config, base)
    data = {
        "records": records,
        "qr_vs_package_leverage_max_abs_diff": lev_pkg_diff,
        "theory": {"isotropic_alpha": n * (depth - 1) + 1, "diag_formula": "N(L-2) + 1 + N * leverage_n",
                   "kfac_readout": "common"},
    }
    png, js = plotting.save(fig, "kfac_input_rank", data, out_dir, config=config)
    summary = (f"D+1<N: deviation {min(r['deviation'] for r in broken):.2g}..{max(r['deviation'] for r in broken):.2g}"
               f" (diag matches leverage theory to {max(r['diag_rel_error'] for r in broken):.0e}); "
               if broken else "")
    summary += (f"D+1>=N: max deviation {max(r['deviation'] for r in full):.0e}; " if full else "")
    summary += f"Forster: max deviation {max(r['deviation'] for r in forster):.0e}" if forster else ""
    return ExperimentResult("kfac_input_rank", png, js, checks, summary, 0.0)


def _checks(raw, broken, full, forster, n, depth, base, config, nets):
    """The claims of the module docstring; each family has a negative control: the same comparison on records
    where the claim does not hold (the other side of D + 1 = N, or gd's kernel)."""
    fp = lambda tol: FP_MODEL.format(tol)  # noqa: E731
    iso_alpha = n * (depth - 1) + 1
    checks = []
    if broken:
        iso_diag_err = max(float(np.max(np.abs(r["diag"] - iso_alpha) / iso_alpha)) for r in broken)
        checks += [
            check_below("D+1 < N: max |diag(K) - (N(L-2)+1+N*leverage)| / prediction (leverage from a QR of X~)",
                        max(r["diag_rel_error"] for r in broken), DIAG_TOL, error_model=fp(DIAG_TOL), expect="breaks",
                        controls=[control_below("the same diagonal against the full-rank theory N(L-1)+1",
                                                iso_diag_err, DIAG_TOL, kind="wrong_theory")]).about("leverage-score diagonal", "kfac"),
            check_below("D+1 < N: max |deviation - deviation predicted from leverage scores| (both relative to alpha)",
                        max(abs(r["deviation"] - r["predicted_deviation"]) for r in broken), ISO_TOL,
                        error_model=fp(ISO_TOL), expect="breaks",
                        controls=[control_below("the measured deviation against the full-rank theory (0)",
                                                max(r["deviation"] for r in broken), ISO_TOL,
                                                kind="wrong_theory")])
            .about("leverage-score diagonal", "kfac"),
            check_range("D+1 < N: min deviation ||K - alpha I||/||alpha I|| (diagonal but NOT isotropic: above the "
                        "isotropy tolerance)", min(r["deviation"] for r in broken), ISO_TOL, math.inf,
                        "> 1e-8 (leverage spread)", error_model=fp(ISO_TOL), expect="breaks",
                        controls=[control_range("the D+1 >= N records", max(r["deviation"] for r in full), ISO_TOL,
                                                math.inf, kind="other_data")] if full else ()).about("isotropy vs input rank", "kfac"),
        ]
    net0 = nets[int(config["in_dims"][0])][0]
    X0 = datasets.sphere(n, int(config["in_dims"][0]), int(config["seeds"][0]))
    gd = isotropy(np.asarray(preconditioned_kernel(net0, X0, "gd")))
    checks.append(check_below("max off-diagonal ||K - diag K||_F/||alpha I||_F, raw inputs, every D",
                              max(r["off_diagonal"] for r in raw), OFF_DIAG_TOL, error_model=fp(OFF_DIAG_TOL),
                              controls=[control_below("gd's kernel on the first D", gd.off_diagonal, OFF_DIAG_TOL,
                                                      kind="other_method")])
                  .about("K-FAC kernel diagonal", "kfac"))
    if full:
        checks += [
            check_below("D+1 >= N: max deviation ||K - alpha I||/||alpha I|| (isotropic)",
                        max(r["deviation"] for r in full), ISO_TOL, error_model=fp(ISO_TOL),
                        controls=[control_below("the D+1 < N records", min(r["deviation"] for r in broken), ISO_TOL,
                                                kind="broken_condition")]
                        if broken else ()).about("isotropy vs input rank", "kfac"),
            check_below(f"D+1 >= N: max |alpha - (N(L-1)+1)| / (N(L-1)+1), N(L-1)+1 = {iso_alpha}",
                        max(abs(r["alpha"] - iso_alpha) / iso_alpha for r in full), DIAG_TOL, error_model=fp(DIAG_TOL),
                        controls=[control_below("the D+1 < N records", max(abs(r["alpha"] - iso_alpha) / iso_alpha
                                                                         for r in broken), DIAG_TOL,
                                                kind="broken_condition")]
                        if broken else ()).about("isotropy vs input rank", "kfac"),
        ]
    if forster:
        raw_same = [r for r in broken if r["in_dim"] in {f["in_dim"] for f in forster}]
        checks += [
            check_below("Forster-transformed inputs (bias-free net, in_dim D+1): max deviation, every "
                        f"N/(D+1) >= {config.get('forster_min_ratio', 1.0):g}",
                        max(r["deviation"] for r in forster), ISO_TOL, error_model=fp(ISO_TOL),
                        controls=[control_below("the raw inputs at the same D", max(r["deviation"] for r in raw_same),
                                                ISO_TOL, kind="broken_condition")] if raw_same else ()).about("Forster repair", "kfac"),
            identity(check_below("Forster: max |alpha - (N(L-2)+1+(D+1))| / (N(L-2)+1+(D+1)) (the first layer's "
                                 "projector has trace rank [X, 1] = D+1 for any inputs)",
                                 max(abs(r["alpha"] - (base + r["in_dim"] + 1)) / (base + r["in_dim"] + 1)
                                     for r in forster), DIAG_TOL, error_model=fp(DIAG_TOL))).about("trace identity"),
        ]
    return checks


def _plot(records, config, base):
    n, depth, width = config["n"], config["depth"], config["width"]
    fig, axes = plotting.figure(
        1, 3, figsize=(16, 5.2),
        title=f"K-FAC kernel vs first-layer input rank (N={n}, L={depth}, finite width M={width} and infinite width, "
              f"seeds {list(config['seeds'])})")
    floor = 1e-17
    style = {("raw", "finite"): dict(marker="o", color=plotting.COLORS[0], mfc="none", ls="none", ms=7),
             ("raw", "infinite"): dict(marker="x", color=plotting.COLORS[3], ls="none", ms=6),
             ("forster", "finite"): dict(marker="s", color=plotting.COLORS[2], mfc="none", ls="none", ms=7),
             ("forster", "infinite"): dict(marker="+", color=plotting.COLORS[4], ls="none", ms=8)}
    names = {("raw", "finite"): f"measured, M={width}", ("raw", "infinite"): "measured, M=∞",
             ("forster", "finite"): f"Forster inputs, M={width}", ("forster", "infinite"): "Forster inputs, M=∞"}
    fmin = config.get("forster_min_ratio", 1.0)
    names = {k: (v + f" (where N/(D+1) ≥ {fmin:g})" if k[0] == "forster" else v) for k, v in names.items()}

    ax = axes[0]
    ax.axvspan(1, 1e3, color="0.92", zorder=0)
    ax.axvline(1, color="0.4", ls="--", lw=1)
    for seed in config["seeds"]:
        sel = sorted({(r["ratio"], r["predicted_deviation"]) for r in records
                      if r["inputs"] == "raw" and r["rank_deficient"] and r["seed"] == seed})
        if sel:
            ax.plot(*zip(*sel), "-", color="k", lw=1, alpha=0.7,
                    label="theory: leverage scores (QR of X~)" if seed == config["seeds"][0] else None)
    for key, st in style.items():
        sel = [r for r in records if (r["inputs"], r["width"]) == key]
        ax.plot([r["ratio"] for r in sel], [max(r["deviation"], floor) for r in sel], label=names[key], **st)
    ax.axhline(ISO_TOL, color="0.3", ls=":", lw=1)
    ratios = [r["ratio"] for r in records]
    lo, hi = min(ratios) / 1.5, max(ratios) * 1.5
    ax.set_xlim(lo, hi)
    ax.text(lo * 1.1, ISO_TOL * 3, "isotropy tol. 1e-8", fontsize=8, color="0.3")
    ax.text(1.08, 1e-6, "D+1 < N:\nrank(X~) < N,\ndiagonal, not isotropic", fontsize=8)
    ax.text(lo * 1.1, 1e-6, "D+1 ≥ N:\ntheory exactly\nisotropic (0)", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(floor, 10)
    ax.set_xlabel("N / (D+1)  (samples per first-layer input dimension)")
    ax.set_ylabel("relative deviation ||Θ_kfac − αI||_F / ||αI||_F")
    ax.set_title("deviation from isotropy (exact 0 drawn at 1e-17)", fontsize=10)
    ax.legend(handles=[h for h in ax.get_legend_handles_labels()[0] if h.get_label().startswith("theory")],
              loc="upper left", fontsize=7.5)

    ax = axes[1]
    pts = [(p, d, key) for r in records for key in [(r["inputs"], r["width"])]
           for p, d in zip(r["prediction"], r["diag"])]
    for key, st in style.items():
        sel = [(p, d) for p, d, k in pts if k == key]
        if sel:
            ax.plot(*zip(*sel), **{**st, "ms": st["ms"] - 2, "alpha": 0.7}, label=names[key])
    vals = [v for p, d, _ in pts for v in (p, d)]
    lims = [min(vals) - 1, max(vals) + 1]
    ax.plot(lims, lims, "-", color="k", lw=1, label="identity (theory)")
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    ax.set_xlabel(f"theory N(L−2) + 1 + N·leverage_n  (= {base} + {n}·lev)")
    ax.set_ylabel("diag(Θ_kfac)_n  (measured)")
    ax.set_title("per-sample diagonal vs leverage-score theory", fontsize=10)
    ax.legend(handles=[h for h in ax.get_legend_handles_labels()[0] if h.get_label().startswith("identity")],
              loc="upper left", fontsize=7.5)

    ax = axes[2]
    for key, st in style.items():
        sel = [r for r in records if (r["inputs"], r["width"]) == key]
        ax.plot([r["ratio"] for r in sel], [max(r["diag_rel_error"], floor) for r in sel], label=names[key], **st)
        ax.plot([r["ratio"] for r in sel], [max(r["off_diagonal"], floor) for r in sel],
                **{**st, "marker": "v" if key[0] == "raw" else "^", "mfc": "none", "ms": 5, "alpha": 0.6})
    ax.axhline(DIAG_TOL, color="0.3", ls=":", lw=1)
    ax.axhline(OFF_DIAG_TOL, color="0.3", ls="-.", lw=1)
    ax.text(hi / 1.6, DIAG_TOL * 2, "diag tol. 1e-9", fontsize=8, color="0.3", ha="right")
    ax.text(hi / 1.6, OFF_DIAG_TOL / 8, "off-diag tol. 1e-10", fontsize=8, color="0.3", ha="right")
    ax.axvline(1, color="0.4", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(floor, 1e-6)
    ax.set_xlabel("N / (D+1)  (samples per first-layer input dimension)")
    ax.set_ylabel("error (relative to theory / to α)")
    ax.set_title("max |diag − theory|/theory (big markers);\noff-diagonal ||K − diag K||/||αI|| (triangles)",
                 fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if not lab.startswith("theory")]
    fig.legend(*zip(*keep), loc="outside lower center", ncol=len(keep), fontsize=9)
    for ax in (axes[0], axes[2]):
        _ratio_ticks(ax, lo, hi)
    return fig


def _ratio_ticks(ax, lo, hi):
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = [t for t in (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16, 32, 64, 128) if lo <= t <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" if t >= 1 else f"1/{round(1 / t)}" for t in ticks])


__all__ = ["PROFILES", "run"]
