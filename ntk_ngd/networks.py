"""Fully connected networks in the NTK parameterization, on neural-tangents' stax or pure jax.

A depth-L network has L Dense layers (THEORY.md "Setup"):

    z_1 = (σ_w/√D) x W_1 + σ_b b_1,   h_l = φ(z_l),   z_{l+1} = (σ_w/√M_l) h_l W_{l+1} + σ_b b_{l+1},

f(x) = z_L, with every entry of W_l and b_l drawn from N(0, 1). The parameters θ are those
standard-normal entries, so the Jacobian of layer l factorises as J_l = h̃_{l−1} ⊗ δ_l with the
*scaled* layer input h̃_{l−1} = [σ_w h_{l−1}/√M_{l−1}, σ_b] (the bias column only with a bias)
and the backward signal δ_l = ∂f/∂z_l. The scale factors therefore live in the forward Gram
K^H_l = h̃ h̃ᵀ, which is exactly the NNGP kernel of z_l in the infinite-width limit.

Backends (:mod:`ntk_ngd.backends`): neural-tangents' stax where it imports (the default and the
reference), else a pure-jax MLP with the same parameter layout, the same random draws and the same
activations (bit-identical outputs), and pure-jax infinite-width recursions. ``NTK_NGD_BACKEND``
forces one; ``net.backend`` records the choice made when the network was built.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate, backends

#: Activations with closed-form infinite-width kernels (both backends).
ACTIVATIONS = tuple(backends.activations.ACTIVATIONS)


@functools.lru_cache(maxsize=None)
def _stax_activation(name: str):
    from neural_tangents import stax

    return {"relu": stax.Relu, "erf": stax.Erf, "linear": stax.Identity, "gelu": stax.Gelu,
            "leaky_relu": lambda: stax.LeakyRelu(0.1), "abs": stax.Abs, "sin": stax.Sin}[name]()


@dataclasses.dataclass(frozen=True)
class Network:
    """An MLP: its architecture, backend, infinite-width ``kernel_fn`` and layer shapes.

    ``params`` are neural-tangents' layout (a list with one ``(W, b)`` pair per Dense layer and
    ``()`` per activation); ``b`` is ``None`` without bias. Hashable by value (a static jit argument).
    """

    in_dim: int
    out_dim: int
    hidden: tuple[int, ...]
    activation: str
    bias: bool
    w_std: float
    b_std: float
    #: "neural_tangents" or "jax" (:func:`ntk_ngd.backends.active` when the network was built)
    backend: str = "neural_tangents"

    def __repr__(self) -> str:
        widths = ",".join(str(m) for m in self.hidden) or "-"
        bias = f"b_std={self.b_std:g}" if self.bias else "no bias"
        return (f"Network(depth={self.depth}, in_dim={self.in_dim}, widths=({widths}), out_dim={self.out_dim}, "
                f"activation={self.activation!r}, w_std={self.w_std:g}, {bias}, params={self.num_params}, "
                f"backend={self.backend})")

    @property
    def depth(self) -> int:
        """Number of Dense (weight) layers L."""
        return len(self.hidden) + 1

    @property
    def fan_in(self) -> tuple[int, ...]:
        """Input width of each Dense layer: (D, M_1, ..., M_{L-1})."""
        return (self.in_dim, *self.hidden)

    @property
    def fan_out(self) -> tuple[int, ...]:
        """Output width of each Dense layer: (M_1, ..., M_{L-1}, C)."""
        return (*self.hidden, self.out_dim)

    @property
    def layer_shapes(self) -> tuple[tuple[int, int], ...]:
        """(fan_in, fan_out) of each Dense layer's weight matrix W_l."""
        return tuple(zip(self.fan_in, self.fan_out))

    @property
    def layer_param_counts(self) -> tuple[int, ...]:
        """Parameters of each Dense layer, bias included: (fan_in + bias)·fan_out."""
        return tuple((i + int(self.bias)) * o for i, o in self.layer_shapes)

    @property
    def num_params(self) -> int:
        return sum(self.layer_param_counts)

    @property
    def bias_std(self) -> float | None:
        return self.b_std if self.bias else None

    # --- backends -----------------------------------------------------------------------------
    @property
    def uses_neural_tangents(self) -> bool:
        return self.backend == "neural_tangents"

    @property
    def stax_layers(self) -> tuple:
        """neural-tangents' stax layer triples (Dense, activation, …, Dense); NT backend only."""
        if not self.uses_neural_tangents:
            raise ValueError(f"this network uses the {self.backend} backend: it has no neural-tangents layers")
        return _stax_layers(self)

    def _serial(self, start: int = 0, stop: int | None = None):
        from neural_tangents import stax

        return stax.serial(*self.stax_layers[start:stop])

    @property
    def kernel_fn(self):
        """The infinite-width kernel function ``kernel_fn(X, X2=None, get="ntk"|"nngp"|tuple)`` of the whole
        network (neural-tangents', or the pure-jax recursions of :mod:`ntk_ngd.backends.recursions`)."""
        if self.uses_neural_tangents:
            return self._serial()[2]
        return functools.partial(backends.recursions.kernel_fn, self)

    def split_at_dense(self, layer: int):
        """(bottom, top) stax triples: layers up to and including Dense ``layer`` (0-based), and
        the rest (activation, Dense layer+1, ..., Dense L). ``top`` is ``None`` for the readout. NT only."""
        cut = 2 * layer + 1
        top = self._serial(cut) if cut < len(self.stax_layers) else None
        return self._serial(0, cut), top

    def init(self, seed: int = 0):
        """Draw finite-width parameters (N(0, 1) entries) with a jax PRNG key from ``seed`` (both backends
        draw the same numbers)."""
        seed = _validate.positive_int("seed", seed, minimum=0)
        if self.uses_neural_tangents:
            _, params = self._serial()[0](jax.random.PRNGKey(seed), (-1, self.in_dim))
            return params
        return backends.mlp.init(jax.random.PRNGKey(seed), self.in_dim, self.hidden, self.out_dim, self.bias)

    def apply(self, params, X):
        """Network outputs f(X), shape (N, C).

        A JAX function of (params, X): works under ``jax.jit``, ``jax.vmap``, ``jax.grad`` and with
        ``neural_tangents.empirical_ntk_fn(net.apply, ...)``; concrete inputs are validated, tracers
        only shape-checked. A single input of shape (D,) gives outputs of shape (C,)."""
        if jnp.ndim(X) == 1:
            return self.apply(params, jnp.reshape(X, (1, -1)))[0]
        X = jnp.asarray(self.check_inputs(X))
        if self.uses_neural_tangents:
            return self._serial()[1](params, X)
        return backends.mlp.apply(params, X, self.activation, self.w_std, self.b_std)

    def activate(self, z):
        """φ(z), the hidden activation, elementwise (the same arithmetic as neural-tangents' layer)."""
        return backends.activations.get(self.activation)(z)

    def dense_params(self, params) -> list[tuple]:
        """The L ``(W, b)`` pairs of the Dense layers (activation entries dropped)."""
        return [params[2 * l] for l in range(self.depth)]

    def check_inputs(self, X, name: str = "X") -> np.ndarray:
        return _validate.finite_matrix(name, X, cols=self.in_dim)

    # --- forward pass with taps on the pre-activations ---------------------------------------
    def forward_with_taps(self, params, X, taps=None):
        """f(X) and the scaled layer inputs h̃_{l−1}, with ``taps[l]`` added to z_l.

        ``∂f/∂taps[l]`` is the backward signal δ_l (THEORY.md "Layer-wise kernels"). Returns
        ``(f, inputs)`` with ``inputs[l]`` of shape (N, fan_in_l + bias): [σ_w h/√fan_in, σ_b].
        """
        h = X
        inputs = []
        for l in range(self.depth):
            W, b = params[2 * l]
            scaled = float(self.w_std / np.sqrt(h.shape[-1])) * h  # a Python float: float32 inputs stay float32
            z = scaled @ W
            if b is not None:
                z = z + self.b_std * b
                scaled = jnp.concatenate([scaled, jnp.full((h.shape[0], 1), self.b_std, h.dtype)], -1)
            inputs.append(scaled)
            if taps is not None:
                z = z + taps[l]
            h = self.activate(z) if l < self.depth - 1 else z
        return h, inputs


def mlp(
    depth: int = 3,
    width: int | Sequence[int] = 512,
    in_dim: int = 8,
    out_dim: int = 1,
    activation: str = "relu",
    bias: bool = True,
    w_std: float = 1.0,
    b_std: float = 0.1,
) -> Network:
    """A depth-``depth`` MLP in the NTK parameterization.

    ``width`` is one hidden width M for every hidden layer or a list of ``depth − 1`` widths.
    ``activation`` is one of :data:`ACTIVATIONS`. ``w_std``/``b_std`` are σ_w and σ_b.
    """
    depth = _validate.positive_int("depth", depth)
    in_dim = _validate.positive_int("in_dim", in_dim)
    out_dim = _validate.positive_int("out_dim", out_dim)
    _validate.choice("activation", activation, ACTIVATIONS)
    if isinstance(width, (list, tuple, np.ndarray)):
        hidden = tuple(_validate.positive_int("width", w) for w in width)
        if len(hidden) != depth - 1:
            raise ValueError(f"width lists {len(hidden)} hidden widths but depth={depth} needs {depth - 1}")
    else:
        hidden = (_validate.positive_int("width", width),) * (depth - 1)
    w_std = _validate.nonnegative("w_std", w_std)
    b_std = _validate.nonnegative("b_std", b_std)
    if w_std == 0:
        raise ValueError("w_std must be > 0")
    return Network(in_dim, out_dim, hidden, activation, bool(bias), w_std, b_std, backends.active().name)


@functools.lru_cache(maxsize=None)
def _stax_layers(net: Network) -> tuple:
    """neural-tangents' stax layers of ``net`` (built once per architecture)."""
    from neural_tangents import stax

    layers = []
    for l, fan_out in enumerate(net.fan_out):
        layers.append(stax.Dense(fan_out, W_std=net.w_std, b_std=net.b_std if net.bias else None,
                                 parameterization="ntk"))
        if l < net.depth - 1:
            layers.append(_stax_activation(net.activation))
    return tuple(layers)
