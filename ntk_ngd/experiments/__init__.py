"""The experiments behind every figure, one module each (run them with `ntk-ngd figures`)."""
from __future__ import annotations

import importlib

#: Figure names in the order the report lists them. A module per name in this package.
EXPERIMENTS = (
    "isotropy_table",
    "convergence",
    "width_scaling",
    "lazy_rich",
    "unit_wise",
    "kfac_input_rank",
    "ef_vs_ief",
    "deep_linear",
    "predictions",
    "kron_approx_error",
    "cross_entropy",
    "fisher_variance",
    "mnist_one_step",
    "continual",
    "continual_mnist",
    "ief_optimiser",
    "online_ng",
    "autoencoder",
)

PROFILES = ("tiny", "quick", "full")


def available() -> tuple[str, ...]:
    """Experiments whose module is present."""
    out = []
    for name in EXPERIMENTS:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            continue
        out.append(name)
    return tuple(out)


def load(name: str):
    """The module of figure ``name``; only that module is imported (a figure runs even while another
    figure's module does not import)."""
    if name in EXPERIMENTS:
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise ValueError(f"unknown figure {name!r}; choose from: {', '.join(EXPERIMENTS)}")
