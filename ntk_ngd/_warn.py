"""Warnings a user can act on. Every RuntimeWarning ntk-ngd emits goes through :func:`warn`, which writes
``"METHOD: CONDITION; REMEDY"`` (what was run, what is wrong with it, what to change), and inside a call decorated
with :func:`once_per_call` (``train``, ``simulate``, the continual-learning runs) each warning is emitted once for
the whole call, not once per step or per kernel evaluation — identified by its method and ``key`` (default the
condition text), so a condition whose numbers change from step to step still warns once.
"""
from __future__ import annotations

import contextvars
import functools
import warnings

_SEEN: contextvars.ContextVar = contextvars.ContextVar("ntk_ngd_warned", default=None)


def message(method: str, condition: str, remedy: str) -> str:
    return f"{method}: {condition}; {remedy}"


def warn(method: str, condition: str, remedy: str, key=None, stacklevel: int = 2) -> None:
    """Emit ``"method: condition; remedy"`` as a RuntimeWarning, once per :func:`once_per_call` call."""
    seen = _SEEN.get()
    ident = (method, condition if key is None else key)
    if seen is not None:
        if ident in seen:
            return
        seen.add(ident)
    warnings.warn(message(method, condition, remedy), RuntimeWarning, stacklevel=stacklevel + 1)


def once_per_call(fn):
    """Decorator: the :func:`warn` calls made while ``fn`` runs are emitted once each (the outermost decorated
    call owns the record, so a ``train`` inside a continual run does not repeat the run's warnings)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _SEEN.get() is not None:
            return fn(*args, **kwargs)
        token = _SEEN.set(set())
        try:
            return fn(*args, **kwargs)
        finally:
            _SEEN.reset(token)

    return wrapper


__all__ = ["message", "once_per_call", "warn"]
