"""Figure `predictions`: isotropic methods train identically but predict differently
(THEORY.md claims 1–3), at infinite width, on synthetic data and on digits (0 vs 1, ±1 targets).

Training points: every isotropic method has Θ_G(X, X) = α·I, so at η = c/α the residual follows
r_t = (1 − c)^t r_0 for all of them (c = 1: zero loss in one step). Test points: with f_0 = 0
(the infinite-width prior mean) the converged prediction is f(x') = Θ_G(x', X) Θ_G(X, X)⁻¹ Y, i.e.
    exact NGD:               Θ(x', X) Θ⁻¹ Y                        (kernel regression; also gd's t → ∞ limit)
    layer pattern S:         Σ_a c_a Θ_a(x', X) Θ_a⁻¹ Y / α,  c = S⁺1, α = 1ᵀS⁺1
                             (block-diagonal: the average of the L per-layer kernel regressors)
    K-FAC:                   Σ_l [N K^H_l(x', X)(K^H_l)⁻¹] ⊙ [N K^Δ_l(x', X)(K^Δ_l)⁺] Y / (N α)
    iEF (C = 1):             exact NGD's (its test step is Θ(x', X)Θ⁻¹ times its training step −ηr)
so the training dynamics coincide and the test predictions need not. Gradient descent after T steps
differs from exact NGD's test prediction by exactly Θ(x', X)Θ⁻¹ r_T.

Every registered method with an infinite-width limit runs (step rule of :mod:`._methods`): its one-step
loss ratio at η = 1/α is checked against its prediction (zero where isotropic, the diagonal-kernel formula
where the theory gives one, shown where it is silent); its converged test prediction against the formula
above where THEORY.md gives one (the S⁺ formula only for an invertible pattern), and is shown (difference
from exact NGD's) where it gives none. Error model: floating point (κ·eps of the solves, tolerance 1e-8).
Controls: gd's one step at the same η (exact NGD's for gd); the other methods' test predictions against each formula; gd's gap with r_0.

Panels per data set (rows): (a) train loss vs step, (b) test prediction of each method vs exact
NGD's, (c) ||f_test(method) − f_test(exact)|| / ||f_test(exact)||, (d) test MSE.
"""
from __future__ import annotations


import numpy as np

from .. import datasets, methods, plotting
from ..dynamics import simulate
from ..kernels import layer_kernels
from ..methods import banded_pattern, tridiagonal_pattern
from ..networks import mlp
from ._base import (Coverage, ExperimentResult, check_below, control_below, infinite_width_reason,
                    progress as _progress, single_thread_blas as _single_thread_blas, unpredicted)
from ._methods import control_method, kernel_and_prediction, one_step_check, one_step_theory, options, step_size

PROFILES = {
    "tiny": {"depth": 4, "fraction": 0.5, "steps": 30, "seed": 0,
             "synthetic": {"n": 8, "in_dim": 16, "n_test": 16}, "digits": {"n": 12, "n_test": 24}},
    "quick": {"depth": 4, "fraction": 0.5, "steps": 60, "seed": 0,
              "synthetic": {"n": 32, "in_dim": 64, "n_test": 200}, "digits": {"n": 32, "n_test": 300}},
    "full": {"depth": 4, "fraction": 0.5, "steps": 80, "seed": 0,
             "synthetic": {"n": 64, "in_dim": 128, "n_test": 512}, "digits": {"n": 64, "n_test": 300}},
}

KINDS = ("synthetic", "digits")
TOL = 1e-8
FP_MODEL = "floating point: kappa(Theta)*eps of the solves, kappa <= 1e6: tolerance 1e-8"
LOSS_FLOOR = 1e-32
#: every method with an infinite-width test kernel; the others are skipped with the registry's reason
COVERAGE = Coverage.of("test predictions", infinite_width_reason)
ONE_STEP = Coverage.of("one step at eta = 1/alpha (training points)", infinite_width_reason)


def run(config: dict, out_dir) -> ExperimentResult:
    with _single_thread_blas():
        return _run(config, out_dir)


def _problem(kind, config):
    cfg, seed = config[kind], config.get("seed", 0)
    if kind == "synthetic":
        X, Y = datasets.synthetic(cfg["n"], cfg["in_dim"], seed=seed)
        X_test, Y_test = datasets.synthetic(cfg["n_test"], cfg["in_dim"], seed=seed + 1000)
    else:  # digits 0 vs 1: a prefix of one shuffled draw is the training set, the rest the test set
        Xa, Ya = datasets.digits(cfg["n"] + cfg["n_test"], classes=2, seed=seed, targets="pm1")
        X, Y, X_test, Y_test = Xa[:cfg["n"]], Ya[:cfg["n"]], Xa[cfg["n"]:], Ya[cfg["n"]:]
    return X, Y, X_test, Y_test


#: the methods whose converged test prediction THEORY.md gives as kernel regression with the NTK, and the claim
KERNEL_REGRESSION = {"exact": "claim 1", "ief": "claim 6, C = 1"}


def pattern_of(spec, depth: int):
    """The layer pattern S of a layer-structured method (THEORY.md claim 2), or None: block_diag S = I,
    block_tridiag the tridiagonal ones, a method with a ``bandwidth`` option the banded pattern."""
    opts = dict(spec.example_options)
    if "bandwidth" in opts:
        return banded_pattern(depth, int(opts["bandwidth"]))
    return {"block_diag": np.eye(depth), "block_tridiag": tridiagonal_pattern(depth)}.get(spec.name)


def _kfac_test_formula(lk, lk_t, Y, n, alpha):
    """K-FAC's converged test prediction Σ_l [N K^H_l(x',X)(K^H_l)⁻¹] ⊙ [N K^Δ_l(x',X)(K^Δ_l)⁺] Y / (N α)."""
    total = 0.0
    for l in range(lk.depth):
        H = n * np.asarray(lk_t.fwd[l]) @ np.linalg.pinv(np.asarray(lk.fwd[l]))
        D = n * np.asarray(lk_t.bwd[l]) @ np.linalg.pinv(np.asarray(lk.bwd[l]))
        total = total + (H * D) / n
    return total @ Y / alpha


def _test_theory(spec, pred, lk, lk_t, theta, theta_test, Y, n, depth):
    """(converged test prediction, formula) from THEORY.md claims 1–3 and 6 where they give one, else None."""
    if spec.name in KERNEL_REGRESSION:  # claims 1, 6 (C = 1: iEF's test step is exact NGD's)
        return theta_test @ np.linalg.solve(theta, Y), f"Theta(x',X) Theta^-1 Y (NT kernel_fn; {KERNEL_REGRESSION[spec.name]})"
    S = pattern_of(spec, depth)
    if S is not None:
        c = np.linalg.pinv(S) @ np.ones(depth)
        if np.linalg.matrix_rank(S) == depth:  # the S^+ formula needs an invertible pattern (THEORY refinement)
            f = sum(c[a] * np.asarray(lk_t.ntk[a]) @ np.linalg.solve(np.asarray(lk.ntk[a]), Y) for a in range(depth))
            return f / c.sum(), f"sum_a c_a Theta_a(x',X) Theta_a^-1 Y / alpha, c = S^+ 1 = {np.round(c, 4).tolist()}"
    if spec.name == "kfac" and pred.isotropic:
        return _kfac_test_formula(lk, lk_t, Y, n, pred.alpha), "sum_l [N K^H(x') K^H^-1] o [N K^D(x') K^D^+] Y/(N alpha)"
    return None


def _run(config, out_dir):
    L, c = config["depth"], config["fraction"]
    checks, data, plot_data = [], {}, {}
    test_coverage = COVERAGE
    for kind in _progress(KINDS, desc="predictions"):
        X, Y, X_test, Y_test = _problem(kind, config)
        n = X.shape[0]
        net = mlp(depth=L, width=512, in_dim=X.shape[1])  # width unused: infinite-width kernels
        theta = np.asarray(net.kernel_fn(X, X, "ntk"), dtype=float)
        theta_test = np.asarray(net.kernel_fn(X_test, X, "ntk"), dtype=float)
        lk, lk_t = layer_kernels(net, X), layer_kernels(net, X_test, X)
        runs, final, d = {}, {}, {"n": n, "n_test": X_test.shape[0], "in_dim": X.shape[1], "methods": {}}
        for spec in COVERAGE.applies():
            m, opts = spec.name, options(spec)
            K, pred = kernel_and_prediction(net, X, Y, spec)
            lr, rule = step_size(spec, K, pred, -Y, c)
            try:
                curve = simulate(net, X, Y, m, lr=lr, steps=config["steps"], X_test=X_test, **opts)
                test = X_test
            except ValueError as err:  # e.g. unit_wise: test kernels need a finite width
                if kind == KINDS[0]:
                    test_coverage = test_coverage.skip(m, f"the method raises at infinite width: {err}")
                curve, test = simulate(net, X, Y, m, lr=lr, steps=config["steps"], **opts), None
            lr1 = lr / c  # c = 1: one step at 1/alpha for an isotropic kernel
            one = simulate(net, X, Y, m, lr=lr1, steps=1, X_test=test, **opts)
            other = methods.get(control_method(m))
            short = simulate(net, X, Y, other.name, lr=lr1, steps=1, **options(other))
            ratio = float(one.train_loss[1] / one.train_loss[0])
            checks.append(one_step_check(f"{kind}: {m} train loss ratio after 1 step at eta = {rule.split('*', 1)[-1]}",
                                         ratio, one_step_theory(pred, -Y, lr1), pred.isotropic,
                                         (other.name, float(short.train_loss[1] / short.train_loss[0])))
                          .about(ONE_STEP.family, m))
            if test is None:
                continue
            runs[m] = curve
            final[m] = one.test_pred[1] if pred.isotropic else curve.test_pred[-1]
            d["methods"][m] = {"alpha_theory": pred.alpha, "isotropic_theory": pred.isotropic, "reason": pred.summary(),
                               "alpha_measured": curve.alpha, "deviation": curve.deviation, "lr": lr, "lr_rule": rule,
                               "train_loss": curve.train_loss, "one_step_loss_ratio": ratio,
                               "diverged": bool(curve.diverged),
                               "final_train_loss": float(curve.train_loss[-1])}
        f_exact = final["exact"]
        for spec in COVERAGE.applies():
            m = spec.name
            if m not in final:
                continue
            theory = _test_theory(spec, kernel_and_prediction(net, X, Y, spec)[1], lk, lk_t, theta, theta_test, Y,
                                  n, L)
            f = final[m]
            rel = float(np.linalg.norm(f - f_exact) / np.linalg.norm(f_exact))
            d["methods"][m].update(rel_diff_test_vs_exact=rel, test_mse=float(np.mean((f - Y_test) ** 2)),
                                   test_accuracy=float(np.mean(np.sign(f) == np.sign(Y_test))) if kind == "digits" else None,
                                   test_pred=f[:, 0])
            if theory is None:
                checks.append(unpredicted(f"{kind}: {m} converged test prediction, ||f - f_exact||/||f_exact||", rel,
                                          "no closed-form test kernel in THEORY.md").about(COVERAGE.family, m))
                continue
            f_th, formula = theory
            err = float(np.max(np.abs(f - f_th)) / np.max(np.abs(f_th)))
            control = max(float(np.max(np.abs(final[o] - f_th)) / np.max(np.abs(f_th)))
                          for o in final if o not in (m, "exact", "ief"))
            checks.append(check_below(f"{kind}: {m} converged test prediction == {formula}, max rel. error "
                                      f"(||f - f_exact||/||f_exact|| = {rel:.3g})", err, TOL, error_model=FP_MODEL,
                                      controls=[control_below("the other methods' test predictions against this formula "
                                                              "(the largest error)", control, TOL,
                                                              kind="other_method")]).about(COVERAGE.family, m))
        if "gd" in runs:
            gd = runs["gd"]
            r_T, r_0 = gd.train_pred[-1] - Y, gd.train_pred[0] - Y
            gd_diff = gd.test_pred[-1] - f_exact
            err = np.linalg.norm(gd_diff - theta_test @ np.linalg.solve(theta, r_T)) / np.linalg.norm(f_exact)
            err0 = np.linalg.norm(gd_diff - theta_test @ np.linalg.solve(theta, r_0)) / np.linalg.norm(f_exact)
            checks.append(check_below(f"{kind}: gd after {config['steps']} steps: f_test - f_exact == Theta(x',X) Theta^-1 "
                                      "r_T, ||error|| / ||f_exact||", err, TOL, error_model=FP_MODEL,
                                      controls=[control_below("with the initial residual r_0 instead of r_T", err0, TOL, kind="wrong_theory")])
                          .about("gd's test gap to exact NGD", "gd"))
        d["exact_test_pred"] = f_exact[:, 0]
        d["y_test"] = Y_test[:, 0]
        data[kind] = d
        plot_data[kind] = runs

    fig = _plot(data, config)
    png, js = plotting.save(fig, "predictions", data, out_dir, config=config)
    parts = []
    for kind in KINDS:
        md = data[kind]["methods"]
        parts.append(f"{kind}: rel. diff vs exact " + ", ".join(
            f"{m} {v['rel_diff_test_vs_exact']:.2g}" for m, v in md.items() if "rel_diff_test_vs_exact" in v and m != "exact"))
    summary = "isotropic methods: zero loss in one step at 1/alpha; test predictions differ — " + "; ".join(parts)
    return ExperimentResult("predictions", png, js, checks, summary, 0.0, coverage=(ONE_STEP, test_coverage))


# ---------------------------------------------------------------------------------------------
def _plot(data, config):
    col = plotting.method_colors()
    fig, axes = plotting.figure(2, 4, figsize=(20, 10.5))
    c = config["fraction"]
    for row, kind in enumerate(KINDS):
        d = data[kind]
        md = {m: v for m, v in d["methods"].items() if "train_loss" in v}
        others = [m for m in md if m != "exact"]
        drawn = [m for m in others if not md[m].get("diverged")]  # diverged runs would swamp panels (b), (d)
        gone = [m for m in others if md[m].get("diverged")]
        note = f" — diverged, not drawn: {', '.join(gone)}" if gone else ""
        title = (f"synthetic (teacher, N={d['n']}, D={d['in_dim']})" if kind == "synthetic"
                 else f"digits 0 vs 1 (±1, N={d['n']}, D=64)")
        ax = axes[row, 0]
        steps = np.arange(config["steps"] + 1)
        L0 = md["exact"]["train_loss"][0]
        ax.plot(steps[1:], np.maximum(L0 * (1 - c) ** (2 * steps[1:]), LOSS_FLOOR), "-", color="k", lw=3,
                alpha=0.25, label=f"theory (1−c)^(2t) L_0, c={c}")
        for m, v in md.items():
            iso = v["isotropic_theory"]
            ax.plot(steps[1:], np.maximum(v["train_loss"][1:], LOSS_FLOOR), "-" if iso else "--", color=col[m], lw=1,
                    marker="o" if iso else None, ms=3, mfc="none", label=f"{m} ({'isotropic' if iso else 'not iso.'})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(LOSS_FLOOR / 10, L0 * 10)
        ax.set_xlabel("step t")
        ax.set_ylabel("training loss (1/2N) Σ r_n²")
        ax.set_title(f"(a) {title}\ntrain loss, infinite width: isotropic methods at η = c/α coincide", fontsize=10)
        ax.legend(fontsize=6.5, loc="lower left", ncol=2)

        ax = axes[row, 1]
        fe = np.asarray(d["exact_test_pred"])
        lo, hi = float(fe.min()), float(fe.max())
        for m in drawn:
            f = np.asarray(md[m]["test_pred"])
            lo, hi = min(lo, f.min()), max(hi, f.max())
            ax.plot(fe, f, "o", color=col[m], mfc="none", ms=3, ls="none", alpha=0.6, label=m)
        pad = 0.05 * (hi - lo)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k-", lw=0.8, label="identity (= exact NGD)")
        ax.set_xlabel("exact NGD test prediction f_exact(x')")
        ax.set_ylabel("method's test prediction f(x') (converged or after T steps)")
        ax.set_title(f"(b) test predictions vs exact NGD ({d['n_test']} test points){note}", fontsize=9)
        ax.legend(fontsize=6.5, loc="upper left", ncol=2)

        ax = axes[row, 2]
        vals = [max(md[m]["rel_diff_test_vs_exact"], 1e-17) for m in others]
        bars = ax.bar(range(len(others)), vals, color=[col[m] for m in others])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v * 1.3, f"{v:.2g}", ha="center", fontsize=6.5, rotation=90)
        ax.set_yscale("log")
        ax.set_ylim(min(vals) / 10, max(vals) * 100)
        ax.set_xticks(range(len(others)), others, fontsize=7.5, rotation=60)
        ax.set_ylabel("||f_test − f_test(exact)|| / ||f_test(exact)||")
        ax.set_title("(c) relative difference from exact NGD (iEF: 0 by claim 6)", fontsize=10)

        ax = axes[row, 3]
        names = ["exact", *drawn]
        vals = [md[m]["test_mse"] for m in names]
        ax.bar(range(len(names)), vals, color=[col[m] for m in names])
        ax.set_xticks(range(len(names)), names, fontsize=7.5, rotation=60)
        ax.set_ylabel("test MSE  mean (f(x') − y')²")
        ax.set_title("(d) test error per method" + (" (digits: ±1 labels)" if kind == "digits" else "") + note,
                     fontsize=9)
    return fig


__all__ = ["PROFILES", "run"]
