"""Parameter-space reference (placeholder while the package is split)."""
from ._dense_old import *  # noqa: F401,F403
from ._dense_old import _check_net, jacobian, flatten_params, unflatten_params, layer_slices  # noqa: F401
