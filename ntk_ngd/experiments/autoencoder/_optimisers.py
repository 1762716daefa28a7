"""The optimisers the autoencoder figure trains, one table: every registered method with a factored form (the
registry decides, :func:`ntk_ngd.factored.form.methods_with_factored_form`), the optax baselines, and the online
deep-linear natural gradient when :mod:`ntk_ngd.factored.online` is present.

Every natural gradient is the amortised mini-batch factored direction (:func:`ntk_ngd.factored.minibatch.natural_gradient`:
EMA of the statistics with ``decay``, refreshed every T_cov steps, preconditioners every T_inv steps, sampled Fisher),
followed, as in the KPSVD authors' code (``torch.optim.SGD(momentum=0.9)`` on the preconditioned gradient), by heavy-ball
momentum and the learning rate: ``chain(natural_gradient, trace(momentum), scale_by_learning_rate(lr))``.
"""
from __future__ import annotations

import dataclasses
import importlib

import optax

from ...factored import form as factored_form, minibatch

#: per-method options: KPSVD at rank 2 (the issue and the KPSVD paper's figures); the two Kronecker sums with the exact
#: two-term inverse and the π-split (THEORY.md "Factored form": PCG at every step is 3–10× slower, bench_factored)
METHOD_OPTIONS = {"kpsvd": {"rank": 2, "factored_damping": "pi"}, "kfac_cor": {"factored_damping": "pi"}}
#: iteration tolerances of the Kronecker-sum fits and solves by dtype (bench_factored's)
TOLERANCES = {"float32": 1e-5, "float64": 1e-10}
BASELINES = ("sgd", "adam")
ONLINE = "online_ng"


@dataclasses.dataclass(frozen=True)
class Optimiser:
    """One trained optimiser: ``name`` (a registry method, a baseline or ``online_ng``), whether it takes a damping
    (its grid is lr × damping), and ``build(net, lr, damping, cfg)`` → an optax transformation."""

    name: str
    damped: bool
    build: object


def _options(name: str, dtype: str) -> dict:
    opts = dict(METHOD_OPTIONS.get(name, {}))
    if "factored_damping" in opts:
        opts.update(power_tol=TOLERANCES[dtype], cg_tol=TOLERANCES[dtype])
    return opts


def _natural(name):
    def build(net, lr, damping, cfg):
        direction = minibatch.natural_gradient(net, name, damping, "mse", decay=cfg["decay"], cov_every=cfg["t_cov"],
                                               inv_every=cfg["t_inv"], fisher="sampled", seed=cfg["seed"],
                                               **_options(name, cfg["dtype"]))
        return optax.chain(direction, optax.trace(cfg["momentum"]), optax.scale_by_learning_rate(lr))
    return build


def _sgd(net, lr, damping, cfg):
    return optax.sgd(lr, momentum=cfg["momentum"])


def _adam(net, lr, damping, cfg):
    return optax.adam(lr)


def online_module():
    """:mod:`ntk_ngd.factored.online` or None when this checkout has no online natural gradient."""
    try:
        return importlib.import_module("ntk_ngd.factored.online")
    except ModuleNotFoundError as err:
        if err.name != "ntk_ngd.factored.online":
            raise
        return None


def _online(net, lr, damping, cfg):
    module = online_module()
    direction = module.online_natural_gradient(net, decay=cfg["decay"], damping=damping, loss="mse",
                                               cov_every=cfg["t_cov"], inv_every=cfg["t_inv"], fisher="sampled")
    return optax.chain(direction, optax.trace(cfg["momentum"]), optax.scale_by_learning_rate(lr))


def table() -> tuple[Optimiser, ...]:
    """The baselines, every registered method with a factored form, and the online natural gradient if present."""
    out = [Optimiser("sgd", False, _sgd), Optimiser("adam", False, _adam)]
    out += [Optimiser(name, True, _natural(name)) for name in factored_form.methods_with_factored_form()]
    if online_module() is not None:
        out.append(Optimiser(ONLINE, True, _online))
    return tuple(out)


__all__ = ["BASELINES", "METHOD_OPTIONS", "ONLINE", "Optimiser", "online_module", "table"]
