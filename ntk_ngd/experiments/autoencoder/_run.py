"""Train every optimiser of the autoencoder figure: a calibration grid on the calibration seed, the chosen
hyper-parameters on the judged seeds, and the Fisher-approximation errors at the initial and the trained weights."""
from __future__ import annotations

import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ... import datasets, losses
from ...factored import block_error
from ...factored.features import whitened_features
from ...fitting import fit
from ...networks import mlp
from .._base import progress

DATASETS = {"mnist": datasets.mnist, "digits": datasets.digits}


def images(cfg, n: int | None = None):
    """The first ``n`` (default cfg["n"]) images of the shipped data set, pixels scaled to [0, 1], in cfg["dtype"]."""
    X = np.asarray(DATASETS[cfg["data"]](n=cfg["n"] if n is None else n, normalise="none")[0], float)
    return jnp.asarray(X / X.max(), cfg["dtype"])


def network(cfg, in_dim: int):
    """The mirrored ReLU autoencoder in_dim-hidden…-in_dim, linear output (MSE)."""
    hidden = [int(h) for h in cfg["hidden"]]
    return mlp(depth=len(hidden) + 1, width=hidden, in_dim=in_dim, out_dim=in_dim, activation="relu")


def initial(net, seed: int, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype), net.init(seed))


def train(opt, cfg, net, X, lr, damping, seed: int, epochs: int, tx=None) -> dict:
    """One run of ``opt`` (:class:`._optimisers.Optimiser`; ``tx`` its transformation if already built) from the
    seed's initial weights, shuffled by the seed (the Fisher samples' seed is cfg["sample_seed"] for every run)."""
    tx = opt.build(net, lr, damping, dict(cfg, seed=cfg["sample_seed"])) if tx is None else tx
    with warnings.catch_warnings():  # a diverging grid point stops with a warning; the record keeps diverged_at
        warnings.simplefilter("ignore", RuntimeWarning)
        tr = fit(net, initial(net, seed, cfg["dtype"]), X, X, tx, loss="mse", epochs=epochs,
                 batch_size=cfg["batch"], seed=seed, name=opt.name, lr=lr)
    loss = np.asarray(tr.train_loss, float)
    final = float(loss[-1]) if tr.diverged_at is None and np.isfinite(loss[-1]) else math.inf
    return {"lr": lr, "damping": damping, "seed": seed, "epochs": np.asarray(tr.epochs, float).tolist(),
            "wall": np.asarray(tr.wall_time, float).tolist(), "loss": loss.tolist(), "final": final,
            "diverged_at": tr.diverged_at, "params": tr.params}


def calibrate(opt, cfg, net, X) -> dict:
    """The lr (× damping) grid on the calibration seed, scored by the final train loss (∞ when diverged)."""
    dampings = cfg["dampings"] if opt.damped else [None]
    grid = []
    for lr in cfg["lrs"]:
        for damping in dampings:
            run = train(opt, cfg, net, X, lr, damping, cfg["calibration_seed"], cfg["calibration_epochs"])
            grid.append({k: run[k] for k in ("lr", "damping", "final", "diverged_at")})
    best = min(grid, key=lambda r: r["final"])
    return {"grid": grid, "lr": best["lr"], "damping": best["damping"], "final": best["final"]}


def fisher_errors(cfg, net, params, X) -> list[dict]:
    """Per-layer relative Frobenius errors of every factored approximation against the exact layer block, on the
    first cfg["fisher_n"] images, in float64 (:mod:`ntk_ngd.factored.block_error`)."""
    p64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)
    Xf = jnp.asarray(X[: cfg["fisher_n"]], jnp.float64)
    return block_error.relative_errors(whitened_features(net, p64, Xf, Xf, losses.get("mse")))


def run_all(cfg, optimisers, log=lambda *_: None) -> dict:
    """Calibration, judged runs and Fisher errors of every optimiser (the figure's raw data)."""
    X = images(cfg)
    X_cal = X[: cfg["calibration_n"]]
    net = network(cfg, X.shape[1])
    out = {"calibration": {}, "judged": {}, "fisher": {}, "seconds": {}}
    for opt in progress(optimisers, len(optimisers), "autoencoder"):
        start = time.perf_counter()
        cal = calibrate(opt, cfg, net, X_cal)
        out["calibration"][opt.name] = cal
        tx = opt.build(net, cal["lr"], cal["damping"], dict(cfg, seed=cfg["sample_seed"]))  # compiled once:
        train(opt, cfg, net, X[: cfg["batch"]], cal["lr"], cal["damping"], 0, 1, tx)  # one step, so wall times exclude it
        runs = [train(opt, cfg, net, X, cal["lr"], cal["damping"], s, cfg["epochs"], tx) for s in cfg["judged_seeds"]]
        first = runs[0]
        if first["final"] < math.inf:
            out["fisher"][opt.name] = fisher_errors(cfg, net, first["params"], X)
        for r in runs:
            r.pop("params")
        out["judged"][opt.name] = runs
        if opt.name == cfg.get("control_of"):  # the broken-condition control: the same optimiser, ρ swamping the Fisher
            out["control"] = [train(opt, cfg, net, X, cal["lr"], cfg["control_damping"], s, cfg["epochs"])
                              for s in cfg["judged_seeds"]]
            for r in out["control"]:
                r.pop("params")
        out["seconds"][opt.name] = time.perf_counter() - start
        log(f"  autoencoder {opt.name}: lr {cal['lr']:g}, damping {cal['damping']}, finals "
            f"{[round(r['final'], 4) for r in runs]} ({out['seconds'][opt.name]:.0f} s)")
    out["fisher"]["initial"] = fisher_errors(cfg, net, initial(net, cfg["judged_seeds"][0], cfg["dtype"]), X)
    return out


__all__ = ["calibrate", "fisher_errors", "images", "network", "run_all", "train"]
