"""ntk_ngd.networks: layer bookkeeping, forward pass (vs an independent numpy forward pass in
the NTK parameterization) and input validation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import rel_err, requires_nt
from scipy.special import erf

from ntk_ngd import kernels, networks

NUMPY_ACT = {"relu": lambda z: np.maximum(z, 0), "erf": erf, "linear": lambda z: z, "abs": np.abs}


def _numpy_forward(net, params, X):
    """f(X) for z_{l} = σ_w/√fan_in · h W + σ_b b (N(0,1) entries), h = φ(z), f = z_L."""
    h = np.asarray(X, np.float64)
    for l, (W, b) in enumerate(net.dense_params(params)):
        z = net.w_std / np.sqrt(h.shape[1]) * h @ np.asarray(W)
        if b is not None:
            z = z + net.b_std * np.asarray(b)
        h = NUMPY_ACT[net.activation](z) if l < net.depth - 1 else z
    return h


@pytest.mark.parametrize("width,bias", [([5, 7, 3], True), ([5, 7, 3], False), ([], True), ([1], False), (4, True)])
def test_layer_shapes_and_param_counts(width, bias):
    depth = len(width) + 1 if isinstance(width, list) else 3
    net = networks.mlp(depth=depth, width=width, in_dim=2, out_dim=3, bias=bias)
    hidden = list(width) if isinstance(width, list) else [width] * (depth - 1)
    dims = [2, *hidden, 3]
    assert net.depth == depth
    assert net.hidden == tuple(hidden)
    assert net.layer_shapes == tuple(zip(dims[:-1], dims[1:]))
    # counted from the actual parameter arrays, not from the formula
    params = net.init(seed=0)
    dense = net.dense_params(params)
    assert len(dense) == depth
    counts = tuple(sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(p)) for p in dense)
    assert net.layer_param_counts == counts
    assert net.num_params == sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(params))
    for (W, b), (fi, fo) in zip(dense, net.layer_shapes):
        assert W.shape == (fi, fo)
        assert (b is None) == (not bias)
        if bias:
            assert b.size == fo  # NT stores b as (1, fan_out)


@pytest.mark.parametrize("activation", ["relu", "erf", "linear", "abs"])
@pytest.mark.parametrize("bias", [True, False])
def test_apply_matches_numpy_forward_and_taps(activation, bias):
    net = networks.mlp(depth=3, width=[6, 4], in_dim=3, out_dim=2, activation=activation, bias=bias,
                       w_std=1.4, b_std=0.3)
    params = net.init(seed=5)
    X = np.random.default_rng(0).standard_normal((7, 3))
    f = np.asarray(net.apply(params, X))
    assert f.shape == (7, 2)
    assert rel_err(f, _numpy_forward(net, params, X)) <= 1e-12
    f_taps, inputs = net.forward_with_taps(params, jnp.asarray(X))
    assert rel_err(f_taps, f) <= 1e-13  # same math, different op order (stax vs ours)
    # the taps add to the pre-activations: a tap on the readout shifts f by exactly the tap
    taps = [jnp.zeros((7, m)) for m in net.fan_out]
    taps[-1] = jnp.full((7, 2), 0.25)
    assert rel_err(net.forward_with_taps(params, jnp.asarray(X), taps)[0] - 0.25, f) <= 1e-12
    # scaled layer inputs: first layer [σ_w x/√D, σ_b]
    first = np.asarray(inputs[0])
    expect = net.w_std * X / np.sqrt(3)
    if bias:
        expect = np.concatenate([expect, np.full((7, 1), net.b_std)], axis=1)
    assert rel_err(first, expect) <= 1e-14
    assert [a.shape[1] for a in inputs] == [fi + int(bias) for fi in net.fan_in]


def test_init_deterministic_and_standard_normal():
    net = networks.mlp(depth=2, width=300, in_dim=200, out_dim=1)
    a, b, c = net.init(seed=1), net.init(seed=1), net.init(seed=2)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0][0], c[0][0])
    W = np.asarray(a[0][0]).ravel()  # 60 000 draws: mean and variance of N(0, 1) to ~5 σ
    assert abs(W.mean()) <= 5 / np.sqrt(W.size)
    assert abs(W.var() - 1) <= 5 * np.sqrt(2 / W.size)


def test_kernel_fn_depth_one_is_linear_kernel():
    """A single Dense layer: NNGP = NTK = σ_w² x·x'/D + σ_b² (closed form)."""
    net = networks.mlp(depth=1, width=[], in_dim=4, out_dim=1, w_std=1.5, b_std=0.2)
    X = np.random.default_rng(1).standard_normal((5, 4))
    ref = 1.5**2 * X @ X.T / 4 + 0.2**2
    assert rel_err(net.kernel_fn(X, X, "nngp"), ref) <= 1e-13
    assert rel_err(net.kernel_fn(X, X, "ntk"), ref) <= 1e-13


# ---------------------------------------------------------------------------------------------
# bad input: one-line ValueError naming the argument
# ---------------------------------------------------------------------------------------------
def _raises_one_line(fn, *must_contain):
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert msg and "\n" not in msg, repr(msg)
    for word in must_contain:
        assert word in msg, f"{word!r} not in {msg!r}"
    return msg


@pytest.fixture(scope="module")
def net_params():
    net = networks.mlp(depth=2, width=4, in_dim=3)
    return net, net.init(0)


def test_wrong_input_dimension(net_params):
    net, params = net_params
    X = np.ones((5, 4))
    _raises_one_line(lambda: net.apply(params, X), "X", "4", "3")
    _raises_one_line(lambda: kernels.layer_kernels(net, X), "X")
    _raises_one_line(lambda: kernels.layer_kernels(net, X, params=params), "X")
    _raises_one_line(lambda: net.apply(params, np.ones((2, 2, 3))), "X")  # 3-D
    # a single input (D,) is one sample (so that jax.vmap over inputs works): outputs (C,)
    assert net.apply(params, np.ones(3)).shape == (net.out_dim,)
    _raises_one_line(lambda: net.apply(params, np.ones(4)), "X", "4", "3")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_inputs(net_params, bad):
    net, params = net_params
    X = np.ones((5, 3))
    X[2, 1] = bad
    _raises_one_line(lambda: net.apply(params, X), "X", "NaN or inf")
    _raises_one_line(lambda: kernels.layer_kernels(net, X, params=params), "X", "NaN or inf")
    _raises_one_line(lambda: kernels.layer_kernels(net, X), "X", "NaN or inf")


@pytest.mark.parametrize("depth", [0, -1, 1.5, "3", True])
def test_bad_depth(depth):
    _raises_one_line(lambda: networks.mlp(depth=depth), "depth")


@pytest.mark.parametrize("width", [0, -3, 2.5, [4, 0], [4, -1]])
def test_bad_width(width):
    _raises_one_line(lambda: networks.mlp(depth=3, width=width), "width")


@pytest.mark.parametrize("width", [[4], [4, 5, 6], []])
def test_width_list_wrong_length(width):
    msg = _raises_one_line(lambda: networks.mlp(depth=3, width=width), "width")
    assert "2" in msg  # says how many are needed


def test_unknown_activation_lists_valid_ones():
    msg = _raises_one_line(lambda: networks.mlp(activation="tanh"), "activation", "tanh")
    for name in networks.ACTIVATIONS:
        assert name in msg


@pytest.mark.parametrize("kw,name", [({"in_dim": 0}, "in_dim"), ({"out_dim": 0}, "out_dim"),
                                     ({"w_std": 0.0}, "w_std"), ({"w_std": -1.0}, "w_std"),
                                     ({"b_std": float("nan")}, "b_std")])
def test_other_bad_arguments(kw, name):
    _raises_one_line(lambda: networks.mlp(**kw), name)


def test_bad_seed(net_params):
    net, _ = net_params
    _raises_one_line(lambda: net.init(seed=-1), "seed")


# ---------------------------------------------------------------------------------------------
# JAX-native: apply, init and the kernel functions compose with jit, vmap, grad and NT
# ---------------------------------------------------------------------------------------------
#: float64 reassociation between eager and compiled code: a few ulps of O(1) outputs (<< 1e-12)
JAX_TOL = 1e-12


@requires_nt
def test_apply_under_jit_vmap_grad_and_nt():
    import jax
    import neural_tangents as nt

    net = networks.mlp(depth=3, width=8, in_dim=3, out_dim=2)
    params = net.init(1)
    X = np.random.default_rng(0).standard_normal((5, 3))
    eager = np.asarray(net.apply(params, X))
    assert np.max(np.abs(np.asarray(jax.jit(net.apply)(params, X)) - eager)) <= JAX_TOL
    per_input = jax.vmap(net.apply, in_axes=(None, 0))(params, X)
    assert np.max(np.abs(np.asarray(per_input) - eager)) <= JAX_TOL
    g = jax.grad(lambda p: float(0) + net.apply(p, X).sum())(params)
    assert len(jax.tree_util.tree_leaves(g)) == len(jax.tree_util.tree_leaves(params))
    # NT's empirical NTK of net.apply == the sum of the package's Gram-form layer blocks
    ntk_nt = nt.empirical_ntk_fn(net.apply, trace_axes=(), vmap_axes=0, implementation=1)(X, None, params)
    ntk_nt = np.asarray(ntk_nt).transpose(0, 2, 1, 3).reshape(10, 10)
    gram = np.asarray(kernels.layer_kernels(net, X, params=params).total_ntk)
    assert np.max(np.abs(ntk_nt - gram)) / np.max(np.abs(gram)) <= 1e-12
    # a wrong network gives a different NTK (the comparison can fail)
    other = networks.mlp(depth=3, width=8, in_dim=3, out_dim=2, w_std=1.1)
    assert np.max(np.abs(np.asarray(kernels.layer_kernels(other, X, params=params).total_ntk) - gram)) > 1e-3


def test_init_and_kernels_under_jit_and_vmap():
    import jax

    import ntk_ngd as nn

    net = networks.mlp(depth=2, width=6, in_dim=3)
    params = net.init(3)
    jitted = jax.jit(net.init)(3)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(jitted)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    batch = jax.vmap(net.init)(np.arange(3))
    assert jax.tree_util.tree_leaves(batch)[0].shape[0] == 3
    X = np.random.default_rng(1).standard_normal((4, 3))
    eager = nn.method_kernels(net, X, "kfac", params=params, damping=1e-3)
    traced = jax.jit(lambda p, x: nn.method_kernels(net, x, "kfac", params=p, damping=1e-3).train)(params, X)
    assert np.max(np.abs(np.asarray(traced) - np.asarray(eager.train))) <= JAX_TOL * np.max(np.abs(eager.train))
    inf = jax.jit(lambda x: kernels.layer_kernels(net, x).ntk)(X)
    assert np.max(np.abs(np.asarray(inf) - np.asarray(kernels.layer_kernels(net, X).ntk))) <= JAX_TOL
    grad = jax.grad(lambda x: kernels.layer_kernels(net, x, params=params).total_ntk.sum())(X)
    assert grad.shape == X.shape and np.all(np.isfinite(grad))


def test_network_repr_is_readable():
    net = networks.mlp(depth=3, width=16, in_dim=4, out_dim=2, activation="erf", bias=False)
    text = repr(net)
    assert text.startswith("Network(") and "erf" in text and "16" in text and "no bias" in text
    assert "function" not in text and "\n" not in text
    assert networks.mlp(depth=3, width=16, in_dim=4) == networks.mlp(depth=3, width=16, in_dim=4)
