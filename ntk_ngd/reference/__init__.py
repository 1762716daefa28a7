"""Parameter-space reference of every Fisher approximation, for both losses (small networks only).

The *independent* check of the Gram-form code (:mod:`ntk_ngd.methods`, :mod:`ntk_ngd.kernels`): explicit
P×P matrices in float64, the Jacobian from ``jax.jacrev``, the layer signals from its own forward pass,
the cross-entropy derivatives from ``jax.grad``/``jax.hessian``; nothing from ``ntk_ngd.kernels``,
``ntk_ngd.methods``, ``ntk_ngd.linalg`` or ``ntk_ngd.losses`` (but the basis V of 1^⊥) is used. For
P <= :data:`MAX_PARAMS`.

Modules: :mod:`.jacobians` (θ ↔ params, J, layer signals) · :mod:`.softmax` (cross-entropy g, Λ, whitening)
· :mod:`.problem` (the whitened problem J̃ = RJ, u) · :mod:`.fits` (Kronecker fits of a layer block) ·
:mod:`.solves` (pseudo-inverse, blockwise solves) · :mod:`.builders` (``BUILDERS``: every method's G) ·
:mod:`.api` (public functions).
"""
from . import api, builders, fits, jacobians, problem, softmax, solves  # noqa: F401
from .api import (fisher_approximation, fisher_efficiency_ratio, function_step, inverse_preconditioner,
                  metric_operator, parameter_update, preconditioned_kernel, residual_of)
from .builders import BUILDERS
from .fits import (KFAC_READOUTS, KRON_METHODS, ekfac_basis, kfac_factors, kpsvd_terms, kron_fit,
                   layer_fisher_blocks, rearrange)
from .jacobians import MAX_PARAMS, flatten_params, jacobian, layer_signals, layer_slices, unflatten_params
from .softmax import logit_derivatives
from .solves import sym_pinv

#: Every method with a reference (the registry's names, ``ief`` included).
METHODS = tuple(BUILDERS)

__all__ = ["BUILDERS", "KFAC_READOUTS", "KRON_METHODS", "MAX_PARAMS", "METHODS", "ekfac_basis", "fisher_approximation",
           "fisher_efficiency_ratio", "flatten_params", "function_step", "inverse_preconditioner", "jacobian",
           "kfac_factors", "kpsvd_terms", "kron_fit", "layer_fisher_blocks", "layer_signals", "layer_slices",
           "logit_derivatives", "metric_operator", "parameter_update", "preconditioned_kernel", "rearrange",
           "residual_of", "sym_pinv", "unflatten_params"]
