"""Continual learning: sequences of tasks (and, later, methods and measurements on them)."""
from .tasks import permuted_tasks, rotated_tasks

__all__ = ["permuted_tasks", "rotated_tasks"]
