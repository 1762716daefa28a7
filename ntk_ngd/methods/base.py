"""The method interface and the registry: one :class:`Method` declares everything about one Fisher
approximation, and every other part of ntk-ngd derives its list of methods from here.

A method G (THEORY.md "Setup") acts through

    Θ_G(x', X) = J̃(x') (G + ρI)⁻¹ J̃(X)ᵀ / N,        Δθ = −η (G + ρI)⁻¹ J̃ᵀu / N,

with J̃ = RJ the loss-whitened Jacobian and u the whitened residual (:mod:`ntk_ngd.losses`; for MSE
R = I and u = f − Y). A :class:`Method` supplies

* ``kernel(train, test, ctx) -> MethodKernel``: Θ_G on the training points and test×train points,
  from per-layer kernels (:class:`~ntk_ngd.kernels.LayerKernels`; finite width = Gram form,
  ``params=None`` = infinite width);
* ``direction(train, ctx) -> [W̃_l]``: (G + ρI)⁻¹J̃ᵀu/N per layer, in Gram form from the layer
  features carried by finite-width ``train`` kernels (never a P×P matrix);
* ``step(train, test, ctx) -> (Θ_G(X, X)u, Θ_G(x', X)u)``: the function-space step per unit
  learning rate (default: the kernels applied to u; residual-dependent methods give a form that
  stays finite where their kernel does not, e.g. EF at ρ = 0);
* ``predict(lk, ctx) -> Prediction``: theory on the actual data — the isotropy verdict, α and the
  named conditions it rests on, or an explicit "theory silent" answer;
* its options (validated, with defaults), its damping rule (:mod:`ntk_ngd.damping`), whether it
  depends on the residual, its step-size rule, which losses it supports and whether it has an
  infinite-width limit;
* ``factored`` (:class:`~ntk_ngd.factored.FactoredForm`, or None): its parameter-space form (per-layer
  Kronecker factors, THEORY.md "Factored form (parameter space)"), the same direction at the same damping;
* ``metric`` (:class:`~ntk_ngd.methods._metric.Metric`, or None with ``no_metric`` saying why): its
  damped metric M between *any* rows (two-sided kernels J_X M^{±1} J_Yᵀ/N, M_b⁻¹M_midM_b⁻¹, and
  M⁻¹J_Rᵀw in parameter space), which continual learning's projections need (:mod:`ntk_ngd.continual`);
* ``cost(size, options) -> Cost``: its declared complexity, operation counts of one kernel and one update
  (:mod:`._cost`), from which the CLI's time budget estimates a run (:mod:`ntk_ngd.budget`).

ρ = 0 is the limit ρ → 0⁺ throughout. Adding an approximation = one module that calls
:func:`register` + a dense reference in :mod:`ntk_ngd.reference` + its tests.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..damping import Damping

#: Step-size rules a method can declare for lr=None (:func:`ntk_ngd.trajectory.default_lr`).
STEP_RULES = ("1/alpha", "1/lambda_max", "min_residual", "one")


class MethodKernel(NamedTuple):
    """Θ_G on the training points (rows×rows) and on test×train points (or None)."""

    train: jax.Array
    test: jax.Array | None


@dataclasses.dataclass(frozen=True)
class Option:
    """A method option: its name, default, and a check ``check(value, depth) -> normalised value``
    (hashable, so that options can be static arguments of jit)."""

    name: str
    default: Any
    check: Callable[[Any, int], Any]
    doc: str = ""


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Context:
    """Everything a method needs besides the kernels.

    ``n`` N; ``damping`` (:class:`~ntk_ngd.damping.Damping`); ``options`` the method's normalised
    options as sorted (name, value) pairs; ``rcond`` the rank cut-off (None: size·eps);
    ``residual`` the whitened residual u flattened (N·k,) (residual-dependent methods and
    ``direction``); ``weights`` iEF's per-sample s_n (N,); ``scores`` the sampled-Fisher whitened
    model scores (N, k, samples); ``net`` the network (its widths and activation: for leading-order
    infinite-width kernels that grow with width). Arrays are pytree leaves (traced under jit), the rest is static.
    """

    n: int
    damping: Damping
    options: tuple = ()
    rcond: float | None = None
    residual: Any = None
    weights: Any = None
    scores: Any = None
    net: Any = None

    def option(self, name: str):
        for key, value in self.options:
            if key == name:
                return value
        raise KeyError(f"option {name!r} was not normalised for this method")

    def replace(self, **changes) -> "Context":
        return dataclasses.replace(self, **changes)

    def tree_flatten(self):
        return (self.damping, self.residual, self.weights, self.scores), (self.n, self.options, self.rcond,
                                                                           self.net)

    @classmethod
    def tree_unflatten(cls, aux, children):
        n, options, rcond, net = aux
        damping, residual, weights, scores = children
        return cls(n, damping, options, rcond, residual, weights, scores, net)


@dataclasses.dataclass(frozen=True)
class Condition:
    """One condition a prediction rests on, evaluated on the data."""

    name: str
    holds: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Theory for one method on one data set.

    ``isotropic`` True: Θ_G = α·I predicted. False with failed ``conditions``: a named condition
    breaks it. ``silent`` True: the theory says nothing about isotropy here (``note`` says why) —
    never a missing branch. ``diagonal``: where the theory gives Θ_G's diagonal in closed form (kpsvd,
    ekfac, diag); ``deviation``: the deviation that diagonal implies when the theory also says Θ_G
    is diagonal (kpsvd).
    """

    method: str
    alpha: float | None
    isotropic: bool
    conditions: tuple[Condition, ...] = ()
    note: str = ""
    silent: bool = False
    diagonal: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    deviation: float | None = None

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(f"{self.method}: {c.detail}" for c in self.conditions if not c.holds)

    @property
    def status(self) -> str:
        """"isotropic", "not isotropic" (a named condition fails or theory says so) or "silent"."""
        if self.silent:
            return "silent"
        return "isotropic" if self.isotropic else "not isotropic"

    def summary(self) -> str:
        if self.failed:
            return self.failed[0] + "; not isotropic"
        if self.isotropic:
            return f"{self.method}: isotropic, alpha = {self.alpha:g}"
        return f"{self.method}: {self.note}" if self.note else f"{self.method}: not isotropic"


def verdict(method: str, alpha, conditions, note: str = "") -> Prediction:
    """Isotropic with ``alpha`` iff every condition holds."""
    conditions = tuple(conditions)
    return Prediction(method, alpha, all(c.holds for c in conditions), conditions, note)


def diagonal_prediction(pred: Prediction, diagonal) -> Prediction:
    """``pred`` with the theory's statement that Θ_G is the diagonal matrix ``diagonal`` on the training points
    (rows in the whitened basis), and the deviation from isotropy that diagonal implies."""
    d = np.asarray(diagonal, dtype=float)
    mean = float(np.mean(d))
    deviation = float(np.linalg.norm(d - mean) / (abs(mean) * np.sqrt(d.size)))
    return dataclasses.replace(pred, diagonal=d, deviation=deviation)


def silent(method: str, note: str, conditions=()) -> Prediction:
    """The theory makes no isotropy statement here (``note`` says why)."""
    return Prediction(method, None, False, tuple(conditions), note, silent=True)


@dataclasses.dataclass(frozen=True)
class Method:
    """A Fisher approximation: see the module docstring for every field's contract."""

    name: str
    summary: str
    kernel: Callable[..., MethodKernel]
    direction: Callable[..., list]
    predict: Callable[..., Prediction]
    damping_rule: str
    options: tuple[Option, ...] = ()
    needs_residual: bool = False
    #: random methods (sf): ``draw(loss, f, options: dict, step) -> scores (N, k, samples)``, the model
    #: samples of step ``step`` (jax.random, key from the method's seed option folded with the step)
    draw: Callable[..., Any] | None = None
    step_rule: str = "1/alpha"
    #: None: has an infinite-width limit; otherwise the reason it has none
    finite_width_only: str | None = None
    #: (loss name, one-line reason) for each loss the method does not support
    unsupported_losses: tuple[tuple[str, str], ...] = ()
    #: function-space step; None: the kernels applied to the residual (:meth:`function_step`)
    step: Callable[..., tuple] | None = None
    #: the theory needs every layer's own block at full rank N·k (layer-structured G): a layer with fewer
    #: parameters than N·k is warned about at ρ = 0
    layerwise: bool = False
    #: options that make the method runnable where the defaults do not (pattern: a bandwidth); used by
    #: ``--method all`` in the CLI and by the registry-wide tests
    example_options: tuple = ()
    #: checks that involve several options at once: ``check_options(dict of normalised options, depth)``
    check_options: Callable[[dict, int], None] | None = None
    #: two-sided kernels of the damped metric (:mod:`._metric`); None: the method has none (``no_metric`` says why)
    metric: Any = None
    no_metric: str = ""
    #: declared complexity ``cost(size, options) -> Cost``: operation counts of one kernel and one parameter update
    #: at a :class:`._cost.Size` (N, rows per sample, layer widths), read off the method's Gram-form code;
    #: :mod:`ntk_ngd.budget` turns them into seconds. None: the features plus one N·k solve (:meth:`estimate`)
    cost: Callable[..., Any] | None = None
    #: the parameter-space form (:class:`ntk_ngd.factored.FactoredForm`), or None: Gram form only
    factored: Any = None

    def __post_init__(self):
        if self.step_rule not in STEP_RULES:
            raise ValueError(f"method {self.name!r}: unknown step_rule {self.step_rule!r}")

    @property
    def random(self) -> bool:
        return self.draw is not None

    @property
    def forms(self) -> tuple[str, ...]:
        """The forms of ``direction`` this method has: ("gram",) or ("gram", "factored")."""
        return ("gram", "factored") if self.factored is not None else ("gram",)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def normalise_options(self, options: dict, depth: int) -> tuple:
        """Validated options with defaults filled in, as sorted (name, value) pairs (hashable)."""
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise ValueError(f"method {self.name!r} takes no option(s) {unknown}; its options: "
                             f"{list(self.option_names) or 'none'}")
        out = {o.name: o.check(options.get(o.name, o.default), depth) for o in self.options}
        if self.check_options is not None:
            self.check_options(out, depth)
        return tuple(sorted(out.items()))

    def function_step(self, train, test, ctx: Context):
        """(Θ_G(X, X)u, Θ_G(x', X)u or None): the step per unit learning rate, Δf = −η·step."""
        if self.step is not None:
            return self.step(train, test, ctx)
        k = self.kernel(train, test, ctx)
        u = jnp.reshape(ctx.residual, (k.train.shape[1], -1))  # output-diagonal kernels act on the C columns
        return (k.train @ u).reshape(-1), None if k.test is None else (k.test @ u).reshape(-1)

    def estimate(self, size, options: dict | None = None):
        """The declared :class:`._cost.Cost` at ``size`` with the method's (normalised) ``options``."""
        from . import _cost

        fn = self.cost if self.cost is not None else _cost.gram_solve_cost(0, 1)
        return fn(size, dict(options or {}))

    def require_metric(self, what: str):
        """The method's :class:`~ntk_ngd.methods._metric.Metric`, or a one-line ValueError naming ``what`` needs it."""
        if self.metric is None:
            why = f" ({self.no_metric})" if self.no_metric else ""
            raise ValueError(f"method {self.name!r} has no two-sided metric kernel{why}; {what} needs one")
        return self.metric

    def check_loss(self, loss_name: str) -> None:
        for name, reason in self.unsupported_losses:
            if name == loss_name:
                raise ValueError(f"method {self.name!r} does not support loss {loss_name!r}: {reason}")


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def get(name) -> Method:
    if isinstance(name, Method):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def registered() -> tuple[Method, ...]:
    return tuple(_REGISTRY.values())


def test_kernel_or_none(test, fn):
    """Apply ``fn`` to the test kernels when there are any."""
    return None if test is None else fn(test)
