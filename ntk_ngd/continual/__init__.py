"""Continual learning in function space (docs/THEORY.md "Continual learning in function space"; CONTINUAL.md).

* :mod:`.tasks` — task sequences: :func:`permuted_tasks`, :func:`rotated_tasks` (digits or MNIST).
* :mod:`.projections` — none, ogd, ong, ong_euclidean, fisher_orthogonal, ong_stale, ong_old_factors: what each
  protects (``PROJECTIONS``, the one list every caller loops over).
* :mod:`.kernels` — :func:`projected_kernels`: forgetting and learning kernels of one projected step, from
  cross-task kernels (infinite width, or linearised at finite width).
* :mod:`.sequential` — :func:`sequential`: closed-form function-space dynamics over T tasks.
* :mod:`.training` — :func:`train_sequential`: real parameter-space training (Gram form, stored Jacobian rows).
* :mod:`.memory` — task validation, protected samples (``memory`` per old task), stored directions.
* :mod:`.results` — :class:`ContinualTrajectory`: the project's Trajectory with the T × T loss and accuracy.

Every entry point takes ``loss="mse"`` (default) or ``loss="cross_entropy"`` (targets: class labels; the kernels
are softmax-whitened, docs/THEORY.md "Continual learning with cross-entropy").
"""
from .finite import train_finite
from .kernels import ProjectedKernels, projected_kernels
from .memory import Stored, store, store_metric_rows
from .projections import NAMES as PROJECTIONS
from .results import ContinualTrajectory
from .sequential import sequential
from .tasks import permuted_tasks, rotated_tasks
from .training import projected_direction, train_sequential

__all__ = ["PROJECTIONS", "ContinualTrajectory", "ProjectedKernels", "Stored", "permuted_tasks", "projected_direction",
           "projected_kernels", "rotated_tasks", "sequential", "store", "store_metric_rows", "train_finite", "train_sequential"]
