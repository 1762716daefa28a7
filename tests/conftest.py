"""Shared test helpers: independent references (neural-tangents, closed forms) and settings.

Nothing here calls ntk_ngd.kernels: every reference is computed independently of the code
under test, so a test comparing against it can fail.
"""
from __future__ import annotations

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: jax's persistent compilation cache for the test run, inside the checkout (a clean clone starts cold, so CI
#: times stay honest) and per jax version. The suite drops jax's in-memory caches after every module (below), and
#: xdist workers each compile for themselves; with the on-disk cache a program compiled once is loaded, not
#: recompiled, by the next module or worker (measured on 2 cores: test_registry + test_step_rule +
#: test_trust_region + test_training 151 s -> 135 s from a cold cache). Executables are what XLA would compile
#: again (the key hashes the program, compile options, XLA flags and versions), so no number changes.
#: Subprocesses (tests/test_scaling.py, tests/test_runner_jobs.py) inherit it through the environment.
#: NTK_NGD_TEST_JAX_CACHE=off disables it.
_CACHE_ROOT = os.environ.get("NTK_NGD_TEST_JAX_CACHE",
                             os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax-cache"))
if _CACHE_ROOT != "off":
    from importlib.metadata import version as _version

    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_CACHE_ROOT, f"jaxlib-{_version('jaxlib')}"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import ntk_ngd  # noqa: E402,F401  (enables float64)
from ntk_ngd import backends  # noqa: E402

#: neural-tangents is the reference wherever it imports (and the networks use it). Without it (current jax,
#: NTK_NGD_BACKEND=jax) the comparisons with NT skip; the pure-jax backend is then checked against the NT
#: values stored in tests/data (tests/test_backends.py) and against the closed forms below.
HAVE_NT = backends.active().name == "neural_tangents"
requires_nt = pytest.mark.skipif(not HAVE_NT, reason=f"needs neural-tangents as the backend: {backends.active().reason}")

# Hypothesis: jit compilation makes single examples take ~1 s, so no per-example deadline;
# derandomised so that CI runs are reproducible (set HYPOTHESIS_PROFILE=explore to search).
settings.register_profile(
    "ci", deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _float64_on():
    assert jax.config.read("jax_enable_x64"), "the test suite needs float64 (unset NTK_NGD_X64)"


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop jax's compilation caches after each test module.

    Every compiled XLA program keeps ~10 memory mappings until jax's caches let it go (measured: 300 small
    programs add 2,900 mappings; ``jax.clear_caches()`` + ``gc.collect()`` return them). A whole run compiles
    thousands of programs, and past ``vm.max_map_count`` (65,530 on the CI machine) the kernel refuses new
    mappings, which shows up as a segmentation fault inside XLA's compiler: CI at jax 0.10.2 died that way in
    tests/test_factored.py, reproducibly, while the file alone passed (it reaches ~17,000 mappings by itself).
    Programs shared across modules are recompiled, a few seconds per module."""
    yield
    jax.clear_caches()
    gc.collect()


def rel_err(a, b) -> float:
    """max|a − b| / max|b| (shapes must agree)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = float(np.max(np.abs(b)))
    return float(np.max(np.abs(a - b))) / (scale if scale > 0 else 1.0)


def nt_flat(K) -> np.ndarray:
    """NT's (N, N2, C, C) empirical NTK → (N·C, N2·C) with row index n·C + c."""
    K = np.asarray(K)
    n, n2, c, c2 = K.shape
    assert c == c2
    return np.transpose(K, (0, 2, 1, 3)).reshape(n * c, n2 * c)


def nt_empirical(net, params, X, X2, implementation: int):
    """neural-tangents' empirical NTKs (trace_axes=()) of ``net`` at ``params``: a list with
    one entry per Dense layer l (the net as a function of that layer's (W, b) only, all other
    parameters closed over) followed by the full NTK; each flattened to (N·C, N2·C).
    All of them in one jit-compiled function (compiling once is much faster than NT's
    op-by-op dispatch)."""
    import neural_tangents as nt
    from neural_tangents import stax

    apply_fn = stax.serial(*net.stax_layers)[1]
    kw = dict(trace_axes=(), implementation=implementation, vmap_axes=0)

    def all_blocks(params, X, X2):
        out = []
        for l in range(net.depth):
            def f_layer(p_layer, x, index=2 * l):
                ps = list(params)
                ps[index] = p_layer
                return apply_fn(ps, x)

            out.append(nt.empirical_ntk_fn(f_layer, **kw)(X, X2, params[2 * l]))
        out.append(nt.empirical_ntk_fn(apply_fn, **kw)(X, X2, params))
        return out

    return [nt_flat(k) for k in jax.jit(all_blocks)(params, X, X2)]


# ---------------------------------------------------------------------------------------------
# closed-form infinite-width recursion (numpy), independent of neural-tangents
# ---------------------------------------------------------------------------------------------
def _gauss_expectations(K, activation):
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for (u, v) ~ N(0, [[K_ii, K_ij], [K_ij, K_jj]])."""
    d = np.sqrt(np.diag(K))
    if activation == "linear":
        return K.copy(), np.ones_like(K)
    if activation == "relu":  # arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009)
        norm = np.outer(d, d)
        # θ = angle between u and v; arctan2 of (sin·norm, cos·norm) is exact at x = x'
        # (k_ii k_jj − k_ij² is then exactly 0), where arccos(k_ij / norm) loses √eps.
        kd = np.diag(K)
        theta = np.arctan2(np.sqrt(np.maximum(np.outer(kd, kd) - K**2, 0.0)), K)
        cos = np.cos(theta)
        phi = norm / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * cos)
        dphi = (np.pi - theta) / (2 * np.pi)
        return phi, dphi
    if activation == "erf":  # Williams (1997)
        a = 1 + 2 * np.diag(K)
        phi = 2 / np.pi * np.arcsin(2 * K / np.sqrt(np.outer(a, a)))
        dphi = 4 / np.pi / np.sqrt(np.outer(a, a) - 4 * K**2)
        return phi, dphi
    raise NotImplementedError(activation)


def analytic_layer_kernels(net, X, X2):
    """Infinite-width (fwd, bwd, ntk), each (L, N, N2), by the NTK recursion in closed form.

    K^H_1 = σ_w² x·x'/D + σ_b²,  K^H_{l+1} = σ_w² E[φφ](K^H_l) + σ_b²,
    K^Δ_L = 1,                   K^Δ_l = K^Δ_{l+1} ⊙ σ_w² E[φ'φ'](K^H_l),
    Θ_l = K^H_l ⊙ K^Δ_l          (= Σ_{l−1} ⊙ Π_{k≥l} Σ̇_k, THEORY.md).
    """
    X, X2 = np.asarray(X, np.float64), np.asarray(X2, np.float64)
    n = X.shape[0]
    # Work on the distinct points: at x = x' the ReLU kernels have a √eps-sensitive cusp
    # (θ = arccos(1 − ε) ≈ √(2ε)), so a coincident pair must reuse the exact diagonal entry.
    Z, inverse = np.unique(np.concatenate([X, X2]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sw2 = net.w_std**2
    sb2 = net.b_std**2 if net.bias else 0.0
    K = sw2 * Z @ Z.T / Z.shape[1] + sb2
    fwd, dots = [K], []
    for _ in range(net.depth - 1):
        phi, dphi = _gauss_expectations(fwd[-1], net.activation)
        dots.append(sw2 * dphi)
        fwd.append(sw2 * phi + sb2)
    bwd = [np.ones_like(K)]
    for dot in reversed(dots):
        bwd.insert(0, bwd[0] * dot)
    fwd, bwd = np.stack(fwd), np.stack(bwd)
    rows, cols = inverse[:n], inverse[n:]

    def pick(A):
        return A[:, rows][:, :, cols]

    return pick(fwd), pick(bwd), pick(fwd * bwd)


def sphere_inputs(n: int, dim: int, seed: int) -> np.ndarray:
    """Test inputs on the unit sphere (drawn here, not by ntk_ngd.datasets)."""
    g = np.random.default_rng(seed).standard_normal((n, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


#: The small softmax problem of the cross-entropy tests: D + 1 >= N, so the first layer's input Gram has full rank.
SOFTMAX_N, SOFTMAX_C, SOFTMAX_D = 6, 3, 6


@pytest.fixture(scope="module")
def small():
    """(net, params, X (N, D), labels (N,), X_test (2, D)): a 3-class erf MLP of depth 3, width 16."""
    import ntk_ngd as nn

    X = nn.datasets.sphere(SOFTMAX_N + 2, SOFTMAX_D, seed=3)
    labels = np.array([0, 1, 2, 0, 2, 1])
    net = nn.mlp(depth=3, width=16, in_dim=SOFTMAX_D, out_dim=SOFTMAX_C, activation="erf")
    return net, net.init(1), X[:SOFTMAX_N], labels, X[SOFTMAX_N:]

