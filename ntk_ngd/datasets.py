"""Data sets: a synthetic teacher task on the sphere and scikit-learn's bundled digits.

Both loaders return float64 numpy arrays ``(X, Y)`` with X of shape (N, D) and Y of shape
(N, C), and are deterministic given ``seed``.

* :func:`synthetic` — inputs uniform on the unit sphere S^{D−1} (so ‖x‖ = 1, the setting in
  which NTK theory is usually stated), targets y = f_teacher(x) + ε from a random teacher MLP
  (an :func:`ntk_ngd.networks.mlp` at its own seed), ε ~ N(0, noise²) i.i.d.
* :func:`digits` — the 8×8 handwritten digits shipped inside scikit-learn (1797 images, no
  download), restricted to the first ``classes`` digit classes, standardised per pixel and
  subsampled with the seed.
"""
from __future__ import annotations

import numpy as np

from . import _validate

__all__ = ["synthetic", "digits", "sphere"]

#: numpy SeedSequence spawn keys: the inputs, the teacher and the label noise draw from
#: independent streams, so changing ``noise`` does not change X or the teacher.
_STREAM_X, _STREAM_TEACHER, _STREAM_NOISE = 0, 1, 2


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def sphere(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniform on the unit sphere in R^dim: normalised standard Gaussians."""
    n = _validate.positive_int("n", n)
    dim = _validate.positive_int("in_dim", dim)
    seed = _validate.positive_int("seed", seed, minimum=0)
    g = _rng(seed, _STREAM_X).standard_normal((n, dim))
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    # A Gaussian draw is exactly zero with probability 0; guard anyway.
    norms[norms == 0] = 1.0
    return (g / norms).astype(np.float64)


def synthetic(
    n: int,
    in_dim: int,
    out_dim: int = 1,
    seed: int = 0,
    noise: float = 0.0,
    teacher_width: int = 256,
    activation: str = "relu",
    teacher_depth: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-student regression data.

    X: (n, in_dim) uniform on the unit sphere. Y: (n, out_dim) = f_teacher(X) + noise·ε with
    f_teacher a depth-``teacher_depth`` :func:`~ntk_ngd.networks.mlp` of width
    ``teacher_width`` and the given ``activation`` (NTK parameterization, bias on), its
    parameters drawn from a seed derived from ``seed``; ε standard normal.
    """
    from .networks import ACTIVATIONS, mlp  # local: networks imports neural-tangents

    n = _validate.positive_int("n", n)
    in_dim = _validate.positive_int("in_dim", in_dim)
    out_dim = _validate.positive_int("out_dim", out_dim)
    seed = _validate.positive_int("seed", seed, minimum=0)
    noise = _validate.nonnegative("noise", noise)
    teacher_width = _validate.positive_int("teacher_width", teacher_width)
    teacher_depth = _validate.positive_int("teacher_depth", teacher_depth)
    _validate.choice("activation", activation, ACTIVATIONS)

    X = sphere(n, in_dim, seed)
    teacher = mlp(
        depth=teacher_depth, width=teacher_width, in_dim=in_dim, out_dim=out_dim,
        activation=activation, bias=True,
    )
    teacher_seed = int(_rng(seed, _STREAM_TEACHER).integers(0, 2**31 - 1))
    Y = np.asarray(teacher.apply(teacher.init(teacher_seed), X), dtype=np.float64)
    if noise > 0:
        Y = Y + noise * _rng(seed, _STREAM_NOISE).standard_normal(Y.shape)
    return X, Y.astype(np.float64)


_TARGETS = ("onehot", "pm1")


def digits(
    n: int | None = None,
    classes: int = 10,
    seed: int = 0,
    targets: str = "onehot",
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (64 features), no download.

    Keeps the digit classes 0..classes−1 (``classes`` in 2..10). Features are standardised
    per pixel with the mean and standard deviation over *that whole data set* (all images of
    the kept classes; pixels constant over it are set to 0), then ``n`` images (default: all,
    in shuffled order) are drawn without replacement with ``seed``. For a given seed the
    sample with ``n`` is a prefix of the sample with any larger ``n``.

    ``targets``: ``"onehot"`` → (n, classes) one-hot rows; ``"pm1"`` → ±1 targets: for
    ``classes == 2`` one column (+1 for digit 1, −1 for digit 0), otherwise 2·onehot − 1.
    """
    from sklearn.datasets import load_digits

    classes = _validate.positive_int("classes", classes, minimum=2)
    if classes > 10:
        raise ValueError(f"classes must be in 2..10, got {classes}")
    seed = _validate.positive_int("seed", seed, minimum=0)
    _validate.choice("targets", targets, _TARGETS)

    data = load_digits()
    keep = data.target < classes
    raw = np.asarray(data.data, dtype=np.float64)[keep]
    labels = np.asarray(data.target)[keep]
    total = raw.shape[0]
    if n is None:
        n = total
    n = _validate.positive_int("n", n)
    if n > total:
        raise ValueError(f"n must be <= {total} (digits with {classes} classes), got {n}")

    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    constant = std == 0
    X_all = np.where(constant, 0.0, (raw - mean) / np.where(constant, 1.0, std))

    idx = np.random.default_rng(seed).permutation(total)[:n]
    X = X_all[idx]
    y = labels[idx]
    onehot = np.eye(classes, dtype=np.float64)[y]
    if targets == "onehot":
        Y = onehot
    elif classes == 2:
        Y = (2.0 * y - 1.0)[:, None]
    else:
        Y = 2.0 * onehot - 1.0
    return np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(Y, dtype=np.float64)
