"""The measurements behind the four panels of figure `continual` (module docstring of the package)."""
from __future__ import annotations

import jax
import numpy as np

from ... import continual, layer_kernels, method_kernels, methods, predict
from ...continual import projections
from ...continual.kernels import every_projection
from ...networks import mlp

PROJECTIONS = projections.NAMES


def projections_of(method: str) -> tuple[str, ...]:
    """The projections defined for ``method`` (``ong_old_factors``: the methods whose metric declares old_sandwich): a row's methods are those
    that have its projection."""
    return tuple(p for p in PROJECTIONS if projections.supports(methods.get(method), p))


def registry_methods(infinite_width: bool) -> dict[str, dict]:
    """Every registered method with a continual metric whose projected step is a fixed function of the kernels
    (not residual-dependent, not random); at infinite width also those with an infinite-width limit. Methods
    that cannot build a two-sided kernel raise a one-line ValueError, recorded by the caller. Returns
    {name: its example options} (e.g. pattern's band)."""
    return {s.name: dict(s.example_options) for s in methods.registered()
            if s.metric is not None and not s.needs_residual and not s.random
            and not (infinite_width and s.finite_width_only)}


def skipped(config) -> dict:
    """{method: reason} for the registry methods left out of the figure (module docstring of ``registry_methods``)."""
    return {s.name: ("no continual metric" if s.metric is None else "residual-dependent" if s.needs_residual
                     else "random (sampled Fisher)") for s in methods.registered()
            if s.metric is None or s.needs_residual or s.random}


def net_of(config, width, activation="relu"):
    return mlp(depth=config["depth"], width=width, in_dim=64, out_dim=10, activation=activation)


def tasks_of(config, n_tasks, n):
    return continual.rotated_tasks(n_tasks, n, max_angle=config["max_angle"] * (n_tasks - 1) / (config["n_tasks"] - 1),
                                   seed=config["seed"])


def safe_lr(net, X, method, params=None, damping=1e-3, fraction=1.0, **options):
    """``fraction``/λ_max of the method's own kernel on X: the step that stays stable for every mode (and for every
    consistent projection, whose learning kernel is a Schur complement ⪯ K_BB)."""
    K = np.asarray(method_kernels(net, X, method, params=params, damping=damping, **options).train)
    return fraction / float(np.linalg.eigvalsh(0.5 * (K + K.T))[-1])


# ---------------------------------------------------------------------------------------------
# (i) one step: lazy prediction vs real training
# ---------------------------------------------------------------------------------------------
def one_step(config):
    """Per method × projection: the forgetting ‖Δf_A‖ predicted by the kernels (η·‖K^P_AB r_B‖) and measured by a
    real step at η and η/2; the remainder R(η) = Δf_A(η) − (−ηK^P_AB r_B) at both (second order ⇒ ratio 4), and
    the remainder against a prediction shifted by the plain one (the control: first order ⇒ ratio 2)."""
    net = net_of(config, config["width"], "erf")  # smooth: the Taylor remainder is exactly second order
    params = net.init(config["seed"])
    (XA, _), (XB, YB) = tasks_of(config, 2, config["n"])
    stored = continual.store(net, params, XA)
    old_rows = continual.store_metric_rows(net, params, XA)  # ong_old_factors: task A's metric, at its end
    rB = np.asarray(net.apply(params, XB)) - YB
    f_A0 = np.asarray(net.apply(params, XA))
    rho, rho_b = config["damping"], config["basis_damping"]
    out, unsupported = {}, {}
    for method, opts in registry_methods(infinite_width=False).items():
        lr = safe_lr(net, XB, method, params, rho, config["step_fraction"], **opts)
        try:
            kernels = every_projection(net, XA, XB, method, projections_of(method), params=params, damping=rho,
                                       basis_damping=rho_b, **opts)
        except ValueError as err:
            unsupported[method] = str(err)
            continue
        predicted = {p: k.step(rB) for p, k in kernels.items()}
        plain = float(np.linalg.norm(predicted["none"][0]))
        row = {"lr": lr}
        for p in projections_of(method):
            d = continual.projected_direction(net, params, XB, YB, stored, method, p, damping=rho, basis_damping=rho_b,
                                              old=old_rows, **opts)
            moved = {s: np.asarray(net.apply(jax.tree_util.tree_map(lambda a, b, s=s: a + s * lr * b, params, d), XA))
                     - f_A0 for s in (1.0, 0.5)}
            pred_old, pred_new = predicted[p]
            control = pred_old + predicted["none"][0]  # a prediction wrong at first order (shifted by the plain one)

            def ratio(prediction):
                return (float(np.linalg.norm(moved[1.0] - lr * prediction))
                        / float(np.linalg.norm(moved[0.5] - 0.5 * lr * prediction)))

            row[p] = {"predicted": lr * float(np.linalg.norm(pred_old)), "trained": float(np.linalg.norm(moved[1.0])),
                      "trained_half": float(np.linalg.norm(moved[0.5])),
                      "relative_predicted": float(np.linalg.norm(pred_old)) / plain,
                      "remainder_ratio": ratio(pred_old), "control_remainder_ratio": ratio(control),
                      "learning_cos": _cos(pred_new, -rB)}
        out[method] = row
    return out, unsupported


def _cos(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------------------------------------
# (ii) T × T matrices in function space (infinite width), and a trained run beside them
# ---------------------------------------------------------------------------------------------
def sequences(config):
    """{method: {projection: summary + T × T matrices}} in closed form at infinite width, and the trained
    (finite-width) runs of ``trained_method`` for the heat-map projections."""
    net = net_of(config, config["width"])
    tasks = tasks_of(config, config["n_tasks"], config["n_seq"])
    X_all = np.concatenate([X for X, _ in tasks])
    lk = layer_kernels(net, X_all)
    out, unsupported = {}, {}
    for method, opts in registry_methods(infinite_width=True).items():
        try:
            lr = safe_lr(net, tasks[0][0], method, damping=config["damping"], **opts)
            out[method] = {p: _record(continual.sequential(net, tasks, method, p, lr=lr, steps=config["seq_steps"],
                                                           damping=config["damping"],
                                                           basis_damping=config["basis_damping"], kernels=lk, **opts))
                           for p in projections_of(method)}
            out[method]["kernel_spectrum"] = [_symmetric_range(net, X, method, config["damping"], opts)
                                              for X, _ in tasks]
            preds = [predict(net, X, method, damping=config["damping"], **opts) for X, _ in tasks]
            out[method]["predicted_indefinite"] = [_indefinite(p) for p in preds]
            out[method]["prediction"] = [p.summary() for p in preds]
        except ValueError as err:
            unsupported[method] = str(err)
    trained = {}
    m = config["trained_method"]
    lr = safe_lr(net, tasks[0][0], m, damping=config["damping"])
    for p in config["trained_heatmaps"]:
        run = continual.train_sequential(net, net.init(config["seed"]), tasks, m, p, lr=lr, steps=config["seq_steps"],
                                         damping=config["damping"], basis_damping=config["basis_damping"],
                                         center=True)
        trained[p] = _record(run)
    return out, trained, unsupported


def _indefinite(pred) -> bool:
    """``predict`` flags the damped kernel indefinite (block_tridiag, pattern: ``damped_kernel_positive`` fails)."""
    return any(c.name == "damped_kernel_positive" and not c.holds for c in pred.conditions)


def _symmetric_range(net, X, method, damping, opts) -> list[float]:
    """[λ_min, λ_max] of the symmetric part of the method's kernel on X: λ_min < 0 means ascending modes."""
    K = np.asarray(method_kernels(net, X, method, damping=damping, **opts).train)
    ev = np.linalg.eigvalsh(0.5 * (K + K.T))
    return [float(ev[0]), float(ev[-1])]


def _record(run) -> dict:
    rec = run.summary()
    rec["accuracy"] = np.asarray(run.accuracy).tolist()
    rec["loss"] = np.asarray(run.loss).tolist()
    rec["loss_forgetting"] = run.loss_forgetting.tolist()
    return rec


# ---------------------------------------------------------------------------------------------
# (iii) width: kernels and trained forgetting → the lazy (infinite-width) prediction
# ---------------------------------------------------------------------------------------------
def width_sweep(config):
    """Per width and seed: the relative deviation of the finite-width forgetting kernel (exact, none) and learning
    kernel (exact, ong) from the infinite-width ones; the centred trained network's forgetting Φ (change of the
    task-A outputs while task B trains) against the infinite-width prediction (none), and ong's trained
    forgetting relative to none's predicted one."""
    (XA, YA), (XB, YB) = tasks = tasks_of(config, 2, config["n_width"])
    rho, method = config["damping"], config["trained_method"]
    wide = net_of(config, config["widths"][-1])
    infinite = {p: continual.projected_kernels(wide, XA, XB, method, p, damping=rho) for p in ("none", "ong")}
    # the control: a wrong limit (gradient descent's forgetting kernel Θ_AB/N), which finite widths do not approach
    wrong = np.kron(continual.projected_kernels(wide, XA, XB, "gd", "none").forgetting, np.eye(wide.out_dim))
    lr = safe_lr(wide, XA, method, damping=rho)
    seq = {p: continual.sequential(wide, tasks, method, p, lr=lr, steps=config["width_steps"], damping=rho)
           for p in ("none", "ong")}
    phi_inf = _forgetting(seq["none"])
    out = {"widths": config["widths"], "seeds": config["sweep_seeds"], "lr": lr, "kernel_none": [], "kernel_ong": [],
           "trained_none": [], "trained_ong": [], "control_kernel": [], "phi_infinite": float(np.linalg.norm(phi_inf))}
    for width in config["widths"]:
        net = net_of(config, width)
        rows = {k: [] for k in ("kernel_none", "kernel_ong", "trained_none", "trained_ong", "control_kernel")}
        for seed in config["sweep_seeds"]:
            params = net.init(seed)
            for p, attr in (("none", "forgetting"), ("ong", "learning")):
                K = getattr(continual.projected_kernels(net, XA, XB, method, p, params=params, damping=rho), attr)
                K_inf = np.kron(getattr(infinite[p], attr), np.eye(net.out_dim))  # output-diagonal: K ⊗ I_C, rows n·C + c
                rows[f"kernel_{p}"].append(float(np.linalg.norm(K - K_inf) / np.linalg.norm(K_inf)))
                if p == "none":
                    rows["control_kernel"].append(float(np.linalg.norm(K - wrong) / np.linalg.norm(wrong)))
            for p in ("none", "ong"):
                run = continual.train_sequential(net, params, tasks, method, p, lr=lr, steps=config["width_steps"],
                                                 damping=rho, center=True)
                phi = _forgetting(run)
                rows[f"trained_{p}"].append(float(np.linalg.norm(phi - phi_inf) / np.linalg.norm(phi_inf)) if p == "none"
                                            else float(np.linalg.norm(phi) / np.linalg.norm(phi_inf)))
        for key, values in rows.items():
            out[key].append(values)
    return out


def _forgetting(run):
    """Φ: change of task 0's outputs while task 1 trains (T = 2)."""
    n = run.task_sizes[0]
    return np.asarray(run.train_pred[2][:n] - run.train_pred[1][:n])


# ---------------------------------------------------------------------------------------------
# (iv) memory
# ---------------------------------------------------------------------------------------------
def memory_sweep(config):
    """Infinite width, T = 2, ``memory_method`` with ``ong`` and OGD (gd): the change of the stored and the unstored
    task-0 outputs while task 1 trains, for m stored samples, relative to the unprotected (none) change."""
    net = net_of(config, config["width"])
    tasks = tasks_of(config, 2, config["n_memory"])
    lk = layer_kernels(net, np.concatenate([X for X, _ in tasks]))
    n = config["n_memory"]
    out = {"memory": config["memories"]}
    for method, p in (("gd", "ogd"), (config["trained_method"], "ong")):
        lr = safe_lr(net, tasks[0][0], method, damping=config["damping"])
        kw = dict(lr=lr, steps=config["seq_steps"], damping=config["damping"], kernels=lk)
        plain = np.linalg.norm(_forgetting(continual.sequential(net, tasks, method, "none", **kw)))
        stored, unstored = [], []
        for m in config["memories"]:
            phi = _forgetting(continual.sequential(net, tasks, method, p, memory=m, **kw))
            stored.append(float(np.max(np.abs(phi[:m])) / plain) if m else 0.0)
            unstored.append(float(np.linalg.norm(phi[m:]) / plain) if m < n else 0.0)
        out[f"{method}/{p}"] = {"stored": stored, "unstored": unstored, "plain": float(plain)}
    return out


# ---------------------------------------------------------------------------------------------
# claims 2 and 4d on the learning kernel
# ---------------------------------------------------------------------------------------------
def learning_kernels(config):
    """Over random draws (digit subsets and rotation angles, infinite width): for each method, λ_min of the
    symmetric part of OGD-projected NGD's learning kernel over its λ_max (< 0 ⇔ some residual ascends, claim 4d),
    and the asymmetry ‖L − Lᵀ‖/‖L‖ of ong's (a Schur complement: symmetric, claim 2) and of ogd's."""
    net = net_of(config, config["width"])
    rng = np.random.default_rng(config["seed"])
    out, unsupported = {}, {}
    for draw in range(config["draws"]):
        angles = rng.uniform(0, 180, size=2)
        seed = int(rng.integers(0, 2**31))
        XA = continual.rotated_tasks(2, config["n_draw"], max_angle=angles[0], seed=seed)[1][0]
        XB = continual.rotated_tasks(2, config["n_draw"], max_angle=angles[1], seed=seed + 1)[1][0]
        for m, opts in registry_methods(infinite_width=True).items():
            if m in unsupported:
                continue
            try:
                ogd = continual.projected_kernels(net, XA, XB, m, "ogd", damping=config["damping"], **opts).learning
            except ValueError as err:
                unsupported[m] = str(err)
                continue
            out.setdefault(m, {"ogd_min_ratio": [], "ong_asymmetry": [], "ogd_asymmetry": [], "ong_deviation": []})
            ong = continual.projected_kernels(net, XA, XB, m, "ong", damping=config["damping"], **opts).learning
            sym = np.linalg.eigvalsh(0.5 * (ogd + ogd.T))
            out[m]["ogd_min_ratio"].append(float(sym[0] / sym[-1]))
            out[m]["ogd_asymmetry"].append(float(np.linalg.norm(ogd - ogd.T) / np.linalg.norm(ogd)))
            out[m]["ong_asymmetry"].append(float(np.linalg.norm(ong - ong.T) / np.linalg.norm(ong)))
            alpha = np.trace(ong) / ong.shape[0]
            out[m]["ong_deviation"].append(float(np.linalg.norm(ong - alpha * np.eye(ong.shape[0]))
                                                 / (alpha * np.sqrt(ong.shape[0]))))
    return out, unsupported


def counterexample():
    """Claim 4d's counterexample (docs/THEORY.md): one linear layer, X_B = {e₁, 0.1e₂}, X_A = {(e₁ − e₂)/√2},
    r = (1, −1): rᵀLr of OGD-projected exact NGD (predicted −4.05, an ascent) and of the plain NGD step."""
    net = mlp(depth=1, in_dim=2, out_dim=1, bias=False)
    X_new, X_old = np.array([[1.0, 0.0], [0.0, 0.1]]), np.array([[1.0, -1.0]]) / np.sqrt(2)
    r = np.array([1.0, -1.0])
    kw = dict(params=net.init(0), damping=1e-10)
    ogd = continual.projected_kernels(net, X_old, X_new, "exact", "ogd", **kw).learning
    plain = continual.projected_kernels(net, X_old, X_new, "exact", "none", **kw).learning
    return {"ogd": float(r @ ogd @ r), "none": float(r @ plain @ r)}


__all__ = ["counterexample", "learning_kernels", "memory_sweep", "one_step", "sequences", "width_sweep"]
