r"""Infinite-width per-layer kernels of the MLP in pure jax (no neural-tangents).

Same semantics as ``ntk_ngd.kernels._infinite_grams(net, X, X2)``: for a depth-L network
(:mod:`ntk_ngd.backends.mlp`) with inputs x ∈ X (N rows) and x' ∈ X2 (N2 rows),

    K^H_1(x, x')     = σ_w² x·x'/D + σ_b²                               (σ_b = 0 without bias)
    K^H_{l+1}        = σ_w² E[φ(u)φ(v)] + σ_b²
    Σ̇_l             = E[φ'(u)φ'(v)]
    K^Δ_L = 1,        K^Δ_l = σ_w² Σ̇_l ⊙ K^Δ_{l+1}

with (u, v) ~ N(0, [[k, k_12], [k_12, k']]) where k_12 = K^H_l(x, x'), k = K^H_l(x, x) and
k' = K^H_l(x', x'). ``fwd[l]`` = K^H_{l+1} and ``bwd[l]`` = K^Δ_{l+1} (0-based), each (N, N2);
the NTK block of layer l is fwd[l] ⊙ bwd[l] and the network's NTK their sum.

Write c = k_12/√(k k') = cos θ, θ ∈ [0, π]. The Gaussian expectations ("dual activations") are

* linear, φ(x) = x:           E[φφ] = k_12,  E[φ'φ'] = 1.
* rectifier φ(x) = a·min(x, 0) + b·max(x, 0) (relu (0, 1), leaky_relu (α, 1), abs (−1, 1)).
  With the arc-cosine kernels of Cho & Saul (2009), for relu
      J_1(θ) = E[relu(u) relu(v)] = √(k k')/(2π)·(sin θ + (π − θ) cos θ),
      J_0(θ) = P(u > 0, v > 0)     = (π − θ)/(2π),
  and φ(x) = b·relu(x) − a·relu(−x), where (−u, −v) has angle θ and (u, −v) angle π − θ:
      E[φφ]   = (a² + b²) J_1(θ) − 2ab J_1(π − θ)
              = √(k k')·[(a − b)²/(2π)·sin θ + ((a² + b²)/2 − (a − b)² θ/(2π))·cos θ],
      E[φ'φ'] = (a² + b²) J_0(θ) + 2ab J_0(π − θ) = (a² + b²)/2 − (a − b)² θ/(2π).
* erf (Williams 1997), with A = (1 + 2k)(1 + 2k') and A − 4k_12² = 1 + 2(k + k') + 4kk'(1 − c²):
      E[φφ]   = (2/π)·arcsin(2 k_12/√A),
      E[φ'φ'] = (4/π)/√(A − 4 k_12²).
* sin: sin u sin v = [cos(u − v) − cos(u + v)]/2, cos u cos v = [cos(u − v) + cos(u + v)]/2
  and E[cos(u ± v)] = e^{−(k + k' ± 2k_12)/2} (characteristic function), so
      E[φφ] = (e^{k_12 − s} − e^{−k_12 − s})/2,  E[φ'φ'] = (e^{k_12 − s} + e^{−k_12 − s})/2,  s = (k + k')/2.
* gelu, φ(x) = x·Φ(x) (Tsuchida, Pearce et al. 2020, as neural-tangents), with P = (1 + k)(1 + k')
  and Δ² = P − k_12² = 1 + k + k' + kk'(1 − c²) > 0, β = arctan(k_12/Δ):
      E[φφ]   = k_12/4 + [(k_12² + kk'Δ²)/(PΔ) + k_12 β]/(2π),
      E[φ'φ'] = 1/4 + β/(2π) + k_12/(2πΔ)·(1/Δ² + (1 − kk')/P + 1).
  (At k_12 = 0 these are kk'/(2π√P) = E[uΦ(u)]E[vΦ(v)] by Stein's lemma, and 1/4 = E[φ']².)
* any other elementwise φ (a user callable): Gaussian quadrature in polar coordinates,
  :func:`gaussian_expectation`, with φ' by forward-mode differentiation. ``method="quadrature"``
  forces it for the named activations too (the tests check it against the closed forms).

Numerics at coincident points. At x = x', c = 1 exactly, but the computed c carries
rounding: layer 1's dot product of length D is accurate to ≈ D·eps relative, later layers to a
few eps. The rectifier kernels have a √-cusp there (θ = arccos(1 − δ) ≈ √(2δ)), so that rounding
would become up to √(D·eps) ≈ 1e-7 in θ (for this reason neural-tangents' diagonal is off by up to
1e-8 relative for relu and 4e-8 for abs, measured at D = 10, depth 4). Here c is clipped to [−1, 1], and |c| within the rounding bound of 1 (``4(D + 8)·eps``
at layer 1, ``64·eps`` after) is set to ±1. Snapping moves θ by at most √(2·bound), which is the
size of the error that rounding already allows there, and makes exactly coincident (or exactly
antipodal) inputs exact.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from . import activations as _activations

EPS = float(np.finfo(np.float64).eps)
#: |c| ≥ 1 − SNAP_DEEP counts as ±1 from layer 2 on (a few roundings in the dual formulas).
SNAP_DEEP = 64 * EPS
#: default quadrature sizes: Gauss–Legendre nodes per angular arc, radial Gauss nodes. The
#: nodes needed grow like √k with the variance k (gelu and sin vary on the scale 1/√k in r and α):
#: measured relative error at 64 × 64: ≤ 1e-14 for k ≤ 10, 3e-13 at k = 30 (gelu; sin 1e-14; at 48 × 48
#: gelu is 1e-10 off at k = 30); raise both for larger pre-activation variances.
N_ANGLE = 64
N_RADIUS = 64
METHODS = ("auto", "closed", "quadrature")


# ---------------------------------------------------------------------------------------------
# quadrature rules (numpy, cached; constants inside the jitted code)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def radial_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    r"""n-point Gauss rule for ∫_0^∞ g(r)·r e^{−r²/2} dr (the radius of a 2-D standard normal).

    Exact for polynomials g of degree ≤ 2n − 1 (moments ∫ r^j r e^{−r²/2} dr = 2^{j/2} Γ(j/2 + 1)).
    Built by the Lanczos (discretised Stieltjes) procedure: the weight is discretised by a
    composite 32-point Gauss–Legendre rule on [0, 40] (panels of width 1/8; the mass beyond 40 is
    e^{−800}), whose discrete inner products equal the continuous ones to rounding for these
    smooth integrands; Lanczos with full reorthogonalisation on diag(r) from √w gives the Jacobi
    matrix: its eigenvalues are the nodes (Golub–Welsch), the weights are the Christoffel numbers.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"radial quadrature needs n >= 1 nodes, got {n}")
    t, w = np.polynomial.legendre.leggauss(32)
    edges = np.arange(0.0, 40.0 + 1e-12, 0.125)
    half = np.diff(edges)[:, None] / 2
    r = (edges[:-1, None] + half * (t + 1)).ravel()
    wr = (half * w).ravel() * r * np.exp(-r**2 / 2)
    q = np.sqrt(wr) / np.sqrt(wr.sum())
    Q = np.zeros((n, r.size))
    alpha, beta = np.zeros(n), np.zeros(max(n - 1, 0))
    for k in range(n):
        Q[k] = q
        v = r * q
        alpha[k] = q @ v
        v -= alpha[k] * q + (beta[k - 1] * Q[k - 1] if k else 0.0)
        v -= Q[: k + 1].T @ (Q[: k + 1] @ v)  # full reorthogonalisation
        if k < n - 1:
            beta[k] = np.linalg.norm(v)
            q = v / beta[k]
    nodes = np.linalg.eigvalsh(np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1))
    # Christoffel numbers 1/Σ_k p_k(x)² from the orthonormal recurrence: relatively accurate also
    # for the tiny weights of the outer nodes (the eigenvectors' first components are only
    # absolutely accurate, which spoils high moments).
    p_prev, p = np.zeros(n), np.full(n, 1 / np.sqrt(wr.sum()))
    total = p**2
    for k in range(n - 1):
        p_prev, p = p, ((nodes - alpha[k]) * p - (beta[k - 1] * p_prev if k else 0.0)) / beta[k]
        total = total + p**2
    return nodes, 1 / total


@functools.lru_cache(maxsize=None)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    if int(n) < 1:
        raise ValueError(f"angular quadrature needs n >= 1 nodes, got {n}")
    return np.polynomial.legendre.leggauss(int(n))


def gaussian_expectation(pairs, k1, k2, c, n_angle: int = N_ANGLE, n_radius: int = N_RADIUS):
    r"""E[f(u)·g(v)] for each (f, g) in ``pairs``, (u, v) ~ N(0, [[k1, c√(k1k2)], [c√(k1k2), k2]]).

    ``k1``, ``k2``, ``c`` broadcast to one shape S; returns a tuple of arrays of shape S.
    With z = r(cos α, sin α) standard normal and c = cos θ, u = √k1·r cos α and
    v = √k2·r cos(α − θ), so

        E[f(u)g(v)] = (1/2π) ∫_{−π/2}^{3π/2} dα ∫_0^∞ r e^{−r²/2} f(√k1 r cos α) g(√k2 r cos(α − θ)) dr.

    The α-range is cut at the sign changes of u and v (α = ±π/2, θ ± π/2) into four arcs of
    lengths θ, π − θ, θ, π − θ, each integrated by Gauss–Legendre (``n_angle`` nodes); the radius
    by the Gauss rule :func:`radial_rule` (``n_radius`` nodes). On each arc u and v keep their
    signs, so activations that are smooth except at 0 (relu, leaky relu, abs and their step
    derivatives) give smooth integrands and the rule converges exponentially. For the
    rectifiers the radial integrand is r² (exact with 2 radial nodes), the angular one
    cos α cos(α − θ) (relu, measured 3e-14 relative at 8 angular nodes) and the derivative's
    a constant per arc (exact). A tensor Gauss–Hermite rule in Cartesian coordinates straddles
    the kink and converges only algebraically (measured for relu at 256 × 256 nodes: 1e-3 for
    E[φφ], 1.4e-2 for E[φ'φ']).
    Memory: O(|S|·n_radius), one angular node at a time.
    """
    k1, k2, c = jnp.broadcast_arrays(*(jnp.asarray(a, jnp.float64) for a in (k1, k2, c)))
    theta = jnp.arccos(jnp.clip(c, -1.0, 1.0))
    s1, s2 = jnp.sqrt(k1)[..., None], jnp.sqrt(k2)[..., None]
    rho, omega = (jnp.asarray(a) for a in radial_rule(n_radius))
    t, w = (jnp.asarray(a) for a in _legendre(n_angle))
    half_pi = jnp.pi / 2
    arcs = ((-half_pi, theta), (theta - half_pi, jnp.pi - theta),
            (half_pi, theta), (theta + half_pi, jnp.pi - theta))  # (start, length)

    def one_node(acc, node):
        tk, wk = node
        out = list(acc)
        for start, length in arcs:
            alpha = start + length * (tk + 1) / 2
            u = s1 * jnp.cos(alpha)[..., None] * rho
            v = s2 * jnp.cos(alpha - theta)[..., None] * rho
            weight = length * wk / 2
            for i, (f, g) in enumerate(pairs):
                out[i] = out[i] + weight * ((f(u) * g(v)) @ omega)
        return tuple(out), None

    init = tuple(jnp.zeros(theta.shape) for _ in pairs)
    acc, _ = jax.lax.scan(one_node, init, (t, w))
    return tuple(a / (2 * jnp.pi) for a in acc)


# ---------------------------------------------------------------------------------------------
# dual activations: (E[φ(u)φ(v)], E[φ'(u)φ'(v)]) from (k, k', k_12, c)
# ---------------------------------------------------------------------------------------------
def _dual_linear(act, k1, k2, k12, c):
    return k12, jnp.ones_like(c)


def _dual_rectifier(act, k1, k2, k12, c):
    a, b = act.slopes
    theta = jnp.arccos(c)
    sin = jnp.sqrt((1 - c) * (1 + c))
    dot = (a**2 + b**2) / 2 - (a - b) ** 2 / (2 * math.pi) * theta
    return jnp.sqrt(k1 * k2) * ((a - b) ** 2 / (2 * math.pi) * sin + dot * c), dot


def _dual_erf(act, k1, k2, k12, c):
    A = (1 + 2 * k1) * (1 + 2 * k2)
    det = 1 + 2 * (k1 + k2) + 4 * (k1 * k2) * ((1 - c) * (1 + c))  # = A − 4 k_12², no cancellation
    return 2 / math.pi * jnp.arcsin(jnp.clip(2 * k12 / jnp.sqrt(A), -1.0, 1.0)), 4 / math.pi / jnp.sqrt(det)


def _dual_sin(act, k1, k2, k12, c):
    s = (k1 + k2) / 2
    plus, minus = jnp.exp(k12 - s), jnp.exp(-k12 - s)  # no overflow for large variances
    return (plus - minus) / 2, (plus + minus) / 2


def _dual_gelu(act, k1, k2, k12, c):
    P = (1 + k1) * (1 + k2)
    delta2 = 1 + k1 + k2 + (k1 * k2) * ((1 - c) * (1 + c))  # = P − k_12², no cancellation
    delta = jnp.sqrt(delta2)
    beta = jnp.arctan2(k12, delta)
    phi = k12 / 4 + ((k12**2 + k1 * k2 * delta2) / (P * delta) + k12 * beta) / (2 * math.pi)
    dphi = 0.25 + beta / (2 * math.pi) + k12 / (2 * math.pi * delta) * (1 / delta2 + (1 - k1 * k2) / P + 1)
    return phi, dphi


_CLOSED_FORMS = {"linear": _dual_linear, "rectifier": _dual_rectifier, "erf": _dual_erf, "sin": _dual_sin,
                 "gelu": _dual_gelu}


def dual(activation, k1, k2, k12, c, method: str = "auto", n_angle: int = N_ANGLE, n_radius: int = N_RADIUS):
    """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) for (u, v) with variances k1, k2, covariance k12 = c√(k1k2).

    ``c`` must already be clipped to [−1, 1] (it is passed separately so that callers can set it
    to ±1 at coincident points, see the module docstring). ``method``: "auto" (closed form when
    the activation has one, else quadrature), "closed" or "quadrature" (forced).
    """
    act = _activations.get(activation)
    method = _check_method(method, act)
    if method == "quadrature":
        return gaussian_expectation(((act.fn, act.fn), (act.derivative, act.derivative)), k1, k2, c,
                                    n_angle=n_angle, n_radius=n_radius)
    return _CLOSED_FORMS[act.closed_form](act, k1, k2, k12, c)


def _check_method(method: str, act) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "closed" and act.closed_form is None:
        raise ValueError(f"activation {act.name!r} has no closed-form kernel; use method='quadrature' or 'auto'")
    if method == "auto":
        return "quadrature" if act.closed_form is None else "closed"
    return method


def _cosine(k12, k1, k2, snap: float):
    """c = k12/√(k1 k2) clipped to [−1, 1], set to ±1 within ``snap`` of it; 0 where k1 k2 = 0."""
    norm = jnp.sqrt(k1 * k2)
    ok = norm > 0
    c = jnp.clip(jnp.where(ok, k12 / jnp.where(ok, norm, 1.0), 0.0), -1.0, 1.0)
    return jnp.where(jnp.abs(c) >= 1 - snap, jnp.sign(c), c)


# ---------------------------------------------------------------------------------------------
# the per-layer recursion
# ---------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("depth", "activation", "w_std", "b_std", "method", "n_angle",
                                             "n_radius"))
def _grams(X, X2, *, depth, activation, w_std, b_std, method, n_angle, n_radius):
    sw2, sb2 = w_std**2, (0.0 if b_std is None else b_std**2)
    dim = X.shape[1]
    dual_fn = functools.partial(dual, activation, method=method, n_angle=n_angle, n_radius=n_radius)
    k12 = (X @ X2.T) / dim * sw2 + sb2  # NT: (dot / D)·σ_w² + σ_b²
    k1 = jnp.sum(X * X, axis=1) / dim * sw2 + sb2
    k2 = jnp.sum(X2 * X2, axis=1) / dim * sw2 + sb2
    snap = 4 * (dim + 8) * EPS
    fwd, dots = [k12], []
    n1, n2 = k12.shape
    for _ in range(depth - 1):
        c = _cosine(k12, k1[:, None], k2[None, :], snap)
        # the N·N2 pairs and both diagonals (c = 1) in one evaluation
        K1 = jnp.concatenate([jnp.broadcast_to(k1[:, None], (n1, n2)).ravel(), k1, k2])
        K2 = jnp.concatenate([jnp.broadcast_to(k2[None, :], (n1, n2)).ravel(), k1, k2])
        K12 = jnp.concatenate([k12.ravel(), k1, k2])
        C = jnp.concatenate([c.ravel(), jnp.ones(n1 + n2)])
        phi, dphi = dual_fn(K1, K2, K12, C)
        dots.append(dphi[: n1 * n2].reshape(n1, n2))
        k12 = sw2 * phi[: n1 * n2].reshape(n1, n2) + sb2
        k1 = sw2 * phi[n1 * n2 : n1 * n2 + n1] + sb2
        k2 = sw2 * phi[n1 * n2 + n1 :] + sb2
        fwd.append(k12)
        snap = SNAP_DEEP
    bwd = [jnp.ones_like(k12)]
    for dot in reversed(dots):
        bwd.insert(0, dot * sw2 * bwd[0])  # NT's order: Σ̇ · σ_w² · K^Δ_{l+1}
    return jnp.stack(fwd), jnp.stack(bwd)


def _matrix(name, X, cols=None):
    X = np.asarray(X, dtype=np.float64) if not isinstance(X, jax.Array) else X
    if X.ndim != 2 or (cols is not None and X.shape[1] != cols) or X.shape[0] == 0 or X.shape[1] == 0:
        want = f"(N, {cols})" if cols is not None else "(N, D) with N, D ≥ 1"
        raise ValueError(f"{name} must be a matrix of shape {want}, got shape {tuple(X.shape)}")
    try:
        finite = bool(jnp.all(jnp.isfinite(X)))
    except jax.errors.ConcretizationTypeError:  # traced (called inside jit): shapes only
        finite = True
    if not finite:
        raise ValueError(f"{name} has non-finite entries")
    return jnp.asarray(X, jnp.float64)


def layer_grams(X, X2=None, *, depth: int, activation="relu", w_std: float = 1.0, b_std: float = 0.1,
                bias: bool = True, method: str = "auto", n_angle: int = N_ANGLE, n_radius: int = N_RADIUS):
    """Per-layer infinite-width kernels (fwd, bwd), each (depth, N, N2) float64: fwd[l] = K^H_{l+1},
    bwd[l] = K^Δ_{l+1} (module docstring). ``X2=None`` means X2 = X.

    ``activation``: a name in ``ntk_ngd.backends.activations.ACTIVATIONS`` or an elementwise
    callable (quadrature). ``method``: "auto" | "closed" | "quadrature" (force the quadrature,
    e.g. to check it against a closed form). ``n_angle``/``n_radius``: quadrature nodes per arc
    and along the radius (:func:`gaussian_expectation`). Needs jax float64
    (``jax.config.update('jax_enable_x64', True)``, which importing ntk_ngd does).
    """
    if jnp.zeros(()).dtype != jnp.float64:
        raise ValueError("layer_grams needs jax float64: jax.config.update('jax_enable_x64', True)")
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    act = _activations.get(activation)
    _check_method(method, act)
    if not (w_std > 0) or (bias and not b_std >= 0):
        raise ValueError(f"need w_std > 0 and b_std >= 0, got w_std={w_std}, b_std={b_std}")
    X = _matrix("X", X)
    X2 = X if X2 is None else _matrix("X2", X2, cols=X.shape[1])
    return _grams(X, X2, depth=int(depth), activation=act, w_std=float(w_std),
                  b_std=float(b_std) if bias else None, method=method, n_angle=int(n_angle),
                  n_radius=int(n_radius))


def infinite_grams(net, X, X2=None, **kwargs):
    """``kernels._infinite_grams(net, X, X2)`` without neural-tangents: (fwd, bwd), each (L, N, N2).

    ``net`` is anything with ``depth``, ``activation``, ``w_std``, ``b_std`` and ``bias``
    (an ``ntk_ngd.networks.Network``); ``kwargs`` go to :func:`layer_grams`.
    """
    return layer_grams(X, X2, depth=net.depth, activation=net.activation, w_std=net.w_std, b_std=net.b_std,
                       bias=net.bias, **kwargs)


def kernel_fn(net, X, X2=None, get="ntk", **kwargs):
    """The network's infinite-width kernel, like NT's ``kernel_fn(X, X2, get)``: "nngp" is
    K^H_L (the covariance of f), "ntk" is Θ = Σ_l K^H_l ⊙ K^Δ_l; each (N, N2). ``get`` may be a
    tuple of these names (then a tuple is returned, in that order, as NT does)."""
    names = (get,) if isinstance(get, str) else tuple(get)
    if not names or any(g not in ("ntk", "nngp") for g in names):
        raise ValueError(f"get must be 'ntk', 'nngp' or a tuple of them, got {get!r}")
    fwd, bwd = infinite_grams(net, X, X2, **kwargs)
    out = tuple(fwd[-1] if g == "nngp" else jnp.sum(fwd * bwd, axis=0) for g in names)
    return out[0] if isinstance(get, str) else out
