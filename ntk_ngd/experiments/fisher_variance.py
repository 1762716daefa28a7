"""Figure `fisher_variance`: variance of the two Fisher estimators (Soen & Sun 2021) and the scatter of
the sampled-Fisher step it causes (THEORY.md "Variance of Fisher estimators", claim 7).

(a, b) Total variance E||F̂ − F||²_F = Σ_ij Var(F̂)_ij of F̂₁ (squared score) and F̂₂ (negative Hessian)
    vs the number k of sampled targets per input, for the Gaussian/MSE model (a) and the softmax model
    (b), on a small erf MLP (P ≤ ~60) at a few inputs. Markers: Monte Carlo (``sample_estimates``: jax.grad
    and jax.hessian of every sampled log p), each point the variance over R independent replicates with
    a standard error from B independent batches (error bars: ±2 SE). Lines: the closed forms
    (``closed_form_variance``), slope −1.
(c) Element-wise: Monte Carlo Var(F̂)_ij vs the closed form at k = 1, every entry, both models and
    estimators (entries whose closed-form variance is 0, e.g. F̂₂ on the readout weights, where f is
    linear in θ, are checked to be 0 to round-off and not drawn).
(d) The per-entry z-scores (Monte Carlo − closed form)/SE of (c), against the standard normal.
(e) The SF step on the training points at infinite width (``sampled_fisher_steps``, the library's
    ``sf`` kernel, one noise seed per draw) scatters around exact NG's: E||Δf_SF − Δf_NG||²/||Δf_NG||²
    vs k. At ρ = 0 the closed form (2k + 8)/((k − 2)(k − 4)) (infinite for k ≤ 4: the sample mean
    does not settle there); at ρ > 0, around the damped exact-NG step −ηΘ(Θ + Nρ)⁻¹r (numpy on NT's
    kernel_fn), finite for every k, against the first-order-in-1/k closed form.
(f) 1 − mean cos(Δf_SF, Δf_NG) vs k with its first-order closed form at this N and, at ρ = 0, the
    N → ∞ limit 1 − √((k − 4)/(k − 2)).
Checks: MC vs closed form within 3 SE (totals), every entry within the Bonferroni bound at family-wise level
1e-3 over its entries (z ≈ 5 for ~2000), unbiasedness, zero-variance entries, slopes within 3 SE, SF scatter and
mean step at ρ = 0 for k > 8 (the m-th moment of (1/q − 1)² is finite only for k > 4m: the mean within its SE
needs m = 2) and at ρ > 0 at the largest k. Each family has a negative control of a stated kind (the MC total of
the neighbouring k: other data; the closed form for another k, 2× the Fisher, a rival exponent: wrong theory;
the non-zero entries: other data; F̂₁'s spread: other method).
"""
from __future__ import annotations

import math

import numpy as np

from .. import datasets, fisher_variance as fv, plotting
from ..kernels import layer_kernels
from ..networks import mlp
from ._base import (ExperimentResult, check_below, check_range, control_below, control_range, progress,
                    single_thread_blas)


def _z_entry(n_entries: int) -> float:
    """Bonferroni bound for the max |z| over ``n_entries`` entries at family-wise level ENTRY_LEVEL."""
    from scipy.stats import norm

    return float(norm.isf(ENTRY_LEVEL / (2 * max(n_entries, 1))))


MC = "Monte Carlo: {:g} standard errors from {} independent batches"

_FISHER = {"in_dim": 3, "depth": 2, "activation": "erf", "out_dims": {"gaussian": 2, "softmax": 3}, "seed": 0}
PROFILES = {
    "tiny": {**_FISHER, "n_inputs": 2, "width": 5, "ks": [1, 4, 16], "replicates": 400, "batches": 20,
             "sf": {"n": 16, "in_dim": 4, "depth": 3, "ks": [1, 4, 32, 128], "seeds": 100, "dampings": [0.0, 1e-2]}},
    "quick": {**_FISHER, "n_inputs": 2, "width": 6, "ks": [1, 2, 4, 8, 16, 32], "replicates": 1000, "batches": 50,
              "sf": {"n": 32, "in_dim": 8, "depth": 3, "ks": [1, 2, 4, 8, 16, 32, 64, 128, 256], "seeds": 250,
                     "dampings": [0.0, 1e-3, 1e-2]}},
    "full": {**_FISHER, "n_inputs": 4, "width": 8, "ks": [1, 2, 4, 8, 16, 32, 64], "replicates": 10000,
             "batches": 200,
             "sf": {"n": 64, "in_dim": 8, "depth": 3, "ks": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512], "seeds": 2000,
                    "dampings": [0.0, 1e-3, 1e-2]}},
}

#: A Monte Carlo total (or mean step) must lie within this many standard errors of its closed form.
Z_TOTAL = 3.0
#: Every entry within z_K SE, z_K the Bonferroni bound at family-wise level 1e-3 over the K entries of a check
#: (K ≈ 2000: z_K = 5.0); correlated entries only make the maximum smaller.
ENTRY_LEVEL = 1e-3
#: At ρ = 0 the m-th moment of the per-point scatter S = (1/q − 1)² is finite only for k > 4m. A mean of S
#: within Z_TOTAL standard errors needs Var S finite (m = 2: k > 8): the CLT then holds and the sample variance
#: is a consistent estimate of Var S (strong law on S², which needs only E S² < ∞). So the ρ = 0 checks use
#: every k > 8 on the grid (issue 19, item 4: the earlier cut k > 16 asked for m = 4, more than the argument
#: needs, and excluded exactly the grid point that had failed).
SF_MIN_K = 9
#: The ρ > 0 slope is compared with −1 (first order in 1/k); the O(1/k²) terms bend it by at most what they
#: do at ρ = 0, where the closed form is exact: that bend, computed over the same ks, is allowed on top of 3 SE.
#: A total outside Z_TOTAL SE is recorded here: the band is not Bonferroni-corrected and the squared-score total is
#: heavy-tailed, so its measured false-alarm rate exceeds the nominal 0.27% (docs/THEORY.md).
FINDING_TOTALS = "finding-mc-totals"
ESTIMATORS = (("score", "F̂₁ (squared score)"), ("hessian", "F̂₂ (−Hessian)"))


def run(config: dict, out_dir) -> ExperimentResult:
    with single_thread_blas():
        return _run(config, out_dir)


def _slope(ks, values, ses=None):
    """Least-squares slope of log(values) vs log(ks), weighted by 1/σ_log = value/SE when SEs are given,
    and its standard error (from those SEs)."""
    x, y = np.log(np.asarray(ks, float)), np.log(np.asarray(values, float))
    w = np.ones_like(x) if ses is None else (np.asarray(values, float) / np.asarray(ses, float)) ** 2
    xm = np.sum(w * x) / np.sum(w)
    sxx = np.sum(w * (x - xm) ** 2)
    slope = float(np.sum(w * (x - xm) * (y - np.sum(w * y) / np.sum(w))) / sxx)
    return slope, (float(1 / np.sqrt(sxx)) if ses is not None else math.nan)


# ---------------------------------------------------------------------------------------------
# estimators (panels a–d)
# ---------------------------------------------------------------------------------------------
def _fisher_part(config, checks):
    X = datasets.sphere(config["n_inputs"], config["in_dim"], seed=config["seed"])
    out, ks, setup = {}, [int(k) for k in config["ks"]], {}
    for model in fv.MODELS:
        net = mlp(depth=config["depth"], width=config["width"], in_dim=config["in_dim"],
                  out_dim=config["out_dims"][model], activation=config["activation"])
        f, theta = fv.flat_network(net, net.init(config["seed"]))
        d = fv.network_derivatives(f, theta, X)
        setup[model] = (f, theta, d, np.asarray(fv.exact_fisher(model, d)))
        out[model] = {"num_params": int(theta.shape[0]), "C": net.out_dim, "ks": ks,
                      **{e: {"mc_total": [], "mc_total_se": [], "theory_total": []} for e, _ in ESTIMATORS}}
    jobs = [(m, k) for m in fv.MODELS for k in ks]
    for i, (model, k) in enumerate(progress(jobs, desc="fisher_variance: Monte Carlo")):
        f, theta, d, F = setup[model]
        theory = fv.closed_form_variance(model, d, samples=k)
        draws = fv.sample_estimates(model, f, theta, X, k, config["replicates"], seed=1000 * config["seed"] + i)
        for (est, label), E, v in zip(ESTIMATORS, draws, theory):
            mc, v = fv.monte_carlo(E, config["batches"]), np.asarray(v)
            rec = out[model][est]
            rec["mc_total"].append(mc.total_var)
            rec["mc_total_se"].append(mc.total_var_se)
            rec["theory_total"].append(float(v.sum()))
            if k != ks[0]:
                continue
            z_var = fv.z_scores(mc.var, v, mc.var_se, v)
            z_mean = fv.z_scores(mc.mean, F, mc.mean_se, v)
            zero = ~np.isfinite(z_var)
            rec.update(entries_mc=mc.var[~zero], entries_theory=v[~zero], entries_z=z_var[~zero],
                       entries_mean_z=z_mean[~zero], zero_variance_entries=int(zero.sum()),
                       frac_abs_z_above_3=float(np.mean(np.abs(z_var[~zero]) > 3)))
            z_entry = _z_entry(int((~zero).sum()))
            z_wrong = fv.z_scores(mc.var, 1.5 * v, mc.var_se, v)
            z_biased = fv.z_scores(mc.mean, 2.0 * F, mc.mean_se, v)
            model_e = f"Monte Carlo: Bonferroni bound z = {z_entry:.2f} at family-wise level {ENTRY_LEVEL:g}"
            checks.append(check_below(f"{model} {label}, k={k}: max_ij |z| of MC Var_ij vs closed form over "
                                      f"{int((~zero).sum())} entries (fraction |z|>3: "
                                      f"{rec['frac_abs_z_above_3']:.3f})", np.max(np.abs(z_var[~zero])), z_entry,
                                      error_model=model_e,
                                      controls=[control_below("against 1.5x the closed form", np.max(np.abs(
                                          z_wrong[~zero])), z_entry, kind="wrong_theory")])
                          .about("Fisher estimator variance (closed forms)"))
            checks.append(check_below(f"{model} {label}, k={k}: unbiased, max_ij |z| of MC mean vs exact Fisher "
                                      "J^T Lambda J", np.max(np.abs(z_mean[~zero])), z_entry, error_model=model_e,
                                      controls=[control_below("against 2 x the exact Fisher",
                                                              np.max(np.abs(z_biased[~zero])), z_entry,
                                                              kind="wrong_theory")])
                          .about("Fisher estimators unbiased"))
            if zero.any():  # deterministic entries: MC spread must be round-off, MC mean must equal F
                scale = max(float(np.max(np.abs(F))), 1e-300)
                dev = max(float(np.max(np.sqrt(mc.var[zero]))), float(np.max(np.abs(mc.mean[zero] - F[zero]))))
                others = ~zero
                checks.append(check_below(f"{model} {label}: {int(zero.sum())} entries with closed-form variance 0 "
                                          "(f linear in those weights): MC std and |mean - F| / max|F|",
                                          dev / scale, 1e-12, error_model="floating point: 1e-12 relative",
                                          controls=[control_below("the entries with non-zero closed-form variance",
                                                                  float(np.max(np.sqrt(mc.var[others]))) / scale,
                                                                  1e-12, kind="other_data")])
                              .about("deterministic entries"))
    for model in fv.MODELS:
        for est, label in ESTIMATORS:
            checks += _total_checks(out[model][est], f"{model} {label}", ks, config["batches"])
    for model in fv.MODELS:
        for est, label in ESTIMATORS:
            rec = out[model][est]
            s, s_se = _slope(ks, rec["mc_total"], rec["mc_total_se"])
            rec["slope"], rec["slope_se"] = s, s_se
            checks.append(check_range(f"{model} {label}: log-log slope of MC total variance vs k (SE {s_se:.3f})",
                                      s, -1.0 - Z_TOTAL * s_se, -1.0 + Z_TOTAL * s_se, -1.0,
                                      error_model=f"Monte Carlo: {Z_TOTAL:g} SE of the weighted slope",
                                      controls=[control_range("the same slope against the standard error's rate -1/2",
                                                              s, -0.5 - Z_TOTAL * s_se, -0.5 + Z_TOTAL * s_se,
                                                              kind="wrong_theory", wrong_theory=-0.5)])
                          .about("Fisher estimator variance (closed forms)"))
    # a model linear in θ (one Dense layer): F̂₂ is deterministic, F̂₁ is not
    lin = {}
    for model in fv.MODELS:
        net = mlp(depth=1, in_dim=config["in_dim"], out_dim=config["out_dims"][model])
        f, theta = fv.flat_network(net, net.init(config["seed"]))
        F1, F2 = fv.sample_estimates(model, f, theta, X, 1, 2 * config["batches"], seed=7)
        s1, s2 = float(np.max(np.std(np.asarray(F1), 0))), float(np.max(np.std(np.asarray(F2), 0)))
        lin[model] = {"max_std_score": s1, "max_std_hessian": s2}
        checks.append(check_below(f"{model}, linear model f = W x + b: max_ij std of F^2 (MC) "
                                  f"[F^1's is {s1:.2g}]", s2, 1e-12 * max(s1, 1e-300),
                                  error_model="floating point: 1e-12 of the F^1 scale",
                                  controls=[control_below("F^1's std", s1, 1e-12 * max(s1, 1e-300), kind="other_method")])
                      .about("deterministic entries"))
    out["linear_model"] = lin
    return out


def _total_checks(rec, label, ks, batches) -> list:
    """Per k: the MC total E||F̂ − F||² within Z_TOTAL SE of its closed form. Control (other data): the MC total
    of the neighbouring k on the grid (an independent run with another number of samples) through this k's band."""
    out = []
    for i, k in enumerate(ks):
        total, se, th = rec["mc_total"][i], rec["mc_total_se"][i], rec["theory_total"][i]
        j = i + 1 if i + 1 < len(ks) else i - 1
        lo, hi = th - Z_TOTAL * se, th + Z_TOTAL * se
        out.append(check_range(f"{label}, k={k}: MC E||F^-F||_F^2 (z = {(total - th) / se:+.2f}) within "
                               f"{Z_TOTAL:g} SE of closed form", total, lo, hi, float(th),
                               error_model=MC.format(Z_TOTAL, batches), finding=FINDING_TOTALS,
                               controls=[control_range(f"the MC total at k={ks[j]} through this band",
                                                       rec["mc_total"][j], lo, hi, kind="other_data")])
                   .about("Fisher estimator variance (closed forms)"))
    return out


# ---------------------------------------------------------------------------------------------
# the sampled-Fisher step (panels e–f)
# ---------------------------------------------------------------------------------------------
def _sf_part(config, checks):
    c = config["sf"]
    n, ks = c["n"], [int(k) for k in c["ks"]]
    X, Y = datasets.synthetic(n, c["in_dim"], seed=config["seed"])
    net = mlp(depth=c["depth"], width=512, in_dim=c["in_dim"])
    lk = layer_kernels(net, X)  # infinite width
    theta = np.asarray(net.kernel_fn(X, X, "ntk"), dtype=float)  # NT, independent of lk for the reference
    r = -Y.reshape(-1)  # infinite width starts from f_0 = 0
    out = {"n": n, "ks": ks, "weights_sum_r4": float(np.sum(r**4) / np.sum(r**2) ** 2)}
    jobs = [(rho, k) for rho in c["dampings"] for k in ks]
    res = {rho: {"scatter": [], "scatter_se": [], "one_minus_cos": [], "one_minus_cos_se": [], "mean_ratio": [],
                 "mean_ratio_se": [], "leading_scatter": [], "leading_one_minus_cos": []} for rho in c["dampings"]}
    for i, (rho, k) in enumerate(progress(jobs, desc="fisher_variance: SF steps")):
        ref = theta @ np.linalg.solve(theta + n * rho * np.eye(n), r) if rho > 0 else r
        seeds = range((i + 1) * 100_000, (i + 1) * 100_000 + c["seeds"])  # independent draws per (ρ, k)
        steps = fv.sampled_fisher_steps(lk, r, k, rho, seeds)
        sc = np.sum((steps - ref) ** 2, axis=1) / (ref @ ref)
        cos = steps @ ref / (np.linalg.norm(steps, axis=1) * np.linalg.norm(ref))
        ratio = steps @ ref / (ref @ ref)
        lo = fv.sf_scatter_leading_order(theta, r, rho, k)
        rec, se = res[rho], lambda a: float(np.std(a, ddof=1) / math.sqrt(a.size))  # noqa: E731
        for key, a in (("scatter", sc), ("one_minus_cos", 1 - cos), ("mean_ratio", ratio)):
            rec[key].append(float(np.mean(a)))
            rec[f"{key}_se"].append(se(a))
        rec["leading_scatter"].append(lo[0])
        rec["leading_one_minus_cos"].append(lo[1])
        if rho == 0 and k >= SF_MIN_K:
            for name, a, th in (("E||df_SF - df_NG||^2/||df_NG||^2", sc, fv.sf_scatter_exact(k)),
                                ("E[df_SF . df_NG]/||df_NG||^2 (mean step)", ratio, fv.sf_mean_step_ratio(k))):
                m, s = float(np.mean(a)), se(a)
                wrong = fv.sf_scatter_exact(2 * k) if "scatter" in name else fv.sf_mean_step_ratio(k // 4)
                checks.append(check_range(f"SF rho=0, k={k}: {name} (z = {(m - th) / s:+.2f}) within {Z_TOTAL:g} SE "
                                          "of closed form", m, th - Z_TOTAL * s, th + Z_TOTAL * s, th,
                                          error_model=f"Monte Carlo: {Z_TOTAL:g} SE over {c['seeds']} draws (k > 8: "
                                                      "the scatter's variance is finite)",
                                          controls=[control_range("against the closed form for " + (
                                              "2k" if "scatter" in name else "k/4"), m, wrong - Z_TOTAL * s,
                                              wrong + Z_TOTAL * s, kind="wrong_theory", wrong_theory=wrong)])
                              .about("sampled-Fisher step (claim 7)", "sf"))
    for rho, rec in res.items():
        big = [j for j, k in enumerate(ks) if k >= SF_MIN_K]
        s, s_se = _slope([ks[j] for j in big], [rec["scatter"][j] for j in big], [rec["scatter_se"][j] for j in big])
        exact_slope = _slope([ks[j] for j in big], [fv.sf_scatter_exact(ks[j]) for j in big])[0]
        bend = abs(exact_slope + 1.0)  # the O(1/k²) bend of the exact ρ = 0 form over these ks
        th = exact_slope if rho == 0 else -1.0
        tol = Z_TOTAL * s_se + (0.0 if rho == 0 else bend)
        rec["slope"], rec["slope_se"], rec["slope_theory"] = s, s_se, th
        checks.append(check_range(f"SF rho={rho:g}: log-log slope of the scatter vs k (k >= {SF_MIN_K}, SE {s_se:.3f}); "
                                  + ("theory: slope of the closed form, tol. 3 SE" if rho == 0 else
                                     f"theory: -1 (first order), tol. 3 SE + the rho = 0 bend {bend:.3f}"), s, th - tol,
                                  th + tol, th, error_model=f"Monte Carlo: {Z_TOTAL:g} SE of the weighted slope",
                                  controls=[control_range("the same slope against the bias term's rate -2", s, -2.0 - tol,
                                                          -2.0 + tol, kind="wrong_theory", wrong_theory=-2.0)])
                      .about("sampled-Fisher step (claim 7)", "sf"))
        if rho > 0:  # first order in 1/k: allow 3 SE plus the O(1/k) correction, 10/k as at rho = 0
            k, m, se_m, lo = ks[-1], rec["scatter"][-1], rec["scatter_se"][-1], rec["leading_scatter"][-1]
            tol = Z_TOTAL * se_m + 10.0 / k * lo
            checks.append(check_range(f"SF rho={rho:g}, k={k}: scatter around damped exact NG vs first-order closed "
                                      f"form (tol. 3 SE + 10/k rel.)", m, lo - tol, lo + tol, lo,
                                      error_model="Monte Carlo 3 SE + the O(1/k^2) term, 10/k relative as at rho = 0",
                                      controls=[control_range("against the first-order form for k/2", m, 2 * lo - tol,
                                                              2 * lo + tol, kind="wrong_theory", wrong_theory=2 * lo)])
                          .about("sampled-Fisher step (claim 7)", "sf"))
    out["damping"] = {str(rho): rec for rho, rec in res.items()}
    out["exact_rho0"] = {"scatter": [fv.sf_scatter_exact(k) for k in ks], "mean_ratio": [fv.sf_mean_step_ratio(k) for k in ks],
                         "cos_limit": [fv.sf_cosine_limit(k) for k in ks]}
    return out


def _run(config, out_dir):
    checks = []
    data = {"estimators": _fisher_part(config, checks), "sf": _sf_part(config, checks)}
    fig = _plot(config, data)
    png, js = plotting.save(fig, "fisher_variance", data=data, out_dir=out_dir, config=config)
    est, sf = data["estimators"], data["sf"]
    summary = (f"slopes gaussian {est['gaussian']['score']['slope']:.3f}/{est['gaussian']['hessian']['slope']:.3f}, "
               f"softmax {est['softmax']['score']['slope']:.3f}/{est['softmax']['hessian']['slope']:.3f}; "
               f"SF rho=0 slope {sf['damping']['0.0']['slope']:.3f}")
    return ExperimentResult("fisher_variance", png, js, checks, summary, 0.0)


# ---------------------------------------------------------------------------------------------
def _log_err(values, ses):
    """±2 SE error bars, the lower one clipped so that it stays on a log axis."""
    v, e = np.asarray(values, float), 2 * np.asarray(ses, float)
    return np.vstack([np.minimum(e, 0.95 * v), e])


def _plot(config, data):
    fig, axes = plotting.figure(2, 3, figsize=(16.5, 9.5),
                                title="Variance of Fisher estimators (Soen & Sun 2021) and the sampled-Fisher step")
    col = {("gaussian", "score"): plotting.COLORS[0], ("gaussian", "hessian"): plotting.COLORS[1],
           ("softmax", "score"): plotting.COLORS[2], ("softmax", "hessian"): plotting.COLORS[3]}
    est = data["estimators"]
    for ax, model in zip(axes[0, :2], fv.MODELS):
        rec = est[model]
        for e, label in ESTIMATORS:
            r = rec[e]
            ax.plot(rec["ks"], r["theory_total"], "-", color=col[(model, e)], label=f"{label}: closed form")
            ax.errorbar(rec["ks"], r["mc_total"], yerr=2 * np.asarray(r["mc_total_se"]), fmt="o", mfc="none",
                        color=col[(model, e)], capsize=3, label=f"{label}: Monte Carlo ±2 SE (slope {r['slope']:.3f})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("samples k per input")
        ax.set_ylabel("E||F̂ − F||²_F = Σ_ij Var(F̂)_ij")
        what = "Gaussian N(f, I), C = %d" % rec["C"] if model == "gaussian" else "softmax, C = %d" % rec["C"]
        ax.set_title(f"({'ab'[fv.MODELS.index(model)]}) {what}, P = {rec['num_params']}, "
                     f"N = {config['n_inputs']} inputs", fontsize=10)
        ax.legend(fontsize=7.5)
    ax_c, ax_d = axes[0, 2], axes[1, 0]
    zs = []
    for model in fv.MODELS:
        for e, label in ESTIMATORS:
            r = est[model][e]
            ax_c.plot(r["entries_theory"], r["entries_mc"], ".", ms=3, alpha=0.6, color=col[(model, e)],
                      label=f"{model} {label} ({len(r['entries_mc'])} entries)")
            zs.append(np.asarray(r["entries_z"]))
    lims = [min(np.min(est[m][e]["entries_theory"]) for m in fv.MODELS for e, _ in ESTIMATORS),
            max(np.max(est[m][e]["entries_theory"]) for m in fv.MODELS for e, _ in ESTIMATORS)]
    ax_c.plot(lims, lims, "k-", lw=0.8, label="MC = closed form")
    ax_c.set_xscale("log")
    ax_c.set_yscale("log")
    ax_c.set_xlabel("closed-form Var(F̂)_ij, k = 1")
    ax_c.set_ylabel("Monte Carlo Var(F̂)_ij, k = 1")
    ax_c.set_title(f"(c) every entry, R = {config['replicates']} replicates", fontsize=10)
    ax_c.legend(fontsize=7.5)
    z = np.concatenate(zs)
    ax_d.hist(z, bins=40, density=True, color="grey", alpha=0.6, label=f"MC − closed form, in SE ({z.size} entries)")
    grid = np.linspace(-4, 4, 200)
    ax_d.plot(grid, np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi), "k-", label="N(0, 1)")
    ax_d.set_xlabel("z = (MC Var_ij − closed form) / SE   (SE from %d batches)" % config["batches"])
    ax_d.set_ylabel("density")
    ax_d.set_title(f"(d) per-entry z-scores, k = 1; max |z| = {np.max(np.abs(z)):.2f}\n(entries are strongly "
                   "correlated: one draw of a few modes, not i.i.d. N(0, 1))", fontsize=10)
    ax_d.legend(fontsize=7.5)

    sf, ks = data["sf"], np.asarray(data["sf"]["ks"])
    ax_e, ax_f = axes[1, 1], axes[1, 2]
    fine = np.unique(np.concatenate([np.geomspace(4.05, ks.max(), 200), ks[ks > 4]]))
    for j, (rho, rec) in enumerate(sf["damping"].items()):
        color = (plotting.COLORS[4], plotting.COLORS[0], plotting.COLORS[7], plotting.COLORS[2])[j % 4]
        lab = "ρ = 0" if float(rho) == 0 else f"ρ = {float(rho):g}"
        ax_e.errorbar(ks, rec["scatter"], yerr=_log_err(rec["scatter"], rec["scatter_se"]), fmt="o", mfc="none", color=color,
                      capsize=3, label=f"SF {lab}: measured ±2 SE (slope {rec['slope']:.2f})")
        ax_f.errorbar(ks, rec["one_minus_cos"], yerr=_log_err(rec["one_minus_cos"], rec["one_minus_cos_se"]), fmt="o", mfc="none",
                      color=color, capsize=3, label=f"SF {lab}: measured ±2 SE")
        ax_f.plot(ks, rec["leading_one_minus_cos"], "--", color=color, lw=1, label=f"{lab}: first order in 1/k")
        if float(rho) == 0:
            ax_e.plot(fine, [(2 * k + 8) / ((k - 2) * (k - 4)) for k in fine], "-", color=color,
                      label="ρ = 0: (2k+8)/((k−2)(k−4)), ∞ for k ≤ 4")
            ax_f.plot(fine, [1 - math.sqrt((k - 4) / (k - 2)) for k in fine], ":", color=color,
                      label="ρ = 0, N → ∞: 1 − √((k−4)/(k−2))")
        else:
            ax_e.plot(ks, rec["leading_scatter"], "--", color=color, lw=1, label=f"{lab}: first order in 1/k")
    for ax in (ax_e, ax_f):
        ax.axvspan(ks.min() * 0.8, 4, color="red", alpha=0.07, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("samples k per training point (sampled-Fisher targets)")
    ax_e.text(1.05, 0.03, "ρ = 0: mean\n= ∞ (k ≤ 4)", transform=ax_e.get_xaxis_transform(), fontsize=8, color="red")
    ax_e.set_ylabel("E||Δf_SF − Δf_NG||² / ||Δf_NG||²")
    ax_e.set_title(f"(e) SF step scatter, infinite width, N = {sf['n']}, C = 1, {config['sf']['seeds']} draws per k",
                   fontsize=10)
    ax_e.legend(fontsize=7)
    ax_f.set_ylabel("1 − mean cos(Δf_SF, Δf_NG)")
    ax_f.set_title("(f) SF step direction (reference: exact NG at the same ρ)", fontsize=10)
    ax_f.legend(fontsize=7)
    return fig


__all__ = ["PROFILES", "run"]
