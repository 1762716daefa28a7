"""Per-layer kernels of an MLP: forward Grams, backward Grams and NTK blocks (THEORY.md,
"Layer-wise kernels").

For Dense layer l with scaled input h̃_{l−1} and backward signal δ_l = ∂f/∂z_l:

    K^H_l(x, x')                 = h̃_{l−1}(x) · h̃_{l−1}(x')                      (forward Gram)
    K^Δ_l((x, c), (x', c'))      = δ_{l,c}(x) · δ_{l,c'}(x')                       (backward Gram)
    Θ_l((x, c), (x', c'))        = K^H_l(x, x') · K^Δ_l((x, c), (x', c'))         (NTK block)

and Θ = Σ_l Θ_l is the empirical NTK. Outputs are flattened row-major: index n·C + c.

*Finite width* (``params`` given): one forward pass stores h̃_{l−1}; one reverse pass per
output c (vectorised with ``vmap``) gives δ_{l,c}; Grams are contractions over the width.
Nothing of size N·P is formed: memory is O(L·N·(M·C)) for the features plus O(L·(N·C)²).

*Infinite width* (``params=None``): neural-tangents' per-layer ``kernel_fn``s. K^H_l is the
NNGP kernel of z_l; the derivative kernel Σ̇_l of each activation comes from NT by feeding it
a kernel with ntk = 1 (NT's NTK recursion multiplies the incoming ntk by Σ̇); then
K^Δ_l = σ_w² Σ̇_l ⊙ K^Δ_{l+1} with K^Δ_L = 1, and Θ_l = K^H_l ⊙ K^Δ_l (= Σ_{l−1} ⊙ Π_{k≥l} Σ̇_k
up to the σ_w² factors). Their sum equals NT's full NTK (checked in tests; that alone would
prove little, so each block is also checked against wide finite-width averages). One pass:
O(L) layer evaluations. These kernels are output-diagonal (Θ ⊗ I_C), so they are stored N×N
with ``output_diagonal=True``.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate, backends, linalg
from .networks import Network


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class LayerKernels:
    """Per-layer kernels between inputs X (N rows) and X2 (N2 rows).

    fwd: (L, N, N2) forward Grams K^H_l.
    bwd: (L, N·c, N2·c) backward Grams K^Δ_l, with c = C (finite width, or whitened: k rows per
         sample) or c = 1 when ``output_diagonal`` (infinite width: every kernel is that N×N
         matrix ⊗ I_C).
    ntk: (L, N·c, N2·c) NTK blocks Θ_l = (K^H_l ⊗ 1_{c×c}) ⊙ K^Δ_l.

    Finite width also carries the per-unit features (``inputs``: scaled layer inputs h̃_{l−1}
    (N, d_l); ``deltas``: backward signals δ_l (N, c, M_l); ``inputs2``/``deltas2`` for X2), which
    the parameter-space updates and the methods that split a layer below the Gram level (unit_wise,
    diag) need. A pytree: arrays are leaves, ``out_dim``/``output_diagonal`` static.
    """

    fwd: jax.Array
    bwd: jax.Array
    ntk: jax.Array
    out_dim: int
    output_diagonal: bool
    deltas: tuple | None = dataclasses.field(default=None, repr=False)
    deltas2: tuple | None = dataclasses.field(default=None, repr=False)
    inputs: tuple | None = dataclasses.field(default=None, repr=False)
    inputs2: tuple | None = dataclasses.field(default=None, repr=False)
    #: loss-whitened (cross-entropy: k = C − 1 rows per sample)
    whitened: bool = False
    #: Grams of a network at given parameters (tiled ones carry no per-unit features), not the infinite-width limit
    finite: bool = False

    @property
    def rows_label(self) -> str:
        """How the row count reads in messages: "N", "N*C" or "N*(C-1)" (whitened)."""
        if self.ntk.shape[1] == self.fwd.shape[1]:
            return "N"
        return "N*(C-1)" if self.whitened else "N*C"

    @property
    def depth(self) -> int:
        return self.fwd.shape[0]

    @property
    def n_outputs_per_sample(self) -> int:
        """c: rows per sample of bwd/ntk (C, or k when whitened; 1 when output-diagonal)."""
        return 1 if self.output_diagonal else self.out_dim

    @property
    def total_ntk(self) -> jax.Array:
        """Θ = Σ_l Θ_l."""
        return jnp.sum(self.ntk, axis=0)

    def full_output_ntk(self) -> jax.Array:
        """Θ on the flattened (n, c) index: an output-diagonal kernel written as Θ ⊗ I_C."""
        theta = self.total_ntk
        return linalg.kron_identity(theta, self.out_dim) if self.output_diagonal else theta

    @classmethod
    def from_features(cls, inputs, deltas, inputs2=None, deltas2=None) -> "LayerKernels":
        """Finite-width kernels from features: inputs (N, d_l), deltas (N, c, M_l) per layer; the second
        set defaults to the first (X2 = X)."""
        inputs2 = inputs if inputs2 is None else inputs2
        deltas2 = deltas if deltas2 is None else deltas2
        fwd = jnp.stack([a @ b.T for a, b in zip(inputs, inputs2)])
        c = deltas[0].shape[1]
        bwd = jnp.stack([d1.reshape(-1, d1.shape[-1]) @ d2.reshape(-1, d2.shape[-1]).T
                         for d1, d2 in zip(deltas, deltas2)])
        return cls(fwd, bwd, linalg.expand_outputs(fwd, c) * bwd, c, False, tuple(deltas), tuple(deltas2),
                   tuple(inputs), tuple(inputs2), finite=True)

    def whiten(self, left, right) -> "LayerKernels":
        """The kernels of the whitened Jacobian: K^Δ → (I ⊗ left_n) K^Δ (I ⊗ right_m)ᵀ and δ → left/right·δ
        (:mod:`ntk_ngd.losses`); ``left`` (N, k, C), ``right`` (N2, k, C). Returns full (not
        output-diagonal) kernels with k rows per sample."""
        L, n1, n2 = self.fwd.shape
        k = right.shape[1]
        if self.output_diagonal:  # K^Δ ⊗ I_C
            b = jnp.einsum("nkc,lnm,mjc->lnkmj", left, self.bwd, right)
        else:
            c = self.out_dim
            b = jnp.einsum("nkc,lncmd,mjd->lnkmj", left, self.bwd.reshape(L, n1, c, n2, c), right)
        b = b.reshape(L, n1 * k, n2 * k)

        def mix(rows, ds):
            return None if ds is None else tuple(jnp.einsum("nkc,ncm->nkm", rows, d) for d in ds)

        return LayerKernels(self.fwd, b, linalg.expand_outputs(self.fwd, k) * b, k, False,
                            mix(left, self.deltas), mix(right, self.deltas2), self.inputs, self.inputs2, True,
                            self.finite)

    def tree_flatten(self):
        return ((self.fwd, self.bwd, self.ntk, self.deltas, self.deltas2, self.inputs, self.inputs2),
                (self.out_dim, self.output_diagonal, self.whitened, self.finite))

    @classmethod
    def tree_unflatten(cls, aux, children):
        fwd, bwd, ntk, deltas, deltas2, inputs, inputs2 = children
        return cls(fwd, bwd, ntk, *aux[:2], deltas, deltas2, inputs, inputs2, *aux[2:])


# ---------------------------------------------------------------------------------------------
# finite width: the Gram form
# ---------------------------------------------------------------------------------------------
def layer_features(net: Network, params, X, with_outputs: bool = False):
    """Scaled layer inputs h̃_{l−1} (N, d_l) and backward signals δ_l (N, C, M_l), per layer (and the
    outputs f(X) (N, C) of the same forward pass with ``with_outputs``).

    δ_{l,c}(x_n) = ∂f_c(x_n)/∂z_l(x_n): one vjp of Σ_n f_c(x_n) w.r.t. zero "taps" added to
    every pre-activation, vmapped over the C outputs (samples do not interact in an MLP).
    """
    X = jnp.asarray(X)
    n = X.shape[0]
    taps = [jnp.zeros((n, m), X.dtype) for m in net.fan_out]

    def outputs(t):
        return net.forward_with_taps(params, X, t)

    f, vjp_fn, inputs = jax.vjp(outputs, taps, has_aux=True)
    eye = jnp.eye(net.out_dim, dtype=f.dtype)
    (deltas,) = jax.vmap(lambda e: vjp_fn(jnp.broadcast_to(e, f.shape)))(eye)  # each (C, N, M_l)
    deltas = [jnp.moveaxis(d, 0, 1) for d in deltas]
    return (inputs, deltas, f) if with_outputs else (inputs, deltas)


@functools.partial(jax.jit, static_argnums=0)
def _finite_kernels(net, params, X, X2):
    return LayerKernels.from_features(*layer_features(net, params, X), *layer_features(net, params, X2))


@functools.partial(jax.jit, static_argnums=0)
def _finite_kernels_symmetric(net, params, X):
    """X2 = X: one forward and C reverse passes instead of two of each."""
    return LayerKernels.from_features(*layer_features(net, params, X))


def _assemble(fwd, bwd, out_dim: int, output_diagonal: bool) -> LayerKernels:
    """Kernels without per-unit features: the infinite-width limit (output-diagonal) or tiled finite-width Grams."""
    c = 1 if output_diagonal else out_dim
    return LayerKernels(fwd, bwd, linalg.expand_outputs(fwd, c) * bwd, out_dim, output_diagonal,
                        finite=not output_diagonal)


# ---------------------------------------------------------------------------------------------
# infinite width: neural-tangents sub-networks
# ---------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnums=0)
def _infinite_grams(net: Network, X, X2) -> tuple[jax.Array, jax.Array]:
    """One pass through NT's per-layer kernel functions.

    After Dense l the kernel's nngp is K^H_l. The activation above it, applied to that kernel
    with ntk = 1, returns its derivative kernel Σ̇_l = E[φ'(z)φ'(z')] (NT multiplies the
    incoming ntk by Σ̇), and Dense l+1 multiplies the ntk by σ_w², so backwards
    K^Δ_L = 1 and K^Δ_l = Σ̇_l ⊙ σ_w² K^Δ_{l+1}.
    """
    layers = net.stax_layers
    fwd, derivative = [], []
    k = layers[0][2](X, X2)
    for l in range(net.depth):
        fwd.append(k.nngp)
        if l == net.depth - 1:
            break
        act = layers[2 * l + 1][2]
        derivative.append(act(k.replace(ntk=jnp.ones_like(k.nngp)), get="ntk"))
        k = layers[2 * l + 2][2](act(k))
    bwd = [jnp.ones_like(fwd[-1])]
    for l in reversed(range(net.depth - 1)):
        bwd.insert(0, derivative[l] * net.w_std**2 * bwd[0])
    return jnp.stack(fwd), jnp.stack(bwd)


def infinite_grams(net: Network, X, X2):
    """(fwd, bwd) per-layer infinite-width Grams from the network's backend: neural-tangents' layer kernel
    functions, or the pure-jax recursions of :mod:`ntk_ngd.backends.recursions` (same semantics; equal to
    ≤ 1e-15 off NT's ReLU-diagonal rounding, tests/test_backends.py)."""
    if net.uses_neural_tangents:
        return _infinite_grams(net, X, X2)
    return backends.recursions.infinite_grams(net, X, X2)


def layer_kernels(net: Network, X, X2=None, params=None, tile: int | None = None) -> LayerKernels:
    """Per-layer forward Grams, backward Grams and NTK blocks between X and X2 (default X).

    ``params=None`` gives the infinite-width kernels from neural-tangents (output-diagonal,
    N×N2); otherwise the finite-width Gram form at ``params`` (NC×N2C). See the module
    docstring for the math (THEORY.md "Layer-wise kernels").

    ``tile``: compute the kernels in blocks of ``tile`` × ``tile`` samples (every entry depends
    on its pair of inputs only, so tiling is exact), spread round-robin over all jax devices,
    and assembled in host memory. Peak device memory is then O(L·tile²·C² + tile·width·C)
    instead of O(L·N²·C² + N·width·C); the per-unit backward signals (``deltas``, needed by
    unit-wise) are not kept.
    """
    X = net.check_inputs(X, "X")
    symmetric = X2 is None
    X2 = X if X2 is None else net.check_inputs(X2, "X2")
    if params is not None:
        check_params(net, params)
    if tile is not None:
        tile = _validate.positive_int("tile", tile)
        fwd, bwd = _tiled_grams(net, params, X, X2, tile, symmetric)
        return _assemble(fwd, bwd, net.out_dim, output_diagonal=params is None)
    X, X2 = jnp.asarray(X), jnp.asarray(X2)
    if params is None:
        fwd, bwd = infinite_grams(net, X, X2)
        return _assemble(fwd, bwd, net.out_dim, output_diagonal=True)
    return _finite_kernels_symmetric(net, params, X) if symmetric else _finite_kernels(net, params, X, X2)


def _tiled_grams(net: Network, params, X, X2, tile: int, symmetric: bool):
    """Blocks (i, j) of the per-layer Grams, each computed on one device; j ≥ i only when X2 is X.

    Blocks are dealt round-robin to processes (``jax.process_count() > 1`` after
    ``jax.distributed.initialize``) and, within a process, to its local devices; each block has
    exactly one owner, so the global Grams are the sum over processes of the owners' blocks
    (docs/scaling.md). With one process this is the single-host tiling."""
    devices = jax.local_devices()
    n_proc, rank = jax.process_count(), jax.process_index()
    c = 1 if params is None else net.out_dim
    n1, n2 = X.shape[0], X2.shape[0]
    alloc = np.zeros if n_proc > 1 else np.empty  # unowned blocks must add 0 in the sum over processes
    fwd = alloc((net.depth, n1, n2))
    bwd = alloc((net.depth, n1 * c, n2 * c))
    starts1, starts2 = range(0, n1, tile), range(0, n2, tile)
    pairs = [(i, j) for i in starts1 for j in starts2 if not (symmetric and j < i)][rank::n_proc]
    placed_params = {}
    pending = []
    for k, (i, j) in enumerate(pairs):
        device = devices[k % len(devices)]
        a = jax.device_put(jnp.asarray(X[i : i + tile]), device)
        b = jax.device_put(jnp.asarray(X2[j : j + tile]), device)
        if params is None:
            out = infinite_grams(net, a, b)
        else:
            if device not in placed_params:
                placed_params[device] = jax.device_put(params, device)
            block = _finite_kernels(net, placed_params[device], a, b)
            out = (block.fwd, block.bwd)
        pending.append((i, j, out))
        if len(pending) >= 2 * len(devices):  # bounded number of blocks in flight
            _store_blocks(pending, fwd, bwd, c, symmetric)
    _store_blocks(pending, fwd, bwd, c, symmetric)
    if n_proc > 1:
        from jax.experimental import multihost_utils

        fwd = np.asarray(multihost_utils.process_allgather(fwd)).sum(axis=0)
        bwd = np.asarray(multihost_utils.process_allgather(bwd)).sum(axis=0)
    return jnp.asarray(fwd), jnp.asarray(bwd)


def _store_blocks(pending, fwd, bwd, c, symmetric) -> None:
    while pending:
        i, j, (f, b) = pending.pop(0)
        f, b = np.asarray(f), np.asarray(b)
        fwd[:, i : i + f.shape[1], j : j + f.shape[2]] = f
        bwd[:, i * c : i * c + b.shape[1], j * c : j * c + b.shape[2]] = b
        if symmetric and i != j:
            fwd[:, j : j + f.shape[2], i : i + f.shape[1]] = np.swapaxes(f, 1, 2)
            bwd[:, j * c : j * c + b.shape[2], i * c : i * c + b.shape[1]] = np.swapaxes(b, 1, 2)


def check_params(net: Network, params) -> None:
    """params must be ``net.init(seed)`` of this architecture: W shapes and bias presence."""
    try:
        dense = net.dense_params(params)
        shapes = [tuple(W.shape) for W, _ in dense]
        has_bias = [b is not None for _, b in dense]
    except (TypeError, IndexError, ValueError, KeyError, AttributeError):
        raise ValueError("params must be the output of net.init(seed) for this network") from None
    if shapes != [tuple(s) for s in net.layer_shapes]:
        raise ValueError(f"params have layer shapes {shapes} but the network has {list(net.layer_shapes)}")
    if any(h != net.bias for h in has_bias):
        raise ValueError(f"params {'lack' if net.bias else 'have'} biases but the network was built with "
                         f"bias={net.bias}; use net.init(seed)")
