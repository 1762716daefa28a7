"""The runs behind figure `continual_mnist`: T × T accuracy matrices of finite-width training with projections
(:func:`ntk_ngd.continual.finite.train_finite`) and the lazy prediction of task-1 forgetting after task 2."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ... import continual, losses
from ...continual import finite
from ...factored.form import methods_with_factored_form
from ...fitting import fit
from ...kernels import layer_kernels
from ...networks import mlp

#: registry filter: the methods with a factored form whose curvature is one Kronecker product per layer (K-FAC and
#: its eigenbasis-corrected EKFAC); kpsvd/kfac_cor (sums of Kronecker terms: CG) and diag are left out
KRONECKER = ("kfac", "ekfac")


def factored_methods(config) -> tuple[str, ...]:
    return tuple(m for m in methods_with_factored_form() if m in KRONECKER and m in config["methods"])


def runs_of(config) -> list[tuple[str, str]]:
    """(method, projection) pairs: sgd with none/ogd (for M = I every projection is OGD), each factored method
    with ``config['projections']``."""
    out = [("sgd", "none"), ("sgd", "ogd")]
    return out + [(m, p) for m in factored_methods(config) for p in config["projections"]]


def tasks_of(config, benchmark: str, n_tasks: int, seed: int = 0):
    """[(X_train, y_train)], [(X_test, y_test)] (float32, labels): the shipped 5,000 MNIST images (or ``n``),
    first ``n_train`` train, the rest test; ``benchmark`` "permuted", "rotated" or "identical" (task 0 repeated,
    ``n_train`` − 1 train images: the control's test set is one image larger)."""
    n = config["n"]
    if benchmark == "rotated":
        tasks = continual.rotated_tasks(n_tasks, n, dataset="mnist", max_angle=10.0 * (n_tasks - 1), seed=seed)
    else:
        tasks = continual.permuted_tasks(n_tasks if benchmark == "permuted" else 1, n, dataset="mnist", seed=seed)
        tasks = tasks if benchmark == "permuted" else tasks * n_tasks
    k = config["n_train"] - (benchmark == "identical")  # one more test image: a test set of its own size
    labelled = [(X.astype(np.float32), np.argmax(Y, 1)) for X, Y in tasks]
    return [(X[:k], y[:k]) for X, y in labelled], [(X[k:], y[k:]) for X, y in labelled]


def net_of(config, width=None):
    return mlp(depth=3, width=config["width"] if width is None else width, in_dim=784, out_dim=10, bias=False)


def init32(net, seed):
    return jax.tree_util.tree_map(lambda a: a.astype(np.float32), net.init(seed))


def matrices(config, benchmark: str, seeds, n_tasks=None, pairs=None) -> dict:
    """{"method+projection": {seed: T × T accuracy list}} for ``benchmark``."""
    n_tasks = config["n_tasks"] if n_tasks is None else n_tasks
    net = net_of(config)
    out = {}
    for seed in seeds:
        train, test = tasks_of(config, benchmark, n_tasks, seed=0)  # the same tasks for every seed; seed: init, order
        for method, proj in (runs_of(config) if pairs is None else pairs):
            r = finite.train_finite(net, init32(net, seed), train, method, proj, config["lr"][method],
                                    epochs=config["epochs"], batch_size=config["batch_size"],
                                    memory=config["memory"], seed=seed, damping=config["damping"],
                                    metric_samples=config["metric_samples"], test_tasks=test)
            out.setdefault(f"{method}+{proj}", {})[seed] = r["accuracy"].tolist()
    return out


def summaries(runs: dict) -> dict:
    """Per run: ACC and F per seed."""
    return {k: {"acc": {s: finite.average_accuracy(a) for s, a in v.items()},
                "forgetting": {s: finite.average_forgetting(a) for s, a in v.items()}} for k, v in runs.items()}


# ---------------------------------------------------------------------------------------------
# the lazy prediction of task-1 forgetting after task 2 (float64)
# ---------------------------------------------------------------------------------------------
def lazy_forgetting(net, params, XA, XB, yB, lr, steps):
    """Δf_A (mod 1_C) after ``steps`` full-batch gd steps on B of the network linearised at ``params``: the
    closed-form function-space map f_B ← f_B − ηΘ_BB∇ℓ/N_B, f_A ← f_A − ηΘ_AB∇ℓ/N_B with the finite-width NTK
    Θ = JJᵀ at the start of task 2 (rows n·C + c)."""
    X = np.concatenate([XA, XB])
    theta = np.asarray(jnp.sum(layer_kernels(net, X, params=params).ntk, 0))
    c, nA, nB = net.out_dim, XA.shape[0], XB.shape[0]
    K_AB, K_BB = theta[:nA * c, nA * c:], theta[nA * c:, nA * c:]
    loss = losses.get("cross_entropy")
    onehot = jnp.eye(c)[yB]
    fB = np.asarray(net.apply(params, jnp.asarray(XB)))
    dA = np.zeros(nA * c)
    grad = jax.grad(lambda f: loss.value(f, onehot))
    for _ in range(steps):
        g = np.asarray(grad(jnp.asarray(fB))).reshape(-1)  # ∇_f of the mean loss: ∇ℓ/N_B
        dA -= lr * K_AB @ g
        fB = fB - lr * (K_BB @ g).reshape(nB, c)
    dA = dA.reshape(nA, c)
    return dA - dA.mean(1, keepdims=True)


def trained_forgetting(net, params, XA, XB, yB, lr, steps):
    """Measured Δf_A (mod 1_C) after ``steps`` full-batch SGD steps on B through nn.fit (float64)."""
    import optax
    f0 = np.asarray(net.apply(params, jnp.asarray(XA)))
    p = fit(net, params, XB, yB, optax.sgd(lr), loss="cross_entropy", epochs=steps, batch_size=XB.shape[0],
            progress=False).params
    d = np.asarray(net.apply(p, jnp.asarray(XA))) - f0
    return d - d.mean(1, keepdims=True)


def lazy_sweep(config, benchmark: str, control_benchmark: str) -> dict:
    """Per width and seed: ‖Δf_A‖ predicted and measured, the relative gap, and the control's gap (the
    other benchmark's prediction against this benchmark's measurement)."""
    lz = config["lazy"]
    out = {"widths": lz["widths"], "seeds": config["seeds"], "lr": lz["lr"], "steps": lz["steps"], "n": lz["n"],
           "predicted": {}, "measured": {}, "gap": {}, "control_gap": {}}
    data = {b: tasks_of({**config, "n_train": lz["n"]}, b, 2)[0] for b in (benchmark, control_benchmark)}
    for width in lz["widths"]:
        net = net_of(config, width)
        for key in ("predicted", "measured", "gap", "control_gap"):
            out[key][width] = []
        for seed in config["seeds"]:
            res = {}
            for b, ((XA, yA), (XB, yB)) in data.items():
                XA, XB = XA.astype(np.float64), XB.astype(np.float64)
                p0 = net.init(seed)
                pA = fit(net, p0, XA, yA, __import__("optax").sgd(lz["lr"]), loss="cross_entropy",
                         epochs=lz["steps"], batch_size=XA.shape[0], progress=False).params  # task 1
                res[b] = (lazy_forgetting(net, pA, XA, XB, yB, lz["lr"], lz["steps"]),
                          trained_forgetting(net, pA, XA, XB, yB, lz["lr"], lz["steps"]) if b == benchmark else None)
            pred, meas = res[benchmark]
            other = res[control_benchmark][0]
            out["predicted"][width].append(float(np.linalg.norm(pred)))
            out["measured"][width].append(float(np.linalg.norm(meas)))
            out["gap"][width].append(float(np.linalg.norm(meas - pred) / np.linalg.norm(pred)))
            out["control_gap"][width].append(float(np.linalg.norm(meas - other) / np.linalg.norm(other)))
    return out
