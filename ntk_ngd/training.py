"""Real parameter-space training of a finite network f(x; θ) with each preconditioner
(THEORY.md "Setup" and claim 8; issue 5 item 2). Not linearised: every step recomputes the
features, the Grams and the update at the current parameters.

Update and conventions
----------------------
Δθ = −η (G + ρI)⁻¹ ∇Loss, ∇Loss = Jᵀr/N, r = f(X) − Y flattened row-major (index n·C + c),
Loss = (1/2N) Σ_n ||f(x_n) − y_n||². Parameters are neural-tangents' list (Dense l at
``params[2l] = (W, b)``); layer l is handled as W̃_l = [W_l; b_l] of shape (fan_in + bias, fan_out)
with Jacobian rows J_l[(n, c)] = h̃_{l−1}(x_n) ⊗ δ_{l,c}(x_n) (:func:`ntk_ngd.kernels.layer_features`:
one forward and C reverse passes). No P×P matrix and no explicit J is ever formed: every method
needs only the per-layer features and N-, N·C- or L·N·C-sized Grams

    K^H_l = H̃_l H̃_lᵀ (N×N),  K^Δ_l = Δ_l Δ_lᵀ (NC×NC, Δ_l = δ_l reshaped (NC, M_l)),
    Θ_l = (K^H_l ⊗ 1_{C×C}) ⊙ K^Δ_l,  Θ = Σ_l Θ_l,

and the vector–Jacobian product J_lᵀu = H̃_lᵀ V_l, V_l[n] = Σ_c u_{nc} δ_{l,c}(x_n)
(ΔW̃_l = Σ_{n,c} u_{nc} h̃_n ⊗ δ_{l,n,c}). ρ = 0 is the ρ → 0⁺ limit: every Gram solve is an
eigendecomposition with eigenvalues below ``rcond``·max|λ| dropped (``rcond`` defaults to
size·eps), i.e. the Moore–Penrose pseudo-inverse of the Gram (:mod:`ntk_ngd.methods._linalg`).

Derivations (push-through Φ(ΦᵀΦ/N + ρ)⁻¹ = (ΦΦᵀ/N + ρ)⁻¹Φ, and its ρ = 0 form Φᵀ(ΦΦᵀ)⁺ = Φ⁺)
-------------------------------------------------------------------------------------------
* ``gd``: Δθ = −η ∇Loss (``jax.grad`` of the loss through neural-tangents' apply; ρ ignored).
* ``exact`` (G = JᵀJ/N): (JᵀJ/N + ρ)⁻¹Jᵀr/N = Jᵀ(Θ + NρI)⁻¹r, so Δθ = −η Jᵀu, u = (Θ + Nρ)⁻¹r.
* ``block_diag`` (S = I): per layer Δθ_l = −η J_lᵀ(Θ_l + Nρ)⁻¹r.
* ``block_tridiag`` / ``pattern`` (G = Dᵀ(S⊗I)D/N, D = blockdiag(J_l), J = 1̃ᵀD, 1̃ = 1_L ⊗ I):
  (DᵀS̃D + Nρ)⁻¹Dᵀ = Dᵀ(S̃K + Nρ)⁻¹ with K = DDᵀ = blockdiag(Θ_l), so
  Δθ = −η Dᵀ(S̃K + NρI)⁻¹1̃r. S̃K is not symmetric (and S̃ is indefinite), so write
  Dᵀ = DᵀK^{+1/2}K^{1/2} and push through once more:
      Δθ = −η DᵀK^{+1/2} (T + NρI)⁻¹ Z, T = K^{1/2}S̃K^{1/2} (symmetric), Z = K^{1/2}1̃r = [Θ_l^{1/2}r]_l,
  i.e. per layer Δθ_l = −η J_lᵀ Θ_l^{+1/2} v_l with v = (T + Nρ)⁻¹Z. At ρ = 0, T⁺Z is the ρ → 0⁺
  limit whenever Z ∈ range(T) (the same construction as :mod:`ntk_ngd.methods.layerwise`);
  DᵀK^{+1/2} is an isometry on range(K), so otherwise the update diverges like 1/ρ.
* ``kfac``: ΔW̃_l = −η (A_l + √ρ)⁻¹ ∇_{W̃_l} (B_l + √ρ)⁻¹, A_l = H̃ᵀH̃/N, B_l = ΔᵀΔ/(N s_l), s_l = 1
  except s_L = N for the readout with ``kfac_readout="paper"``, and ∇_{W̃_l} = H̃ᵀV/N with
  V[n] = Σ_c r_{nc}δ_{n,c} (the row-major vec of A⁻¹∇B⁻¹ is kron(A⁻¹, B⁻¹)vec(∇)). Written as
  ΔW̃_l = −η Lmat·Rmat with Lmat = (A + √ρ)⁻¹H̃ᵀ/N and Rmat = V(B + √ρ)⁻¹; each factor either
  explicitly ((fan_in+1)² and fan_out² eigendecompositions) or by push-through on the Grams:
      Lmat = H̃ᵀ(K^H + N√ρ)⁻¹,   Rmat = a·R̃ᵀ(K^Δ + a√ρ)⁻¹Δ,  a = N s_l,
  (R̃ᵀX)[n] = Σ_c r_{nc}X[(n, c)]. ``kfac_route="auto"`` (default) uses the Gram form for a factor
  whose dimension exceeds N (A) or N·C (B); "factor"/"gram" force one route. pinv at ρ = 0.
* ``unit_wise``: unit j of layer l owns column j of W̃_l, J_{l,j} rows δ_{l,j}(n, c) h̃_n, Gram
  K_{l,j} = (K^H_l ⊗ 1_{C×C}) ⊙ d_jd_jᵀ; Δw̃_{l,j} = −η J_{l,j}ᵀ(K_{l,j} + Nρ)⁻¹r, vmapped over a
  chunk of units (``unit_chunk``, default 64) inside ``lax.map`` over chunks.
* ``ef`` / ``sf`` (weighted Fisher G = JᵀEEᵀJ/N, E (NC × m) block-diagonal over samples): with
  Φ = EᵀJ (m × P, never formed; ΦΦᵀ = EᵀΘE), if r = E c then ∇Loss = Φᵀc/N and
      Δθ = −η Φᵀ(ΦΦᵀ + Nρ)⁻¹c = −η Jᵀ[E (EᵀΘE + Nρ)⁻¹ c].
  EF: E = R̃ (column n is r_n in sample n's rows), c = 1_N (Φ = the per-sample gradients g_n).
  SF: E holds ε_n^{(s)}/√k (k samples, ε from ``numpy.random.default_rng(seed + step)
  .standard_normal((k, N, C))``: step 0 uses ``seed``, the draw of :func:`ntk_ngd.methods.empirical.sf_noise`
  and ``ntk_ngd.dense``), c = EᵀQ⁻¹r with Q_n = (1/k)Σ_s εεᵀ when every Q_n is invertible. When
  some Q_n is singular (k < C) r ∉ range(E): write Jᵀr = Φᵀb + (Jᵀr − Φᵀb), b = (EᵀΘE)⁺EᵀΘr,
  whose second part lies in null(G) and is scaled by 1/ρ:
      Δθ = −η Jᵀ[E(EᵀΘE + Nρ)⁻¹b + (r − Eb)/(Nρ)]   (ρ > 0),
  and at ρ = 0 the pseudo-inverse G⁺∇Loss = Jᵀ E(EᵀΘE)⁺b (the ρ → 0⁺ limit is then infinite; a
  warning says so).
* ``ief``: Δθ = −η Gᵀ(GGᵀ + λI)⁻¹s with G the N×P per-sample gradients (rows g_n = J_nᵀr_n),
  s_n = ||r_n||², λ = ``damping`` (no factor N, as in ``methods.empirical`` and ``dense``):
  GGᵀ = R̃ᵀΘR̃ and Gᵀv = Jᵀ(R̃v).

API
---
:func:`preconditioner` returns a :class:`Preconditioner` — ``(init, update)`` with the shape of an
optax ``GradientTransformation`` (optax is not a dependency): ``state = init(params)``,
``delta_params, state = update(params, X, Y, state)``. Unlike an optax transformation it does not
take gradients: the preconditioners need the per-sample features, so ``update`` computes the
features, Grams, gradient and update itself (one jit-compiled function per network, method and
options). :func:`parameter_update` is a single Δθ; :func:`train` runs the loop and returns a
:class:`TrainResult` (losses, predictions, divergence).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate
from .kernels import _check_params, layer_features
from .methods import _linalg
from .methods.layerwise import banded_pattern, check_pattern, tridiagonal_pattern
from .networks import Network

#: Methods :func:`train` and :func:`preconditioner` accept.
METHODS = ("gd", "exact", "block_diag", "block_tridiag", "pattern", "kfac", "unit_wise", "ef", "sf", "ief")

#: Method-specific options (``rcond`` is accepted by every method).
OPTIONS: dict[str, tuple[str, ...]] = {
    "pattern": ("pattern", "bandwidth"),
    "kfac": ("kfac_readout", "kfac_route"),
    "unit_wise": ("unit_chunk",),
    "sf": ("samples", "seed"),
}
KFAC_READOUTS = ("common", "paper")
KFAC_ROUTES = ("auto", "factor", "gram")

#: A run is declared divergent when the loss is non-finite or exceeds this × the initial loss.
DIVERGENCE_FACTOR = 1e6


# ---------------------------------------------------------------------------------------------
# Validation of method options (host side, turned into a hashable tuple for jit)
# ---------------------------------------------------------------------------------------------
def _normalise_options(net: Network, method: str, options: dict) -> tuple:
    _validate.choice("method", method, METHODS)
    options = dict(options)
    if "k" in options:  # ntk_ngd.dense spells the number of SF samples k
        if "samples" in options:
            raise ValueError("pass samples= or k= (the same thing), not both")
        options["samples"] = options.pop("k")
    allowed = OPTIONS.get(method, ()) + ("rcond",)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {method!r} takes no option(s) {unknown}; its options: {list(allowed)}")
    out: dict[str, Any] = {"rcond": None}
    if options.get("rcond") is not None:
        out["rcond"] = _validate.nonnegative("rcond", options["rcond"])
    L = net.depth
    if method in ("pattern", "block_tridiag"):
        if method == "block_tridiag":
            S = tridiagonal_pattern(L)
        elif options.get("pattern") is not None:
            if options.get("bandwidth") is not None:
                raise ValueError("pass pattern= or bandwidth=, not both")
            S = check_pattern(options["pattern"], L)
        elif options.get("bandwidth") is not None:
            S = banded_pattern(L, _validate.positive_int("bandwidth", options["bandwidth"], minimum=0))
        else:
            raise ValueError(f"method 'pattern' needs pattern=<{L}x{L} symmetric matrix> or bandwidth=<int>")
        out["pattern"] = tuple(tuple(float(v) for v in row) for row in S)
    if method == "kfac":
        out["kfac_readout"] = _validate.choice("kfac_readout", options.get("kfac_readout", "common"), KFAC_READOUTS)
        out["kfac_route"] = _validate.choice("kfac_route", options.get("kfac_route", "auto"), KFAC_ROUTES)
    if method == "unit_wise":
        out["unit_chunk"] = _validate.positive_int("unit_chunk", options.get("unit_chunk", 64))
    if method == "sf":
        out["samples"] = _validate.positive_int("samples", options.get("samples", 1))
        out["seed"] = _validate.positive_int("seed", options.get("seed", 0), minimum=0)
    return tuple(sorted(out.items()))


def _check_method_inputs(net: Network, params, X, Y):
    if not isinstance(net, Network):
        raise ValueError(f"net must be an ntk_ngd.networks.Network (from mlp(...)), got {type(net).__name__}")
    _check_params(net, params)
    X = np.asarray(net.check_inputs(X, "X"), dtype=float)
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape != (X.shape[0], net.out_dim):
        raise ValueError(f"Y must have shape (N, C) = ({X.shape[0]}, {net.out_dim}), got {Y.shape}")
    Y = np.asarray(_validate.finite_matrix("Y", Y), dtype=float)
    return X, Y


def _check_lr(lr) -> float:
    try:
        v = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"lr must be a number > 0, got {lr!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return v


# ---------------------------------------------------------------------------------------------
# Gram-form linear algebra
# ---------------------------------------------------------------------------------------------
def _solve(K, rhs, shift, rcond):
    """(K + shift)⁻¹ rhs for symmetric K; eigenvalues below rcond·max|λ| dropped (pinv at 0)."""
    evals, evecs = _linalg.eigh_psd(K)
    inv = _linalg.inverse_eigenvalues(evals, shift, rcond)
    return evecs @ (inv.reshape((-1,) + (1,) * (rhs.ndim - 1)) * (evecs.T @ rhs))


def _expand(fwd, c: int):
    """K^H ⊗ 1_{C×C} on the flattened (n, c) index."""
    return jnp.repeat(jnp.repeat(fwd, c, axis=0), c, axis=1)


def _jt(H, delta, u):
    """J_lᵀu as a (fan_in + bias, fan_out) matrix: H̃ᵀ V, V[n] = Σ_c u_{nc} δ_{n,c}."""
    n, c, _ = delta.shape
    return H.T @ jnp.einsum("nc,ncm->nm", u.reshape(n, c), delta)


class _Features(NamedTuple):
    H: list  # (N, d_l)
    delta: list  # (N, C, M_l)
    flat: list  # (NC, M_l)
    ntk: list  # Θ_l (NC, NC)
    fwd: list  # K^H_l (N, N)


def _features(net, params, X) -> _Features:
    H, delta = layer_features(net, params, X)
    flat = [d.reshape(-1, d.shape[-1]) for d in delta]
    fwd = [h @ h.T for h in H]
    ntk = [_expand(k, net.out_dim) * (d @ d.T) for k, d in zip(fwd, flat)]
    return _Features(list(H), list(delta), flat, ntk, fwd)


# ---------------------------------------------------------------------------------------------
# (G + ρI)⁻¹ ∇Loss per method, as per-layer W̃ matrices
# ---------------------------------------------------------------------------------------------
def _exact(ft, r, n, damping, o):
    u = _solve(sum(ft.ntk), r, n * damping, o["rcond"])
    return [_jt(h, d, u) for h, d in zip(ft.H, ft.delta)]


def _block_diag(ft, r, n, damping, o):
    return [_jt(h, d, _solve(t, r, n * damping, o["rcond"])) for h, d, t in zip(ft.H, ft.delta, ft.ntk)]


def _pattern(ft, r, n, damping, o):
    S = np.asarray(o["pattern"])
    L = S.shape[0]
    if np.array_equal(S, np.eye(L)):
        return _block_diag(ft, r, n, damping, o)
    roots, pinv_roots = zip(*(_linalg.psd_sqrt_and_pinv_sqrt(t, o["rcond"]) for t in ft.ntk))
    Z = jnp.concatenate([root @ r for root in roots])
    T = jnp.block([[S[a, b] * (roots[a] @ roots[b]) for b in range(L)] for a in range(L)])
    v = _solve(T, Z, n * damping, o["rcond"]).reshape(L, -1)
    return [_jt(h, d, p @ v[l]) for l, (h, d, p) in enumerate(zip(ft.H, ft.delta, pinv_roots))]


def _kfac(ft, r, n, damping, o, depth):
    root = jnp.sqrt(damping)
    rcond = o["rcond"]
    out = []
    for l, (H, delta, flat, fwd) in enumerate(zip(ft.H, ft.delta, ft.flat, ft.fwd)):
        c = delta.shape[1]
        a = float(n * n) if (o["kfac_readout"] == "paper" and l == depth - 1) else float(n)
        gram_a = o["kfac_route"] == "gram" or (o["kfac_route"] == "auto" and H.shape[1] > n)
        gram_b = o["kfac_route"] == "gram" or (o["kfac_route"] == "auto" and flat.shape[1] > n * c)
        if gram_a:  # (A + √ρ)⁻¹H̃ᵀ/N = H̃ᵀ(K^H + N√ρ)⁻¹
            left = _solve(fwd, H, n * root, rcond).T
        else:
            left = _solve(H.T @ H / n, H.T / n, root, rcond)
        V = jnp.einsum("nc,ncm->nm", r.reshape(n, c), delta)
        if gram_b:  # V(B + √ρ)⁻¹ = a R̃ᵀ(K^Δ + a√ρ)⁻¹Δ
            right = a * jnp.einsum("nc,ncm->nm", r.reshape(n, c),
                                   _solve(flat @ flat.T, flat, a * root, rcond).reshape(delta.shape))
        else:
            right = _solve(flat.T @ flat / a, V.T, root, rcond).T
        out.append(left @ right)
    return out


def _unit_wise(ft, r, n, damping, o):
    chunk = o["unit_chunk"]
    out = []
    for H, delta, flat, fwd in zip(ft.H, ft.delta, ft.flat, ft.fwd):
        c = delta.shape[1]
        K_h = _expand(fwd, c)
        m = flat.shape[1]
        size = min(chunk, m)
        n_chunks = -(-m // size)
        d = jnp.pad(flat, ((0, 0), (0, n_chunks * size - m))).T.reshape(n_chunks, size, -1)

        def one(dj):
            return _solve(K_h * jnp.outer(dj, dj), r, n * damping, o["rcond"])

        U = jax.lax.map(jax.vmap(one), d).reshape(n_chunks * size, -1)[:m].T  # (NC, M): column j = u_j
        out.append(H.T @ jnp.einsum("ncm,ncm->nm", U.reshape(n, c, m), delta))
    return out


def _per_sample(u_cols, n, c):
    """E (NC × N·m) from per-sample columns (N, C, m): sample n's block in its own rows."""
    m = u_cols.shape[-1]
    eye = jnp.eye(n, dtype=u_cols.dtype)
    return jnp.einsum("ncm,nk->nckm", u_cols, eye).reshape(n * c, n * m)


def _ef(ft, r, n, damping, o, c, improved):
    theta = sum(ft.ntk)
    R = _per_sample(r.reshape(n, c, 1), n, c)  # R̃ (NC × N)
    gram = R.T @ theta @ R  # per-sample gradient Gram GGᵀ
    if improved:  # iEF: Gᵀ(GGᵀ + λ)⁻¹s, s_n = ||r_n||²
        v = _solve(gram, jnp.sum(r.reshape(n, c) ** 2, axis=1), damping, o["rcond"])
    else:  # EF: r = R̃1, Φᵀ(ΦΦᵀ + Nρ)⁻¹1
        v = _solve(gram, jnp.ones(n, r.dtype), n * damping, o["rcond"])
    u = R @ v
    return [_jt(h, d, u) for h, d in zip(ft.H, ft.delta)]


def _sf(ft, r, n, damping, o, c, noise, full_rank):
    theta = sum(ft.ntk)
    k = noise.shape[0]
    cols = jnp.transpose(noise, (1, 2, 0)) / math.sqrt(k)  # (N, C, k)
    E = _per_sample(cols, n, c)  # (NC × Nk)
    gram = E.T @ theta @ E
    if full_rank:  # r = E c with c = EᵀQ⁻¹r
        Q = jnp.einsum("nck,ndk->ncd", cols, cols)
        coef = E.T @ jnp.linalg.solve(Q, r.reshape(n, c, 1)).reshape(-1)
        u = E @ _solve(gram, coef, n * damping, o["rcond"])
    else:
        b = _solve(gram, E.T @ (theta @ r), 0.0, o["rcond"])
        u = E @ _solve(gram, b, n * damping, o["rcond"])
        safe = jnp.where(damping > 0, damping, 1.0)
        u = u + jnp.where(damping > 0, (r - E @ b) / (n * safe), 0.0)
    return [_jt(h, d, u) for h, d in zip(ft.H, ft.delta)]


def _apply_fn(net: Network):
    return net._serial()[1]


def _tildes_to_tree(net: Network, params, tildes):
    """Per-layer W̃ (fan_in + bias, fan_out) → a pytree shaped like ``params``."""
    out = []
    for l in range(net.depth):
        W, b = params[2 * l]
        t = tildes[l]
        fi = W.shape[0]
        out.append((t[:fi].reshape(W.shape), None if b is None else t[fi:].reshape(b.shape)))
        if l < net.depth - 1:
            out.append(params[2 * l + 1])
    return out


def _direction(net: Network, method: str, opts: tuple, params, X, Y, damping, noise, full_rank):
    """(G + ρI)⁻¹ ∇Loss (for ief: Gᵀ(GGᵀ + λ)⁻¹s) as a params-shaped pytree; traceable."""
    o = dict(opts)
    n, c = X.shape[0], net.out_dim
    if method == "gd":
        def loss(p):
            return 0.5 * jnp.sum((_apply_fn(net)(p, X) - Y) ** 2) / n

        return jax.grad(loss)(params)
    r = (_apply_fn(net)(params, X) - Y).reshape(-1)
    ft = _features(net, params, X)
    if method == "exact":
        tildes = _exact(ft, r, n, damping, o)
    elif method == "block_diag":
        tildes = _block_diag(ft, r, n, damping, o)
    elif method in ("block_tridiag", "pattern"):
        tildes = _pattern(ft, r, n, damping, o)
    elif method == "kfac":
        tildes = _kfac(ft, r, n, damping, o, net.depth)
    elif method == "unit_wise":
        tildes = _unit_wise(ft, r, n, damping, o)
    elif method in ("ef", "ief"):
        tildes = _ef(ft, r, n, damping, o, c, improved=method == "ief")
    elif method == "sf":
        tildes = _sf(ft, r, n, damping, o, c, noise, full_rank)
    else:  # pragma: no cover (validated before)
        raise ValueError(f"unknown method {method!r}")
    return _tildes_to_tree(net, params, tildes)


@partial(jax.jit, static_argnums=(0, 1, 2, 9))
def _delta_jit(net, method, opts, params, X, Y, lr, damping, noise, full_rank):
    d = _direction(net, method, opts, params, X, Y, damping, noise, full_rank)
    return jax.tree_util.tree_map(lambda v: -lr * v, d)


@partial(jax.jit, static_argnums=(0, 1, 2, 10))
def _step_jit(net, method, opts, params, X, Y, lr, damping, noise, X_test, full_rank):
    d = _direction(net, method, opts, params, X, Y, damping, noise, full_rank)
    new = jax.tree_util.tree_map(lambda p, v: p - lr * v, params, d)
    apply_fn = _apply_fn(net)
    f_train = apply_fn(new, X)
    f_test = None if X_test is None else apply_fn(new, X_test)
    return new, f_train, f_test


def _sf_noise(net: Network, n: int, opts: tuple, step: int, damping: float):
    """The SF draw of this step (host numpy) and whether every Q_n = (1/k)Σ εεᵀ is invertible."""
    o = dict(opts)
    k, seed = o["samples"], o["seed"]
    eps = np.random.default_rng(seed + step).standard_normal((k, n, net.out_dim))
    Q = np.einsum("snc,snd->ncd", eps, eps) / k
    ev = np.linalg.eigvalsh(Q)
    full = bool(np.all(ev.min(axis=1) > net.out_dim * np.finfo(float).eps * ev.max(axis=1)))
    if not full and damping == 0:
        warnings.warn(
            f"sf: samples={k} < C={net.out_dim} gives a singular per-sample Fisher weight; at damping 0 the "
            "update is the pseudo-inverse G^+ grad (the damping -> 0 limit is infinite); pass damping > 0",
            RuntimeWarning,
            stacklevel=3,
        )
    return jnp.asarray(eps), full


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
class PreconditionerState(NamedTuple):
    """Host-side state: the number of updates made (selects the SF noise draw)."""

    step: int


class Preconditioner(NamedTuple):
    """An optax-style pair: ``state = init(params)``; ``delta, state = update(params, X, Y, state)``.

    ``delta`` has the structure of ``params`` and already contains −η: ``params + delta`` is the
    next iterate.
    """

    init: Callable
    update: Callable


def preconditioner(net: Network, method: str, lr: float, damping: float = 0.0, **options) -> Preconditioner:
    """The :class:`Preconditioner` of ``method`` with step size ``lr`` and damping ρ ≥ 0.

    ``options``: ``rcond`` (all); ``pattern=``/``bandwidth=`` (pattern); ``kfac_readout``
    ("common"/"paper") and ``kfac_route`` ("auto"/"factor"/"gram") (kfac); ``unit_chunk``
    (unit_wise); ``samples`` (alias ``k``) and ``seed`` (sf). See the module docstring.
    """
    opts = _normalise_options(net, method, options)
    lr = _check_lr(lr)
    damping = _validate.nonnegative("damping", damping)

    def init(params):
        _check_params(net, params)
        return PreconditionerState(0)

    def update(params, X, Y, state):
        X, Y = _check_method_inputs(net, params, X, Y)
        noise, full = (None, False)
        if method == "sf":
            noise, full = _sf_noise(net, X.shape[0], opts, int(state.step), damping)
        delta = _delta_jit(net, method, opts, params, jnp.asarray(X), jnp.asarray(Y), lr, damping, noise, full)
        return delta, PreconditionerState(int(state.step) + 1)

    return Preconditioner(init, update)


def parameter_update(net: Network, params, X, Y, method: str, lr: float, damping: float = 0.0, **options):
    """One update Δθ (a pytree shaped like ``params``; SF uses its step-0 draw)."""
    pre = preconditioner(net, method, lr, damping, **options)
    delta, _ = pre.update(params, X, Y, pre.init(params))
    return delta


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    ``train_loss`` (steps+1,) is the training loss after each step (index 0: initial); after a
    divergence the remaining entries are NaN. ``train_predictions`` (steps+1, N, C) and
    ``test_predictions`` (steps+1, N_test, C) or ``None`` likewise. ``params`` are the last
    parameters whose loss was finite and not divergent. ``diverged_at`` is the step whose loss was
    non-finite or > :data:`DIVERGENCE_FACTOR` × the initial loss (``None`` if none was).
    """

    method: str
    lr: float
    lr_rule: str
    alpha: float | None
    damping: float
    train_loss: np.ndarray
    train_predictions: np.ndarray
    test_predictions: np.ndarray | None
    params: Any
    diverged_at: int | None
    steps_run: int

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def final_loss(self) -> float:
        return float(self.train_loss[self.steps_run])


def _mse(f, Y) -> float:
    return float(0.5 * np.sum((np.asarray(f) - Y) ** 2) / Y.shape[0])


def _theory_lr(net, params, X, Y, method, damping, opts) -> tuple[float, float]:
    from .diagnostics import predict  # local: diagnostics imports the function-space stack

    o = dict(opts)
    kw = {}
    if method == "pattern":
        kw["pattern"] = np.asarray(o["pattern"])
    if method == "kfac":
        kw["kfac_readout"] = o["kfac_readout"]
    residual = np.asarray(net.apply(params, X)) - Y if method in ("ef", "ief") else None
    pred = predict(net, X, method, params=params, damping=damping, residual=residual, rcond=o["rcond"], **kw)
    if not pred.isotropic or not pred.alpha:
        raise ValueError(f"lr=None needs a method whose kernel theory predicts isotropic, but {pred.summary()}; pass lr=")
    return 1.0 / pred.alpha, float(pred.alpha)


def train(
    net: Network,
    params,
    X,
    Y,
    method: str,
    lr: float | None = None,
    steps: int = 10,
    damping: float = 0.0,
    X_test=None,
    progress: bool = False,
    **options,
) -> TrainResult:
    """Train the finite network with ``method`` for ``steps`` full-batch steps.

    ``lr=None`` uses 1/α with α the theoretical isotropy constant of
    :func:`ntk_ngd.diagnostics.predict` at the initial params (a ValueError if theory does not
    predict an isotropic kernel there, e.g. gd, damping > 0 or a rank-deficient layer).
    ``options`` as in :func:`preconditioner`. Divergence (non-finite loss, or loss >
    :data:`DIVERGENCE_FACTOR` × initial) stops the run and is recorded, never raised.
    """
    opts = _normalise_options(net, method, options)
    X, Y = _check_method_inputs(net, params, X, Y)
    steps = _validate.positive_int("steps", steps, minimum=0)
    damping = _validate.nonnegative("damping", damping)
    Xt = None if X_test is None else np.asarray(net.check_inputs(X_test, "X_test"), dtype=float)
    alpha = None
    if lr is None:
        lr, alpha = _theory_lr(net, params, X, Y, method, damping, opts)
        source = "1/alpha (theory)"
    else:
        lr = _check_lr(lr)
        source = "given"

    n, c = X.shape[0], net.out_dim
    apply_fn = _apply_fn(net)
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    Xtj = None if Xt is None else jnp.asarray(Xt)
    f0 = np.asarray(apply_fn(params, Xj))
    loss = np.full(steps + 1, np.nan)
    preds = np.full((steps + 1, n, c), np.nan)
    tpreds = None if Xt is None else np.full((steps + 1, Xt.shape[0], c), np.nan)
    loss[0] = _mse(f0, Y)
    preds[0] = f0
    if tpreds is not None:
        tpreds[0] = np.asarray(apply_fn(params, Xtj))
    limit = DIVERGENCE_FACTOR * loss[0]

    iterator = range(1, steps + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(iterator, desc=f"train {method}", unit="step")
        iterator = bar
    diverged_at, steps_run = None, 0
    for t in iterator:
        noise, full = (None, False)
        if method == "sf":
            noise, full = _sf_noise(net, n, opts, t - 1, damping)
        new, f, ft = _step_jit(net, method, opts, params, Xj, Yj, lr, damping, noise, Xtj, full)
        f = np.asarray(f)
        value = _mse(f, Y)
        loss[t] = value
        if not np.isfinite(value) or (loss[0] > 0 and value > limit):
            diverged_at = t
            break
        params, steps_run = new, t
        preds[t] = f
        if tpreds is not None:
            tpreds[t] = np.asarray(ft)
        if bar is not None:
            bar.set_postfix(loss=f"{value:.3e}")
    if bar is not None:
        bar.close()
    return TrainResult(method, float(lr), source, alpha, damping, loss, preds, tpreds, params, diverged_at, steps_run)


__all__ = [
    "METHODS",
    "Preconditioner",
    "PreconditionerState",
    "TrainResult",
    "parameter_update",
    "preconditioner",
    "train",
]
