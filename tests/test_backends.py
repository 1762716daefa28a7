"""The pure-jax backend (ntk_ngd.backends) against independent references.

* neural-tangents (NT), when it imports: init (bit-identical), apply, per-layer infinite-width
  kernels and the network's NTK/NNGP (``kernel_fn``), all from NT's stax directly
  (tests/_nt_oracle.py), never through ntk_ngd.networks/kernels, which may use this backend;
* closed forms derived on paper (the diagonal of the ReLU recursion) and the quadrature path
  forced on activations that have a closed form;
* NT values stored in tests/data/nt_reference.npz (scripts/make_nt_reference.py): the test that
  runs where NT cannot be imported (jax ≥ 0.5).

Without NT the package root cannot be imported yet (ntk_ngd/networks.py imports NT at module
level), so this module then loads ``ntk_ngd.backends`` under a bare ``ntk_ngd`` package; run it
there as ``pytest --noconftest tests/test_backends.py`` (tests/conftest.py imports ntk_ngd).
Relative errors are max|A − B| / max|B|.
"""
from __future__ import annotations

import ast
import importlib
import itertools
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
try:
    import ntk_ngd  # noqa: F401  (float64)
except Exception:  # NT missing (ImportError) or broken by a newer jax (any error): load the
    # subpackage without the package root
    sys.modules.pop("ntk_ngd", None)
    _stub = types.ModuleType("ntk_ngd")
    _stub.__path__ = [str(ROOT / "ntk_ngd")]
    sys.modules["ntk_ngd"] = _stub

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_enable_x64", True)
backends = importlib.import_module("ntk_ngd.backends")
from ntk_ngd.backends import activations, mlp, recursions  # noqa: E402

import _nt_oracle  # noqa: E402  (tests/: neural_tangents imported only when called)

HAVE_NT, NT_REASON = backends.neural_tangents_status()
needs_nt = pytest.mark.skipif(not HAVE_NT, reason=NT_REASON)

# Same formulas and, for init/apply, the same operations in the same order as NT: only the
# last-bit differences that XLA may make by fusing differently remain (measured: 0 for apply,
# ≤ 3e-15 relative for the closed-form kernels, ≤ 1e-14 for gelu/sin by quadrature).
TOL = 1e-12
RECTIFIERS = ("relu", "leaky_relu", "abs")


def cusp_tol(act: str, depth: int, dim: int) -> float:
    """Tolerance against NT at coincident pairs (x = x').

    There the rectifier kernels have a √-cusp in the cosine: NT computes θ = arctan2(√(k k' −
    k_12²), k_12), and k, k', k_12 (dot products of length D, then the recursion) each carry a
    relative rounding ≲ (D + 2)·eps, so the computed k k' − k_12² is up to (4D + 8)·eps·k k'
    instead of 0 and θ up to √((4D + 8)·eps) instead of 0. Each rectifier layer's Σ̇ =
    (a² + b²)/2 − (a − b)²θ/(2π) is then off by (a − b)²θ/(π(a² + b²)) relative, and the
    sin θ term of E[φφ] by no more; the L − 1 activation layers add up. The backend snaps c to
    1 there and is exact (test_relu_diagonal_is_exact), so this bounds NT's error, not ours.
    Measured (D = 10, depth 4): NT off by 1.3e-8 (relu) and 4.2e-8 (abs) on the diagonal.
    """
    if act not in RECTIFIERS or depth == 1:
        return TOL
    a, b = activations.ACTIVATIONS[act].slopes
    theta = np.sqrt((4 * dim + 8) * np.finfo(np.float64).eps)
    return (depth - 1) * (a - b) ** 2 / (np.pi * (a**2 + b**2)) * theta


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return float(np.max(np.abs(a - b), initial=0.0)) / (scale if scale > 0 else 1.0)


def _inputs(seed=0, n=6, n2=4, dim=3):
    """X with a repeated row (X[5] = X[2]) and X2 sharing X[0]; rows of different norms."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)) * rng.uniform(0.5, 2.0, (n, 1))
    X[5] = X[2]
    X2 = rng.standard_normal((n2, dim))
    X2[0] = X[0]
    return X, X2


def _coincident(X, X2):
    return np.all(X[:, None, :] == X2[None, :, :], axis=-1)


def _check_blocks(got, ref, same, tol_same: float, what: str):
    """Layer by layer: entries at distinct pairs to TOL, all entries (coincident pairs too) to
    ``tol_same`` (:func:`cusp_tol`)."""
    for l in range(ref.shape[0]):
        assert rel_err(got[l][~same], ref[l][~same]) <= TOL, f"{what}[{l}] distinct pairs"
        assert rel_err(got[l], ref[l]) <= max(tol_same, TOL), f"{what}[{l}] all pairs"


# ---------------------------------------------------------------------------------------------
# against neural-tangents
# ---------------------------------------------------------------------------------------------
class Net(types.SimpleNamespace):
    """The architecture of one test case: what ``recursions.infinite_grams`` reads from a Network."""

    @property
    def depth(self):
        return len(self.hidden) + 1


def _case(act, depth, bias, hidden=(5, 4, 6), w_std=1.3, b_std=0.4):
    """(the architecture, NT's stax layers for it); in_dim 3, out_dim 2."""
    net = Net(in_dim=3, out_dim=2, hidden=tuple(hidden[: depth - 1]), activation=act, bias=bias, w_std=w_std,
              b_std=b_std)
    return net, _nt_oracle.layers(act, net.hidden, net.out_dim, bias, w_std, b_std)


@needs_nt
@pytest.mark.parametrize("act", sorted(activations.ACTIVATIONS))
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_init_and_apply_match_nt(act, depth, bias):
    net, layers = _case(act, depth, bias)
    ours = mlp.init(11 + depth, net.in_dim, net.hidden, net.out_dim, bias)
    theirs = _nt_oracle.init(layers, 11 + depth, net.in_dim)
    assert len(ours) == len(theirs) == 2 * depth - 1
    for p, q in zip(ours, theirs):
        assert (p == ()) == (q == ())
        for a, b in zip(p, q):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype and np.array_equal(a, b)  # bit-identical
    X, _ = _inputs(seed=depth)
    f = mlp.apply(ours, X, act, net.w_std, net.b_std)
    assert rel_err(f, _nt_oracle.apply(layers, theirs, X)) <= TOL


# closed forms (method "auto"): depth 1–4 for relu/erf/linear/gelu, depth 3 for the others;
# the quadrature forced on gelu and sin, compared with NT's closed forms.
INF_CASES = [*((a, d, b, "auto") for a, d, b in itertools.product(("relu", "erf", "linear", "gelu"), (1, 2, 3, 4),
                                                                    (False, True))),
             *((a, 3, b, "auto") for a in ("sin", "leaky_relu", "abs") for b in (False, True)),
             *((a, d, b, "quadrature") for a, d in (("gelu", 2), ("gelu", 4), ("sin", 3)) for b in (False, True))]


@needs_nt
@pytest.mark.parametrize("act,depth,bias,method", INF_CASES)
def test_infinite_blocks_match_nt(act, depth, bias, method):
    """Every per-layer fwd and bwd block vs NT's, and Σ_l fwd ⊙ bwd and fwd[-1] vs NT's
    kernel_fn NTK and NNGP; X and X2 contain coincident rows."""
    net, layers = _case(act, depth, bias)
    X, X2 = _inputs(seed=depth + 3)
    same = _coincident(X, X2)
    tol_same = cusp_tol(act, depth, X.shape[1])
    fwd_nt, bwd_nt = _nt_oracle.layer_grams(layers, net.w_std, X, X2)
    fwd, bwd = recursions.infinite_grams(net, X, X2, method=method)
    _check_blocks(fwd, fwd_nt, same, tol_same, "fwd")
    _check_blocks(bwd, bwd_nt, same, tol_same, "bwd")
    ntk, nngp = _nt_oracle.kernel_fn(layers)(X, X2, ("ntk", "nngp"))
    ntk_jax, nngp_jax = recursions.kernel_fn(net, X, X2, ("ntk", "nngp"), method=method)
    assert rel_err(ntk_jax, ntk) <= max(tol_same, TOL)
    assert rel_err(nngp_jax, nngp) <= TOL
    assert rel_err(np.sum(np.asarray(fwd) * np.asarray(bwd), 0)[~same], np.asarray(ntk)[~same]) <= TOL


@needs_nt
def test_symmetric_call_matches_nt():
    """X2 = None (Θ(X, X)): every diagonal entry is a coincident pair."""
    for act in ("relu", "gelu"):
        net, layers = _case(act, 4, True)
        X, _ = _inputs(seed=9)
        fwd_nt, bwd_nt = _nt_oracle.layer_grams(layers, net.w_std, X, X)
        fwd, bwd = recursions.infinite_grams(net, X)
        same = _coincident(X, X)
        _check_blocks(fwd, fwd_nt, same, cusp_tol(act, 4, X.shape[1]), "fwd")
        _check_blocks(bwd, bwd_nt, same, cusp_tol(act, 4, X.shape[1]), "bwd")


# ---------------------------------------------------------------------------------------------
# closed forms and quadrature (no neural-tangents)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True])
def test_relu_diagonal_is_exact(bias):
    """At x = x' the ReLU dual is exact on paper: θ = 0, so Σ̇ = 1/2 and E[relu(u)²] = k/2.
    Hence K^H_{l+1}(x, x) = σ_w² K^H_l(x, x)/2 + σ_b² and K^Δ_l(x, x) = (σ_w²/2)^{L−l}."""
    w, b, depth = 1.3, 0.4, 4
    X, X2 = _inputs(seed=5)
    fwd, bwd = recursions.layer_grams(X, X2, depth=depth, activation="relu", w_std=w, b_std=b, bias=bias)
    rows, cols = np.nonzero(_coincident(X, X2))
    sb2 = b**2 if bias else 0.0
    k = w**2 * np.sum(X[rows] ** 2, 1) / X.shape[1] + sb2
    for l in range(depth):
        assert rel_err(np.asarray(fwd)[l, rows, cols], k) <= 1e-14  # a few roundings of the recursion
        assert rel_err(np.asarray(bwd)[l, rows, cols], np.full_like(k, (w**2 / 2) ** (depth - 1 - l))) <= 1e-14
        k = w**2 * k / 2 + sb2


@pytest.mark.parametrize("act", sorted(activations.ACTIVATIONS))
def test_quadrature_matches_closed_form(act):
    """The quadrature path forced on every activation with a closed form, depth 4, at distinct
    and coincident pairs. Rectifiers give smooth trigonometric integrands on each arc and
    constant derivative ones (≈ 1e-15 measured); erf, gelu and sin have smooth integrands and
    converge exponentially (≈ 1e-14 at the default nodes for these variances, ≤ 16). 1e-10 is
    the brief's bound, with room for the 4-layer recursion."""
    X, X2 = _inputs(seed=6)
    kw = dict(depth=4, activation=act, w_std=1.3, b_std=0.4)
    closed = recursions.layer_grams(X, X2, method="closed", **kw)
    quad = recursions.layer_grams(X, X2, method="quadrature", **kw)
    for got, ref in zip(quad, closed):
        assert rel_err(got, ref) <= 1e-10


def test_quadrature_on_a_callable():
    """A user callable goes to the quadrature: jax.nn.relu there equals the relu closed form."""
    X, X2 = _inputs(seed=8)
    kw = dict(depth=3, w_std=1.1, b_std=0.2)
    ref = recursions.layer_grams(X, X2, activation="relu", **kw)
    got = recursions.layer_grams(X, X2, activation=jax.nn.relu, **kw)
    for a, b in zip(got, ref):
        assert rel_err(a, b) <= 1e-10  # smooth on each arc for a piecewise-linear φ, as above


def test_gaussian_expectation_known_moments():
    """E[u²v²] = k1 k2 (1 + 2c²) and E[cos u cos v] = e^{−(k1+k2)/2} cosh(c√(k1k2)) (Gaussian
    moment and characteristic-function identities), smooth integrands: exponential convergence."""
    k1, k2 = jnp.array([0.3, 1.7, 2.5]), jnp.array([1.1, 0.6, 2.5])
    c = jnp.array([-0.7, 0.2, 1.0])
    sq, cos = recursions.gaussian_expectation(((jnp.square, jnp.square), (jnp.cos, jnp.cos)), k1, k2, c)
    assert rel_err(sq, k1 * k2 * (1 + 2 * c**2)) <= 1e-13
    assert rel_err(cos, jnp.exp(-(k1 + k2) / 2) * jnp.cosh(c * jnp.sqrt(k1 * k2))) <= 1e-13


def test_radial_rule_moments():
    """∫_0^∞ r^j · r e^{−r²/2} dr = 2^{j/2} Γ(j/2 + 1): exact for j ≤ 2n − 1."""
    from math import gamma

    for n in (1, 4, 24, 48):
        nodes, weights = recursions.radial_rule(n)
        assert np.all(nodes > 0) and np.all(weights > 0)
        for j in range(2 * n):
            exact = 2 ** (j / 2) * gamma(j / 2 + 1)
            assert abs(weights @ nodes**j - exact) <= 1e-12 * exact, (n, j)


def test_jit_and_symmetric_default():
    X, _ = _inputs(seed=2)
    kw = dict(depth=3, activation="erf", w_std=1.0, b_std=0.3)
    eager = recursions.layer_grams(X, **kw)
    jitted = jax.jit(lambda A: recursions.layer_grams(A, A, **kw))(jnp.asarray(X))
    for a, b in zip(jitted, eager):
        assert a.dtype == jnp.float64 and a.shape == (3, 6, 6)
        assert rel_err(a, b) <= 1e-15  # same arithmetic, traced once more


def test_init_under_jit_is_bit_identical():
    """jax.jit(init) from a key (the compiled init of experiments/unit_wise.py) draws the same bits."""
    eager = mlp.init(jax.random.PRNGKey(3), 3, [4, 5], 2)
    jitted = jax.jit(lambda key: mlp.init(key, 3, [4, 5], 2))(jax.random.PRNGKey(3))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)))
    assert np.array_equal(mlp.init(3, 3, [4, 5], 2)[0][0], eager[0][0])  # int seed = PRNGKey(seed)


def test_apply_taps_give_backward_signal():
    """∂f/∂taps[l] through the own apply, contracted, is K^Δ's finite-width estimator δ·δ';
    here only its shape and that a zero tap leaves f unchanged (identity, not a tolerance)."""
    params = mlp.init(0, 3, [4, 5], 2)
    X, _ = _inputs(seed=1)
    taps = [jnp.zeros((6, m)) for m in (4, 5, 2)]
    f = mlp.apply(params, X, "gelu")
    assert np.array_equal(mlp.apply(params, X, "gelu", taps=taps), f)
    grads = jax.grad(lambda t: jnp.sum(mlp.apply(params, X, "gelu", taps=t)))(taps)
    assert [g.shape for g in grads] == [(6, 4), (6, 5), (6, 2)]
    assert np.array_equal(grads[-1], np.ones((6, 2)))  # ∂f/∂z_L = 1


# ---------------------------------------------------------------------------------------------
# stored neural-tangents values (the check that runs without neural-tangents)
# ---------------------------------------------------------------------------------------------
REF_PATH = ROOT / "tests" / "data" / "nt_reference.npz"


@pytest.fixture(scope="module")
def nt_reference():
    with np.load(REF_PATH) as data:
        ref = {k: data[k] for k in data.files}
    ref["meta"] = json.loads(str(ref["meta"]))
    return ref


def _ref_cases():
    with np.load(REF_PATH) as data:
        meta = json.loads(str(data["meta"]))
    return list(itertools.product(meta["acts"], meta["depths"], (False, True)))


@pytest.mark.parametrize("act,depth,bias", _ref_cases())
def test_against_stored_nt_values(nt_reference, act, depth, bias):
    ref, meta = nt_reference, nt_reference["meta"]
    key = f"{act}/d{depth}/b{int(bias)}/"
    X, X2 = ref["X"], ref["X2"]
    same = _coincident(X, X2)
    kw = dict(depth=depth, activation=act, w_std=meta["w_std"], b_std=meta["b_std"], bias=bias)
    fwd, bwd = recursions.layer_grams(X, X2, **kw)
    tol_same = cusp_tol(act, depth, X.shape[1])
    _check_blocks(fwd, ref[key + "fwd"], same, tol_same, "fwd")
    _check_blocks(bwd, ref[key + "bwd"], same, tol_same, "bwd")
    assert rel_err(np.sum(np.asarray(fwd) * np.asarray(bwd), 0), ref[key + "ntk"]) <= max(tol_same, TOL)
    assert rel_err(fwd[-1], ref[key + "nngp"]) <= TOL
    hidden = tuple(meta["hidden"][: depth - 1])
    params = mlp.init(meta["seed"], meta["in_dim"], hidden, meta["out_dim"], bias)
    for l in range(depth):
        W, b = params[2 * l]
        assert np.array_equal(W, ref[key + f"W{l}"]), f"W{l} differs from NT's init (jax {jax.__version__})"
        assert (b is None) == (key + f"b{l}" not in ref)
        if b is not None:
            assert np.array_equal(b, ref[key + f"b{l}"]), f"b{l}"
    assert rel_err(mlp.apply(params, X, act, meta["w_std"], meta["b_std"]), ref[key + "apply"]) <= TOL


# ---------------------------------------------------------------------------------------------
# backend choice, isolation from NT, bad input
# ---------------------------------------------------------------------------------------------
def test_active_backend(monkeypatch):
    monkeypatch.setenv("NTK_NGD_BACKEND", "jax")
    assert backends.active() == ("jax", "NTK_NGD_BACKEND=jax")
    monkeypatch.setenv("NTK_NGD_BACKEND", "auto")
    name, reason = backends.active()
    if HAVE_NT:
        assert name == "neural_tangents" and reason.startswith("neural_tangents ") and reason.endswith(" imported")
    else:
        assert name == "jax" and reason.startswith("neural_tangents not importable: ")
    monkeypatch.delenv("NTK_NGD_BACKEND")
    assert backends.active().name == name  # unset = auto
    monkeypatch.setenv("NTK_NGD_BACKEND", "neural_tangents")
    if HAVE_NT:
        assert backends.active().name == "neural_tangents"
    else:
        with pytest.raises(ImportError, match="NTK_NGD_BACKEND=neural_tangents but neural_tangents not importable"):
            backends.active()
    monkeypatch.setenv("NTK_NGD_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="expected one of auto, neural_tangents, jax"):
        backends.active()


def test_backends_never_import_neural_tangents():
    """No import statement of neural_tangents in ntk_ngd/backends; only the probe in
    ``neural_tangents_status`` names it (importlib, to report whether it imports)."""
    for path in sorted((ROOT / "ntk_ngd" / "backends").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "neural_tangents" for a in node.names), path
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "neural_tangents", path


def test_bad_input():
    X, X2 = _inputs()
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        recursions.layer_grams(X, depth=2, activation="tanh")
    with pytest.raises(ValueError, match="no closed-form kernel"):
        recursions.layer_grams(X, depth=2, activation=jnp.tanh, method="closed")
    with pytest.raises(ValueError, match="method must be one of"):
        recursions.layer_grams(X, depth=2, method="exact")
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        recursions.layer_grams(X, depth=0)
    with pytest.raises(ValueError, match=r"X2 must be a matrix of shape \(N, 3\)"):
        recursions.layer_grams(X, X2[:, :2], depth=2)
    with pytest.raises(ValueError, match="non-finite"):
        recursions.layer_grams(np.full((2, 3), np.nan), depth=2)
    with pytest.raises(ValueError, match="get must be 'ntk', 'nngp' or a tuple"):
        recursions.kernel_fn(types.SimpleNamespace(depth=2, activation="relu", w_std=1.0, b_std=0.1, bias=True),
                             X, get="cov")
    with pytest.raises(ValueError, match="layer widths must be positive integers"):
        mlp.init(0, 3, [0], 1)
    with pytest.raises(ValueError, match="hidden must be a sequence"):
        mlp.init(0, 3, 4, 1)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        mlp.init(-1, 3, [4], 1)
    params = mlp.init(0, 3, [4], 1)
    with pytest.raises(ValueError, match="params must be a stax-layout list"):
        mlp.apply(params[:2], X)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 3\)"):
        mlp.apply(params, X[:, :2])
    with pytest.raises(ValueError, match="unknown activation"):
        mlp.apply(params, X, "swish")
