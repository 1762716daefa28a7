"""`ntk-ngd doctor`: versions, the kernel backend and why, jax devices, float64 status and a ~2 s
self-check.

Backend: neural-tangents where it imports (the default and the reference), else the pure-jax backend
(:mod:`ntk_ngd.backends`); ``NTK_NGD_BACKEND=jax|neural_tangents|auto`` forces one.

The self-check builds a tiny MLP and compares, on a train × test pair (X, X2):

* each finite-width Gram-form NTK block Θ_l = K^H_l ⊙ K^Δ_l with neural-tangents'
  ``empirical_ntk_fn`` of the network viewed as a function of layer l's (W_l, b_l) only, and the sum
  with NT's full empirical NTK (the other implementation) — without NT, with the explicit Jacobian
  of ``jax.jacrev`` (``ntk_ngd.reference``);
* the sum of the infinite-width blocks with NT's ``kernel_fn(X, X2, 'ntk')`` and, with NT present, the
  pure-jax backend's blocks with NT's (the two backends live) — without NT, the closed-form recursions
  with their Gaussian-quadrature evaluation;

and reports the max relative error max|A − B| / max|B| of each. Exit status 1 if any exceeds its
tolerance (1e-10 in float64, 1e-4 in float32; the ReLU infinite-width comparisons with NT 5e-8 on the
diagonal x = x', where NT's arccos is accurate to ~1e-8).
"""
from __future__ import annotations

import time
from importlib import metadata as _metadata

import numpy as np

#: Distributions that provide jax's CUDA backend (any one is enough).
CUDA_DISTRIBUTIONS = ("jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda11-plugin", "jax-cuda11-pjrt")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="print versions, jax devices and float64 status; run a 2 s kernel self-check",
        description="Print the versions of python, ntk_ngd, jax, jaxlib, neural-tangents, numpy "
        "and scipy, the jax backend and devices, whether float64 is on and whether a CUDA plugin "
        "is installed; then check the per-layer NTK blocks (Gram form, finite width) and the "
        "infinite-width blocks against neural-tangents on a tiny network. Exit status 1 on FAIL.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-check", action="store_true", help="skip the self-check (report only)")
    p.set_defaults(func=run)


def _version(dist: str) -> str | None:
    try:
        return _metadata.version(dist)
    except _metadata.PackageNotFoundError:
        return None


def cuda_plugins() -> dict[str, str]:
    """Installed CUDA plugin distributions and their versions (empty dict: none)."""
    return {d: v for d in CUDA_DISTRIBUTIONS if (v := _version(d)) is not None}


def report() -> dict:
    """Versions, jax backend/devices, float64 status and CUDA plugins."""
    import platform
    import sys

    import jax

    from .. import __version__, backends
    from .._config import x64_enabled

    try:
        backend = jax.default_backend()
        devices = [f"{d.platform}:{d.id} ({getattr(d, 'device_kind', '?')})" for d in jax.devices()]
    except RuntimeError as err:
        backend, devices = None, [f"unavailable: {err}"]
    return {
        "versions": {
            "python": sys.version.split()[0],
            "ntk_ngd": __version__,
            "jax": _version("jax"),
            "jaxlib": _version("jaxlib"),
            "neural-tangents": _version("neural-tangents"),
            "optax": _version("optax"),
            "numpy": _version("numpy"),
            "scipy": _version("scipy"),
        },
        "kernel_backend": backends.active()._asdict(),
        "platform": platform.platform(),
        "jax_backend": backend,
        "jax_devices": devices,
        "float64": x64_enabled(),
        "cuda_plugins": cuda_plugins(),
    }


# ---------------------------------------------------------------------------------------------
# self-check
# ---------------------------------------------------------------------------------------------
def _rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / (scale if scale > 0 else 1.0))


def _nt_flat(K):
    """NT's (N, N2, C, C) empirical NTK → (N·C, N2·C), row index n·C + c (ours)."""
    K = np.asarray(K)
    n, n2, c, _ = K.shape
    return np.transpose(K, (0, 2, 1, 3)).reshape(n * c, n2 * c)


def nt_layer_ntk(net, params, X, X2, layer: int | None, implementation: int = 1):
    """NT's empirical NTK of ``net`` w.r.t. Dense ``layer``'s (W, b) only (``None``: all params),
    flattened to (N·C, N2·C). jit-compiled (much faster than NT's op-by-op dispatch)."""
    import jax
    import neural_tangents as nt
    from neural_tangents import stax

    apply_fn = stax.serial(*net.stax_layers)[1]
    kw = dict(trace_axes=(), implementation=implementation, vmap_axes=0)
    if layer is None:
        return _nt_flat(jax.jit(nt.empirical_ntk_fn(apply_fn, **kw))(X, X2, params))
    index = 2 * layer

    def f_layer(p_layer, x):
        ps = list(params)
        ps[index] = p_layer
        return apply_fn(ps, x)

    return _nt_flat(jax.jit(nt.empirical_ntk_fn(f_layer, **kw))(X, X2, params[index]))


def self_check() -> dict:
    """Gram form and infinite-width blocks vs neural-tangents (or, without it, independent pure-jax
    computations) on a tiny net (see module doc)."""
    from .. import backends, kernels, networks, reference
    from .._config import x64_enabled

    t0 = time.perf_counter()
    tol = 1e-10 if x64_enabled() else 1e-4
    rng = np.random.default_rng(0)
    net = networks.mlp(depth=3, width=[12, 9], in_dim=4, out_dim=2, activation="relu", bias=True)
    params = net.init(seed=1)
    X = rng.standard_normal((5, 4))
    X2 = rng.standard_normal((3, 4))
    checks = []
    have_nt = backends.neural_tangents_status()[0] and net.uses_neural_tangents

    lk = kernels.layer_kernels(net, X, X2, params=params)
    if have_nt:
        per_layer = [_rel_err(lk.ntk[l], nt_layer_ntk(net, params, X, X2, l, 1)) for l in range(net.depth)]
        checks.append({"name": "finite width: each block Θ_l vs NT empirical_ntk_fn on layer l (impl 1)",
                       "max_rel_err": max(per_layer)})
        full = nt_layer_ntk(net, params, X, X2, None, 2)
        checks.append({"name": "finite width: Σ_l Θ_l vs NT empirical_ntk_fn, all params (impl 2)",
                       "max_rel_err": _rel_err(lk.total_ntk, full)})
    else:
        J = reference.jacobian(net, params, np.concatenate([X, X2]))
        slices, rows = reference.layer_slices(net), X.shape[0] * net.out_dim
        per_layer = [_rel_err(lk.ntk[l], J[:rows, sl] @ J[rows:, sl].T) for l, sl in enumerate(slices)]
        checks.append({"name": "finite width: each block Θ_l vs J_l J_lᵀ from jax.jacrev (reference)",
                       "max_rel_err": max(per_layer)})

    for act in ("relu", "erf"):
        inet = networks.mlp(depth=3, width=8, in_dim=4, out_dim=2, activation=act, bias=True)
        ik = kernels.layer_kernels(inet, X, X2)
        jax_fwd, jax_bwd = backends.recursions.infinite_grams(inet, X, X2)
        if have_nt:
            checks.append({"name": f"infinite width ({act}): Σ_l Θ_l vs NT kernel_fn(X, X2, 'ntk')",
                           "max_rel_err": _rel_err(ik.total_ntk, inet.kernel_fn(X, X2, "ntk"))})
            checks.append({"name": f"infinite width ({act}): pure-jax backend blocks vs NT's",
                           "max_rel_err": max(_rel_err(jax_fwd, ik.fwd), _rel_err(jax_bwd, ik.bwd))})
        else:
            q_fwd, q_bwd = backends.recursions.infinite_grams(inet, X, X2, method="quadrature")
            checks.append({"name": f"infinite width ({act}): closed-form recursions vs Gaussian quadrature",
                           "max_rel_err": max(_rel_err(jax_fwd, q_fwd), _rel_err(jax_bwd, q_bwd))})

    for c in checks:
        c["tol"] = tol
        c["pass"] = bool(np.isfinite(c["max_rel_err"]) and c["max_rel_err"] <= tol)
    ok = all(c["pass"] for c in checks)
    return {
        "network": "mlp(depth=3, width=[12, 9], in_dim=4, out_dim=2, relu, bias); N=5, N2=3",
        "checks": checks,
        "status": "PASS" if ok else "FAIL",
        "seconds": time.perf_counter() - t0,
    }


def run(args) -> int:
    from ._common import emit

    info = report()
    if not args.no_check:
        info["self_check"] = self_check()
        info["status"] = info["self_check"]["status"]
    else:
        info["status"] = "SKIPPED"

    lines = ["ntk-ngd doctor"]
    lines += [f"  {k:<16} {v}" for k, v in info["versions"].items()]
    lines.append(f"  {'kernel backend':<16} {info['kernel_backend']['name']} ({info['kernel_backend']['reason']})")
    lines.append(f"  {'platform':<16} {info['platform']}")
    lines.append(f"  {'jax backend':<16} {info['jax_backend']}")
    lines.append(f"  {'jax devices':<16} {', '.join(info['jax_devices'])}")
    lines.append(f"  {'float64':<16} {'on' if info['float64'] else 'OFF (NTK_NGD_X64=0)'}")
    plugins = info["cuda_plugins"]
    lines.append(f"  {'CUDA plugin':<16} "
                 + (", ".join(f"{k} {v}" for k, v in plugins.items()) if plugins else "none installed"))
    if "self_check" in info:
        sc = info["self_check"]
        lines.append(f"self-check on {sc['network']}:")
        for c in sc["checks"]:
            lines.append(f"  [{'ok' if c['pass'] else 'FAIL'}] {c['name']}: max rel err "
                         f"{c['max_rel_err']:.2e} (tol {c['tol']:.0e})")
        lines.append(f"{sc['status']} ({sc['seconds']:.1f} s)")
    emit(args, info, "\n".join(lines))
    return 0 if info["status"] in ("PASS", "SKIPPED") else 1
