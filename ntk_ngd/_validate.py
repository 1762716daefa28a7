"""Early, one-line checks of user input (raised before anything reaches jax)."""
from __future__ import annotations

from typing import Iterable

import numpy as np


def positive_int(name: str, value, minimum: int = 1) -> int:
    if is_traced(value):  # e.g. jax.vmap(net.init) over seeds: checked by the caller's shapes only
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def nonnegative(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def is_traced(value) -> bool:
    """True for a jax tracer (inside jit/vmap/grad): only its static shape may be checked."""
    import jax

    return isinstance(value, jax.core.Tracer)


def finite_matrix(name: str, value, cols: int | None = None, rows: int | None = None):
    """A 2-D finite float array; ``cols``/``rows`` if given must match.

    Tracers (inside jit/vmap/grad) are checked for shape only and returned unchanged: values are
    validated at the public boundary, never on a tracer."""
    if is_traced(value):
        shape = value.shape
        if len(shape) != 2 or (cols is not None and shape[1] != cols) or (rows is not None and shape[0] != rows):
            raise ValueError(f"{name} must have shape ({rows or 'N'}, {cols or 'D'}), got {shape}")
        return value
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples x features), got shape {arr.shape}")
    if cols is not None and arr.shape[1] != cols:
        raise ValueError(f"{name} has {arr.shape[1]} columns but the network expects {cols}")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but {rows} were expected")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; clean the data first")
    return arr


def choice(name: str, value, options: Iterable[str]) -> str:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(options)}")
    return value
