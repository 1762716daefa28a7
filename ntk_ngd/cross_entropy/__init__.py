"""Cross-entropy (softmax) natural-gradient descent in function space (THEORY.md "Cross-entropy NGD
in function space").

    softmax.py    p, Λ_n, g_n, loss, accuracy and the whitening R_n (R_nᵀR_n = Λ_n), ũ_n
    kernels.py    Gram forms of the six supported methods on whitened layer kernels
    dynamics.py   logit dynamics f_{t+1} = f_t − η Θ_G(f_t) g(f_t) with a fixed kernel (lax.scan)
    training.py   real parameter-space training with the softmax-Fisher preconditioners
    dense.py      explicit P×P reference (jax.jacrev / jax.hessian), small networks only
"""
from . import dense, softmax
from .dynamics import CESimulationResult, simulate
from .kernels import KERNEL_METHODS, METHODS, LogitKernel, check_method, logit_kernels
from .softmax import accuracy, check_labels, fisher_blocks, logit_gradient, loss, probabilities, whitening
from .training import CETrainResult, parameter_update, train

__all__ = [
    "CESimulationResult", "CETrainResult", "KERNEL_METHODS", "LogitKernel", "METHODS", "accuracy", "check_labels", "check_method",
    "dense", "fisher_blocks", "logit_gradient", "logit_kernels", "loss", "parameter_update", "probabilities",
    "simulate", "softmax", "train", "whitening",
]
