"""Task sequences for continual learning built from the image data sets (digits, MNIST).

* :func:`permuted_tasks` — Permuted digits/MNIST: every task holds the same images, task t
  with its own fixed random pixel permutation (task 0: none).
* :func:`rotated_tasks` — Rotated digits/MNIST: every task holds the same images, task t
  rotated by t·max_angle/(n_tasks − 1) degrees (task 0: unrotated).

Each task is a pair ``(X, Y)`` of float64 arrays shaped as the loader's,
:func:`ntk_ngd.datasets.digits` or :func:`ntk_ngd.datasets.mnist`, with the same ``n``,
``classes``, ``seed``, ``targets`` and ``normalise`` semantics; task 0 *is* the loader's
output. The targets are the same in every task (the "domain-incremental" setting).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .. import _validate, datasets

__all__ = ["permuted_tasks", "rotated_tasks", "rotate_images", "rotation_angles"]

_DATASETS = tuple(datasets._IMAGES)

#: SeedSequence spawn key of the pixel permutations: task t draws from (_STREAM_PERMUTE, t),
#: apart from the loaders' streams, so task t's permutation depends on (seed, t) only.
_STREAM_PERMUTE = 4

#: Rotated MNIST in Farajtabar et al. (2019, OGD) rotates successive tasks by 10 degrees.
_DEFAULT_STEP = 10.0


def _check_common(n_tasks, dataset) -> int:
    n_tasks = _validate.positive_int("n_tasks", n_tasks)
    _validate.choice("dataset", dataset, _DATASETS)
    return n_tasks


def permuted_tasks(
    n_tasks: int,
    n: int | None,
    dataset: str = "digits",
    seed: int = 0,
    classes: int = 10,
    targets: str = "onehot",
    normalise: str = "standardise",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_tasks`` Permuted-digits/MNIST tasks: a list of ``(X, Y)``.

    Task 0 is the plain loader output ``datasets.<dataset>(n, classes, seed, targets,
    normalise)``. Task t > 0 holds *the same n images* (the same rows and targets, as in
    Permuted MNIST of Goodfellow et al. 2013 / Kirkpatrick et al. 2017 and the OGD
    experiments of Farajtabar et al. 2019: every task is the same data seen through a
    different fixed pixel shuffle) with the pixels reordered by a random permutation π_t drawn
    from (seed, t): X_t[:, j] = X_0[:, π_t(j)]. π_t does not depend on ``n_tasks``, so a
    shorter sequence is a prefix of a longer one.

    Permuting the normalised pixels equals normalising the permuted raw pixels (per-pixel
    standardisation, per-image unit norm and the fixed [0, 1] scaling all commute with a
    reordering of pixels), so each task is also exactly what the loader would return for
    the permuted data set.
    """
    n_tasks = _check_common(n_tasks, dataset)
    X0, Y = datasets._load(dataset, n, classes, seed, targets, normalise)
    tasks = [(X0, Y)]
    for t in range(1, n_tasks):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_PERMUTE, t)))
        perm = rng.permutation(X0.shape[1])
        tasks.append((np.ascontiguousarray(X0[:, perm]), Y.copy()))
    return tasks


def rotation_angles(n_tasks: int, max_angle: float | None = None) -> np.ndarray:
    """The angles (degrees) of :func:`rotated_tasks`: t·max_angle/(n_tasks − 1), t = 0..n_tasks−1.

    ``max_angle=None`` → 10·(n_tasks − 1), i.e. steps of 10° (0°, 10°, 20°, … as in the
    Rotated MNIST of Farajtabar et al. 2019). One task → [0].
    """
    n_tasks = _validate.positive_int("n_tasks", n_tasks)
    if max_angle is None:
        max_angle = _DEFAULT_STEP * (n_tasks - 1)
    if isinstance(max_angle, bool) or not isinstance(max_angle, (int, float, np.integer, np.floating)) \
            or not math.isfinite(max_angle):
        raise ValueError(f"max_angle must be a finite number of degrees, got {max_angle!r}")
    if n_tasks == 1:
        return np.zeros(1)
    return np.arange(n_tasks) * (float(max_angle) / (n_tasks - 1))


def rotate_images(images, angle: float) -> np.ndarray:
    """Rotate flattened square images (rows of side² row-major pixels) by ``angle`` degrees
    counter-clockwise (as displayed with row 0 at the top, like ``numpy.rot90``) about the
    image centre, by bilinear interpolation of the image extended by 0 outside its frame
    (``scipy.ndimage.rotate(reshape=False, order=1, mode="grid-constant", cval=0)``).

    Each output pixel is a convex combination of at most four input pixels and zeros, so
    non-negative intensities stay within their range. Multiples of 90° are exact pixel
    permutations (scipy evaluates cos/sin in degrees exactly there); 0° returns a copy.
    """
    images = np.asarray(images, dtype=np.float64)
    side = math.isqrt(images.shape[1]) if images.ndim == 2 else -1
    if images.ndim != 2 or side * side != images.shape[1]:
        raise ValueError(f"images must be rows of side*side pixels, got shape {images.shape}")
    if angle == 0:
        return images.copy()
    stack = images.reshape(-1, side, side)
    out = ndimage.rotate(stack, float(angle), axes=(2, 1), reshape=False, order=1,
                         mode="grid-constant", cval=0.0)
    return np.ascontiguousarray(out.reshape(images.shape), dtype=np.float64)


def rotated_tasks(
    n_tasks: int,
    n: int | None,
    dataset: str = "digits",
    max_angle: float | None = None,
    seed: int = 0,
    classes: int = 10,
    targets: str = "onehot",
    normalise: str = "standardise",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_tasks`` Rotated-digits/MNIST tasks: a list of ``(X, Y)``.

    Every task holds the same n images and targets as ``datasets.<dataset>(n, classes, seed,
    targets, normalise)`` (task 0 is exactly that output); task t rotates each image by
    :func:`rotation_angles` ``[t]`` = t·max_angle/(n_tasks − 1) degrees counter-clockwise
    about its centre on its own grid (8×8 digits, 28×28 MNIST), bilinearly
    (:func:`rotate_images`). Default ``max_angle=None``: 10° per task, the Rotated MNIST
    steps of Farajtabar et al. (2019), for both data sets.

    Order of operations: rotate the *raw* intensities, then normalise. Rotation must see raw
    pixels, because the zero it fills in outside the frame means "no ink" only there (in
    standardised units 0 is the mean pixel), and interpolation should mix intensities, not
    z-scores. Normalisation is then the loader's, applied to the rotated data set as if it
    were a data set of its own: ``"standardise"`` uses each task's own per-pixel statistics
    (over all images of the kept classes, rotated), so every task is zero-mean, unit-variance
    per pixel like task 0, and pixels the rotation brings ink into are not zeroed by task 0's
    blank-pixel rule. For multiples of 90° (pure pixel permutations) this equals rotating
    task 0's features. If a single fixed input map across tasks matters more, use
    ``normalise="none"`` or ``"unit"``, which do not depend on the data.
    """
    n_tasks = _check_common(n_tasks, dataset)
    angles = rotation_angles(n_tasks, max_angle)
    raw, idx, Y = datasets._image_pool(dataset, n, classes, seed, targets, normalise)
    max_value = datasets._IMAGES[dataset][1]
    tasks = []
    for t, angle in enumerate(angles):
        rotated = raw if angle == 0 else rotate_images(raw, angle)
        X = datasets._normalise(rotated, normalise, max_value)[idx]
        tasks.append((np.ascontiguousarray(X, dtype=np.float64), Y if t == 0 else Y.copy()))
    return tasks
