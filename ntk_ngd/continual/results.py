"""The result of a task sequence: the project's one trajectory type, extended by the T×T matrices.

:class:`ContinualTrajectory` *is* a :class:`~ntk_ngd.trajectory.Trajectory` (a subclass: one type, one
divergence rule), sampled at the task boundaries: ``times`` are the step counts 0, S, 2S, …, T·S, ``train_pred``
the outputs on every task's samples (stacked in task order) after each task, ``train_loss`` the loss over all of
them. Issue 15 fixes the names of the added matrices: ``loss[t, s]`` and ``accuracy[t, s]`` are the loss and
accuracy on task s after training task t (T × T). Because ``loss`` is that matrix here, the loss function's
name is ``loss_name``.

Average accuracy (Lopez-Paz & Ranzato 2017) is the mean of the last row; forgetting of task s < T − 1 is
max_{s ≤ t < T−1} a_{t,s} − a_{T−1,s} (Chaudhry et al. 2018), averaged over s. The loss analogue
(``loss_forgetting``, last-row loss minus the best earlier one) is reported beside it: with few classes or
tiny tasks accuracy moves in steps, the loss does not.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import losses
from ..trajectory import Trajectory


@dataclasses.dataclass(frozen=True)
class ContinualTrajectory(Trajectory):
    """A :class:`Trajectory` over a task sequence (module docstring)."""

    loss: Any  # T × T: loss[t, s] on task s after training task t (issue 15's name; the base class's name string)
    accuracy: np.ndarray | None = None
    loss_name: str = "mse"
    projection: str = "none"
    memory: int | None = None
    task_sizes: tuple = ()
    regime: str = ""  # "infinite width", "linearised" or "trained"

    @property
    def n_tasks(self) -> int:
        return len(self.task_sizes)

    @property
    def average_accuracy(self) -> float:
        return float(np.mean(self.accuracy[-1]))

    @property
    def forgetting(self) -> np.ndarray:
        """Per old task s < T − 1: max_{s ≤ t < T−1} a_{t,s} − a_{T−1,s} (accuracy drop)."""
        A = np.asarray(self.accuracy)
        return np.array([np.max(A[s:-1, s]) - A[-1, s] for s in range(A.shape[0] - 1)])

    @property
    def average_forgetting(self) -> float:
        f = self.forgetting
        return float(np.mean(f)) if f.size else 0.0

    @property
    def loss_forgetting(self) -> np.ndarray:
        """Per old task s < T − 1: ℓ_{T−1,s} − min_{s ≤ t < T−1} ℓ_{t,s} (loss increase)."""
        L = np.asarray(self.loss)
        return np.array([L[-1, s] - np.min(L[s:-1, s]) for s in range(L.shape[0] - 1)])

    def summary(self) -> dict:
        return {"method": self.method, "projection": self.projection, "regime": self.regime, "loss": self.loss_name,
                "average_accuracy": self.average_accuracy, "average_forgetting": self.average_forgetting,
                "average_loss_forgetting": float(np.mean(self.loss_forgetting)) if self.n_tasks > 1 else 0.0,
                "final_loss": float(np.mean(np.asarray(self.loss)[-1])), "lr": self.lr, "diverged_at": self.diverged_at}


def task_matrices(F, Y_all, sizes, loss_name: str = "mse"):
    """(loss, accuracy) T × T from outputs F (T+1, N_all, C) at the task boundaries (row 0: initial, dropped)."""
    loss = losses.get(loss_name)
    start = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    T = len(sizes)
    L, A = np.full((T, T), np.nan), np.full((T, T), np.nan)
    with np.errstate(all="ignore"):
        for t in range(T):
            for s in range(T):
                f, y = F[t + 1, start[s]:start[s + 1]], Y_all[start[s]:start[s + 1]]
                if np.all(np.isfinite(f)):
                    L[t, s] = float(loss.value(f, y))
                    A[t, s] = float(loss.accuracy(f, y))
    return L, A


def build(method: str, projection: str, F, Y_all, sizes, lr: float, lr_rule: str, damping: float, memory,
          regime: str, steps: int, diverged_at=None, params=None, loss_name: str = "mse") -> ContinualTrajectory:
    """The trajectory of outputs F (T+1, N_all, C) at the task boundaries (logits for cross-entropy, Y_all then
    the one-hot label rows)."""
    from ..dynamics import _curves_np
    from ..trajectory import first_divergence

    L, A = task_matrices(F, Y_all, sizes, loss_name)
    train_loss, train_acc = _curves_np(losses.get(loss_name), F, Y_all)
    diverged_at = first_divergence(train_loss) if diverged_at is None else diverged_at
    times = np.arange(len(sizes) + 1, dtype=float) * steps
    return ContinualTrajectory(method, L, times, train_loss, F, None, None, float(lr), lr_rule, None, None,
                               diverged_at, train_acc, None, params=params, damping=float(damping), accuracy=A,
                               projection=projection, memory=memory, task_sizes=tuple(int(s) for s in sizes),
                               regime=regime, loss_name=loss_name)


__all__ = ["ContinualTrajectory", "build", "task_matrices"]
