"""ntk_ngd.continual.tasks: permuted and rotated digits/MNIST task sequences — shapes, task 0 is
the plain loader output, permutations reorder the same pixels, rotations against numpy.rot90
(exact at 90°) and an independent bilinear interpolation, determinism, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ntk_ngd import datasets
from ntk_ngd.continual import permuted_tasks, rotated_tasks
from ntk_ngd.continual.tasks import rotate_images, rotation_angles

LOADERS = {"digits": datasets.digits, "mnist": datasets.mnist}
SIDE = {"digits": 8, "mnist": 28}


@pytest.fixture(scope="module")
def raw_digits():
    d = load_digits()
    return np.asarray(d.data, np.float64), np.asarray(d.target)


def _rot90_rows(X, side, k=1):
    return np.stack([np.rot90(im, k) for im in X.reshape(-1, side, side)]).reshape(X.shape)


def _bilinear_rotate(img, angle):
    """Reference: rotate one square image counter-clockwise (as displayed) about its centre;
    each output pixel samples the input at the inversely rotated position, bilinearly, with 0
    outside the frame. Written from the definition, loop by loop."""
    side = img.shape[0]
    c = (side - 1) / 2
    th = np.deg2rad(angle)
    cos, sin = np.cos(th), np.sin(th)
    out = np.zeros_like(img)
    for i in range(side):
        for j in range(side):
            y, x = i - c, j - c
            ys, xs = c + cos * y + sin * x, c + cos * x - sin * y
            i0, j0 = int(np.floor(ys)), int(np.floor(xs))
            fy, fx = ys - i0, xs - j0
            val = 0.0
            for di, wy in ((0, 1 - fy), (1, fy)):
                for dj, wx in ((0, 1 - fx), (1, fx)):
                    ii, jj = i0 + di, j0 + dj
                    if 0 <= ii < side and 0 <= jj < side:
                        val += wy * wx * img[ii, jj]
            out[i, j] = val
    return out


# ---------------------------------------------------------------------------------------------
# permuted tasks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["digits", "mnist"])
def test_permuted_shapes_task0_and_same_pixels(dataset):
    n, classes = 40, 4
    tasks = permuted_tasks(4, n, dataset=dataset, seed=2, classes=classes)
    X0, Y0 = LOADERS[dataset](n, classes=classes, seed=2)
    assert len(tasks) == 4
    np.testing.assert_array_equal(tasks[0][0], X0)  # task 0: the plain data set
    np.testing.assert_array_equal(tasks[0][1], Y0)
    d = SIDE[dataset] ** 2
    perms = []
    for X, Y in tasks:
        assert X.shape == (n, d) and Y.shape == (n, classes)
        assert X.dtype == np.float64 and Y.dtype == np.float64
        np.testing.assert_array_equal(Y, Y0)  # same images, same targets
        np.testing.assert_array_equal(np.sort(X, axis=1), np.sort(X0, axis=1))  # same pixels per row
        # one permutation of the columns, shared by every row: each column of X is a column of X0
        cols = {}
        for j, col in enumerate(X0.T):
            cols.setdefault(col.tobytes(), []).append(j)
        perm = np.array([cols[col.tobytes()][0] for col in X.T])
        np.testing.assert_array_equal(X, X0[:, perm])
        perms.append(X)
    for s in range(1, 4):
        assert not np.array_equal(perms[s], X0)
        for t in range(s + 1, 4):
            assert not np.array_equal(perms[s], perms[t])


def test_permuted_deterministic_prefix_and_seeded():
    a = permuted_tasks(3, 25, seed=1)
    b = permuted_tasks(5, 25, seed=1)
    for (Xa, Ya), (Xb, Yb) in zip(a, b):  # task t depends on (seed, t) only
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(Ya, Yb)
    c = permuted_tasks(3, 25, seed=2)
    assert not np.array_equal(a[0][0], c[0][0])  # another subsample
    assert not np.array_equal(a[1][0], c[1][0])


@pytest.mark.parametrize("normalise", ["unit", "none"])
def test_permuted_other_normalisations_are_permutations_of_the_loader(normalise):
    tasks = permuted_tasks(2, 30, dataset="digits", seed=0, normalise=normalise)
    X0, _ = datasets.digits(30, seed=0, normalise=normalise)
    np.testing.assert_array_equal(tasks[0][0], X0)
    np.testing.assert_array_equal(np.sort(tasks[1][0], axis=1), np.sort(X0, axis=1))


# ---------------------------------------------------------------------------------------------
# rotation
# ---------------------------------------------------------------------------------------------
def test_rotation_angles_default_and_spacing():
    np.testing.assert_array_equal(rotation_angles(5), [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(rotation_angles(1), [0])
    np.testing.assert_allclose(rotation_angles(4, 90), [0, 30, 60, 90])
    np.testing.assert_allclose(rotation_angles(3, -45.0), [0, -22.5, -45])


def test_rotate_images_zero_is_identity_and_90_is_rot90(raw_digits):
    raw, _ = raw_digits
    np.testing.assert_array_equal(rotate_images(raw, 0), raw)
    np.testing.assert_array_equal(rotate_images(raw, 0.0), raw)
    np.testing.assert_array_equal(rotate_images(raw, 90), _rot90_rows(raw, 8))
    np.testing.assert_array_equal(rotate_images(raw, -90), _rot90_rows(raw, 8, k=-1))
    np.testing.assert_array_equal(rotate_images(raw, 180), _rot90_rows(raw, 8, k=2))


@pytest.mark.parametrize("angle", [10.0, 33.0, 45.0, -70.0])
def test_rotate_images_is_bilinear_about_the_centre(raw_digits, angle):
    raw, _ = raw_digits
    sample = raw[:12]
    got = rotate_images(sample, angle)
    want = np.stack([_bilinear_rotate(im, angle) for im in sample.reshape(-1, 8, 8)]).reshape(sample.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert got.min() >= 0 and got.max() <= 16 + 1e-12  # convex combinations of 0..16 and 0


def test_rotate_images_bad_shape():
    with pytest.raises(ValueError, match="side"):
        rotate_images(np.zeros((3, 10)), 10)


# ---------------------------------------------------------------------------------------------
# rotated tasks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["digits", "mnist"])
def test_rotated_shapes_and_task0(dataset):
    tasks = rotated_tasks(3, 30, dataset=dataset, seed=1, classes=3)
    X0, Y0 = LOADERS[dataset](30, classes=3, seed=1)
    np.testing.assert_array_equal(tasks[0][0], X0)
    np.testing.assert_array_equal(tasks[0][1], Y0)
    for X, Y in tasks:
        assert X.shape == (30, SIDE[dataset] ** 2) and Y.shape == (30, 3) and X.dtype == np.float64
        np.testing.assert_array_equal(Y, Y0)
    assert not np.array_equal(tasks[1][0], X0) and not np.array_equal(tasks[2][0], tasks[1][0])


def test_rotated_max_angle_zero_repeats_task0():
    tasks = rotated_tasks(3, 20, max_angle=0, seed=3)
    for X, _ in tasks[1:]:
        np.testing.assert_array_equal(X, tasks[0][0])


def test_rotated_digits_90_is_rot90_of_the_raw_images(raw_digits):
    """Independent check: rot90 the raw digits here, standardise them with their own
    statistics here, and find every row of task 1 (90°) among them with the right label;
    also task 1 = task 0's features rotated by 90° (standardisation commutes with a pixel
    permutation), and with normalise="none" task 1 · 16 = rot90 of the raw rows."""
    raw, labels = raw_digits
    classes = 5
    keep = labels < classes
    rot = _rot90_rows(raw[keep], 8)
    rot_labels = labels[keep]
    (X0, Y0), (X1, Y1) = rotated_tasks(2, 200, dataset="digits", max_angle=90, seed=4, classes=classes)
    mean, std = rot.mean(0), rot.std(0)
    constant = std == 0
    np.testing.assert_array_equal(X1[:, constant], 0.0)
    back = np.rint(X1 * std + mean) + 0.0
    np.testing.assert_allclose(X1 * std + mean, back, rtol=0, atol=1e-9)
    index = {}
    for row, lab in zip(rot, rot_labels):
        index.setdefault(row.tobytes(), set()).add(int(lab))
    found = [index.get(r.tobytes()) for r in back]
    assert all(f is not None for f in found)
    assert all(int(np.argmax(y)) in f for y, f in zip(Y1, found))
    np.testing.assert_array_equal(X1, _rot90_rows(X0, 8))
    (N0, _), (N1, _) = rotated_tasks(2, 200, dataset="digits", max_angle=90, seed=4, classes=classes,
                                     normalise="none")
    np.testing.assert_array_equal(N1 * 16, _rot90_rows(N0 * 16, 8))


def test_rotated_mnist_90_is_rot90():
    (X0, _), (X1, _) = rotated_tasks(2, 50, dataset="mnist", max_angle=90, seed=0, normalise="none")
    np.testing.assert_array_equal(X1, _rot90_rows(X0, 28))


def test_rotated_normalised_after_rotation():
    """Standardisation after rotation: with n=None (the whole pool) every task is zero-mean,
    unit-variance per non-constant pixel; "unit" gives ‖x‖ = 1 in every task; "none" keeps
    task t·16 equal to the rotated raw images of task 0."""
    for X, _ in rotated_tasks(3, None, dataset="digits", max_angle=60, classes=3):
        live = X.std(0) > 0
        np.testing.assert_allclose(X[:, live].mean(0), 0.0, atol=1e-12)
        np.testing.assert_allclose(X[:, live].std(0), 1.0, atol=1e-12)
    for X, _ in rotated_tasks(3, 40, dataset="digits", max_angle=60, normalise="unit"):
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=0, atol=1e-14)
    tasks = rotated_tasks(3, 40, dataset="digits", max_angle=60, normalise="none")
    raw0 = np.rint(tasks[0][0] * 16)
    np.testing.assert_allclose(tasks[2][0] * 16, rotate_images(raw0, 60), rtol=0, atol=1e-12)


def test_rotated_deterministic_and_seeded():
    a = rotated_tasks(3, 25, seed=1)
    b = rotated_tasks(3, 25, seed=1)
    for (Xa, Ya), (Xb, Yb) in zip(a, b):
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(Ya, Yb)
    c = rotated_tasks(3, 25, seed=2)
    assert not np.array_equal(a[2][0], c[2][0])


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [permuted_tasks, rotated_tasks])
@pytest.mark.parametrize("kw,name", [
    ({"n_tasks": 0}, "n_tasks"), ({"n_tasks": 1.5}, "n_tasks"), ({"dataset": "cifar"}, "dataset"),
    ({"n": 10**4}, "n"), ({"dataset": "mnist", "n": 1001, "classes": 2}, "n"), ({"n": 0}, "n"),
    ({"classes": 1}, "classes"), ({"targets": "labels"}, "targets"), ({"normalise": "l2"}, "normalise"),
])
def test_tasks_bad_input(fn, kw, name):
    args = {"n_tasks": 2, "n": 10, **kw}
    with pytest.raises(ValueError) as info:
        fn(**args)
    msg = str(info.value)
    assert name in msg and "\n" not in msg


@pytest.mark.parametrize("max_angle", [float("inf"), float("nan"), "90", True])
def test_rotated_bad_max_angle(max_angle):
    with pytest.raises(ValueError) as info:
        rotated_tasks(3, 10, max_angle=max_angle)
    msg = str(info.value)
    assert "max_angle" in msg and "\n" not in msg
