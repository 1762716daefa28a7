"""ntk-ngd: natural-gradient descent in wide networks, verified in function space.

Importing the package enables jax float64 (set NTK_NGD_X64=0 before import to opt out).

    import ntk_ngd as nn
    net = nn.mlp(depth=3, width=512, in_dim=8)
    X, Y = nn.datasets.synthetic(n=64, in_dim=8)
    K = nn.preconditioned_kernel(net, X, method="block_tridiag", params=net.init(0))
    nn.isotropy(K).alpha
"""
from . import _config

_config.apply()

from . import datasets, deep_linear, losses, methods, optim, training  # noqa: E402
from . import fisher_variance  # noqa: E402
from . import reference  # noqa: E402
from .damping import Damping  # noqa: E402
from .diagnostics import isotropy, predict  # noqa: E402
from .dynamics import simulate  # noqa: E402
from .fitting import fit  # noqa: E402
from .function_space import method_kernels, preconditioned_kernel  # noqa: E402
from .kernels import LayerKernels, layer_kernels  # noqa: E402
from .networks import Network, mlp  # noqa: E402
from .preprocessing import forster_transform, leverage_scores  # noqa: E402
from .training import train  # noqa: E402
from .trajectory import Trajectory  # noqa: E402

METHODS = methods.METHODS
dense = reference  # the parameter-space reference (kept under its former name)

__version__ = "0.2.0"

__all__ = [
    "METHODS", "Damping", "LayerKernels", "Network", "Trajectory", "datasets", "deep_linear", "dense",
    "fit", "forster_transform", "isotropy", "layer_kernels", "leverage_scores", "losses", "method_kernels", "methods",
    "mlp", "optim", "predict", "preconditioned_kernel", "reference", "simulate", "train", "training",
]
