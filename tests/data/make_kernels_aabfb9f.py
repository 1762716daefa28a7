"""Reference values for tests/test_kernel_speedups.py: infinite-width Θ_G of every registered method at
commit aabfb9f (before the kernel speed-ups of issue 26), so that the optimised code can be compared with
the code it replaced.

Run it with the *original* package first on the path (the current package would compare with itself):

    git archive aabfb9f | tar -x -C /tmp/orig
    PYTHONPATH=/tmp/orig python tests/data/make_kernels_aabfb9f.py

Writes tests/data/kernels_aabfb9f.npz: per (method, damping) the train kernel ``<m>|<ρ>|train`` and the
test×train kernel ``<m>|<ρ>|test``, plus the inputs X, X_test and the residual used (3-layer ReLU MLP,
16 inputs, 1 output, N = 20 > 17 = rank of the first layer's input Gram, 6 test points); and at finite width
(width 8, 2 outputs, N = 6, 3 test points, ``net.init(0)``) ``finite|<m>|<ρ>|…`` for every method.
"""
from __future__ import annotations

import os

import numpy as np

import ntk_ngd as nn
from ntk_ngd import methods

N, N_TEST, DAMPINGS, N_FINITE = 20, 6, (0.0, 1e-3), 6


def variants(method):
    """(tag, options) per case: the method's example options, and for a method with a ``rank`` option (a number
    of Kronecker terms) also rank 2 (the multi-term path)."""
    out = [("", dict(method.example_options))]
    if "rank" in method.option_names:
        out.append(("rank=2", {**dict(method.example_options), "rank": 2}))
    return out


def key(name, tag, rho, which):
    return f"{name}{'[' + tag + ']' if tag else ''}|{rho:g}|{which}"


def inputs():
    rng = np.random.default_rng(26)
    return rng.standard_normal((N, 16)), rng.standard_normal((N_TEST, 16)), rng.standard_normal((N, 1))


def finite_width(out, X, X_test, rng_residual):
    """Finite width (a tiny net, width 8, 2 outputs, N = 6): every method, keys ``finite|<m>|<ρ>|<which>``."""
    net = nn.mlp(depth=3, width=8, in_dim=16, out_dim=2)
    params = net.init(0)
    residual = rng_residual.standard_normal((X.shape[0], 2))
    out["finite_residual"] = residual
    for m in methods.registered():
        for rho in DAMPINGS:
            kw = dict(m.example_options)
            if m.random:
                kw.update(samples=3, seed=0)
            if m.needs_residual:
                kw["residual"] = residual
            try:
                train, test = nn.preconditioned_kernel(net, X, m.name, params=params, damping=rho, X_test=X_test, **kw)
            except ValueError as e:
                print(f"finite {m.name} rho={rho}: {e}")
                continue
            out[f"finite|{key(m.name, '', rho, 'train')}"] = np.asarray(train)
            out[f"finite|{key(m.name, '', rho, 'test')}"] = np.asarray(test)


def main():
    assert os.path.abspath(nn.__file__).startswith("/tmp"), f"run with the original package on PYTHONPATH, not {nn.__file__}"
    net = nn.mlp(depth=3, width=512, in_dim=16, out_dim=1)
    X, X_test, residual = inputs()
    out = {"X": X, "X_test": X_test, "residual": residual}
    for m in methods.registered():
        if m.finite_width_only:
            continue
        for (tag, options), rho in ((v, r) for v in variants(m) for r in DAMPINGS):
            kw = dict(options)
            if m.needs_residual:
                kw["residual"] = residual
            try:
                train, test = nn.preconditioned_kernel(net, X, m.name, damping=rho, X_test=X_test, **kw)
            except ValueError as e:  # recorded: the method has no kernel here (e.g. unit_wise, rank-17 input Gram)
                print(f"{m.name} rho={rho}: {e}")
                continue
            out[key(m.name, tag, rho, "train")] = np.asarray(train)
            out[key(m.name, tag, rho, "test")] = np.asarray(test)
            print(f"{key(m.name, tag, rho, 'train')}: {np.asarray(train).shape}")
    finite_width(out, X[:N_FINITE], X_test[:3], rng_residual=np.random.default_rng(27))
    np.savez_compressed(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels_aabfb9f.npz"), **out)


if __name__ == "__main__":
    main()
