"""ntk_ngd.datasets: shapes, dtypes, the sphere, determinism, digits standardisation and
targets (checked against scikit-learn's raw digits), bad input."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ntk_ngd import datasets, networks


@pytest.mark.parametrize("n,d,c", [(1, 1, 1), (17, 3, 1), (40, 8, 3)])
def test_synthetic_shapes_dtype_sphere(n, d, c):
    X, Y = datasets.synthetic(n, d, c, seed=3)
    assert X.shape == (n, d) and Y.shape == (n, c)
    assert X.dtype == np.float64 and Y.dtype == np.float64
    assert isinstance(X, np.ndarray) and isinstance(Y, np.ndarray)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=0, atol=1e-14)
    assert np.all(np.isfinite(Y))


def test_synthetic_uniform_on_sphere():
    """Uniform on S^{D−1}: E[x] = 0 and E[x xᵀ] = I/D (checked to ~5 standard errors)."""
    n, d = 20000, 4
    X = datasets.sphere(n, d, seed=1)
    se = 1 / np.sqrt(d * n)
    assert np.max(np.abs(X.mean(0))) <= 5 * se
    second = X.T @ X / n
    assert np.max(np.abs(second - np.eye(d) / d)) <= 5 * np.sqrt(2) * se


def test_synthetic_deterministic_and_seeded():
    X1, Y1 = datasets.synthetic(30, 5, 2, seed=7, noise=0.1)
    X2, Y2 = datasets.synthetic(30, 5, 2, seed=7, noise=0.1)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(Y1, Y2)
    X3, Y3 = datasets.synthetic(30, 5, 2, seed=8, noise=0.1)
    assert not np.allclose(X1, X3) and not np.allclose(Y1, Y3)


def test_synthetic_targets_are_a_fixed_function_of_inputs():
    """The teacher does not depend on n: a longer sample extends a shorter one."""
    Xa, Ya = datasets.synthetic(10, 4, 2, seed=5)
    Xb, Yb = datasets.synthetic(25, 4, 2, seed=5)
    np.testing.assert_array_equal(Xa, Xb[:10])
    np.testing.assert_allclose(Ya, Yb[:10], rtol=1e-12, atol=1e-14)


def test_synthetic_noise_is_gaussian_with_given_std():
    n, sigma = 4000, 0.3
    X0, Y0 = datasets.synthetic(n, 6, 1, seed=2)
    X1, Y1 = datasets.synthetic(n, 6, 1, seed=2, noise=sigma)
    np.testing.assert_array_equal(X0, X1)  # noise does not move the inputs or the teacher
    eps = (Y1 - Y0).ravel()
    assert abs(eps.mean()) <= 5 * sigma / np.sqrt(n)
    assert abs(eps.std() - sigma) <= 5 * sigma / np.sqrt(2 * n)


def test_synthetic_teacher_is_a_random_ntk_network():
    """Over teachers, E[f(x)²] is the teacher architecture's NNGP kernel K(x, x) (NT's
    kernel_fn, an independent computation): mean over 48 seeds within 25%, and the ReLU
    teacher is not linear in x (a least-squares affine fit leaves a residual)."""
    d, n = 5, 50
    vals = []
    for seed in range(48):
        X, Y = datasets.synthetic(n, d, 1, seed=seed, teacher_width=256)
        vals.append(np.mean(Y**2))
    teacher = networks.mlp(depth=2, width=256, in_dim=d, out_dim=1, activation="relu", bias=True)
    kxx = float(np.mean(np.diag(np.asarray(teacher.kernel_fn(X, X, "nngp")))))
    assert abs(np.mean(vals) / kxx - 1) <= 0.25, (np.mean(vals), kxx)
    X, Y = datasets.synthetic(400, d, 1, seed=1)
    A = np.concatenate([X, np.ones((400, 1))], axis=1)
    resid = Y - A @ np.linalg.lstsq(A, Y, rcond=None)[0]
    assert np.linalg.norm(resid) >= 0.05 * np.linalg.norm(Y - Y.mean())


@pytest.mark.parametrize("kw,name", [
    ({"n": 0, "in_dim": 3}, "n"), ({"n": 2.5, "in_dim": 3}, "n"), ({"n": 5, "in_dim": 0}, "in_dim"),
    ({"n": 5, "in_dim": 3, "out_dim": 0}, "out_dim"), ({"n": 5, "in_dim": 3, "noise": -1.0}, "noise"),
    ({"n": 5, "in_dim": 3, "seed": -2}, "seed"), ({"n": 5, "in_dim": 3, "activation": "tanh"}, "activation"),
])
def test_synthetic_bad_input(kw, name):
    with pytest.raises(ValueError) as info:
        datasets.synthetic(**kw)
    msg = str(info.value)
    assert name in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw_digits():
    d = load_digits()
    return np.asarray(d.data, np.float64), np.asarray(d.target)


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_digits_full_set_standardised_and_labelled(raw_digits, classes):
    raw, labels = raw_digits
    keep = labels < classes
    raw, labels = raw[keep], labels[keep]
    X, Y = datasets.digits(classes=classes, seed=4)
    assert X.shape == (keep.sum(), 64) and Y.shape == (keep.sum(), classes)
    assert X.dtype == np.float64 and Y.dtype == np.float64
    constant = raw.std(0) == 0
    assert constant.any()  # e.g. pixel 0 is always blank
    np.testing.assert_array_equal(X[:, constant], 0.0)
    np.testing.assert_allclose(X[:, ~constant].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(X[:, ~constant].std(0), 1.0, atol=1e-12)
    # undo the standardisation with the raw statistics and find every row among the raw
    # images: the one-hot target must be that image's label
    back = X * raw.std(0) + raw.mean(0)  # constant pixels: 0·0 + their constant value
    assert np.max(np.abs(back - np.rint(back))) <= 1e-9  # raw pixels are integers 0..16
    back = np.rint(back) + 0.0  # + 0.0 turns -0.0 into 0.0 for the byte comparison
    index = {}
    for row, lab in zip(raw, labels):
        index.setdefault(row.tobytes(), set()).add(int(lab))
    found = [index.get(r.tobytes()) for r in back]
    assert all(f is not None for f in found)
    assert np.array_equal(Y.sum(1), np.ones(len(Y)))
    assert all(int(np.argmax(y)) in f for y, f in zip(Y, found))
    # every image used exactly once (a permutation, class counts as in scikit-learn)
    assert np.array_equal(np.bincount(np.argmax(Y, 1), minlength=classes),
                          np.bincount(labels, minlength=classes))


def test_digits_subsample_seed_prefix_and_targets():
    X1, Y1 = datasets.digits(n=50, classes=10, seed=3)
    X2, Y2 = datasets.digits(n=120, classes=10, seed=3)
    np.testing.assert_array_equal(X1, X2[:50])
    np.testing.assert_array_equal(Y1, Y2[:50])
    X3, _ = datasets.digits(n=50, classes=10, seed=4)
    assert not np.array_equal(X1, X3)
    assert len(np.unique(X2, axis=0)) >= 118  # sampled without replacement (digits has few duplicates)
    _, P = datasets.digits(n=120, classes=10, seed=3, targets="pm1")
    np.testing.assert_array_equal(P, 2 * Y2 - 1)
    Xb, Yb = datasets.digits(n=60, classes=2, seed=1, targets="pm1")
    _, Ob = datasets.digits(n=60, classes=2, seed=1, targets="onehot")
    assert Yb.shape == (60, 1) and set(np.unique(Yb)) == {-1.0, 1.0}
    np.testing.assert_array_equal(Yb[:, 0], np.where(Ob[:, 1] == 1, 1.0, -1.0))


@pytest.mark.parametrize("kw,name", [
    ({"classes": 1}, "classes"), ({"classes": 11}, "classes"), ({"classes": 2.0}, "classes"),
    ({"n": 0}, "n"), ({"n": 10**6}, "n"), ({"n": 361, "classes": 2}, "n"),
    ({"targets": "labels"}, "targets"), ({"seed": -1}, "seed"),
])
def test_digits_bad_input(kw, name):
    with pytest.raises(ValueError) as info:
        datasets.digits(**kw)
    msg = str(info.value)
    assert name in msg and "\n" not in msg
