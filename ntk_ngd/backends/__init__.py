"""Backends for the network and its infinite-width kernels: neural-tangents, or pure jax.

neural-tangents (NT) is archived; its last release 0.6.5 imports only with jax 0.4.x. This
package needs only jax and numpy and never imports NT for its computations:

* :mod:`.mlp`: the MLP (NTK parameterisation, NT's stax parameter layout and key splitting);
* :mod:`.recursions`: the per-layer infinite-width kernels (closed forms, or quadrature);
* :mod:`.activations`: the elementwise activations, matching NT's.

:func:`active` chooses: the environment variable ``NTK_NGD_BACKEND`` is ``auto`` (default: NT
when it imports), ``neural_tangents`` (NT, an error if it does not import) or ``jax``. Only that
probe imports neural_tangents, and only when the choice depends on it.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
from typing import NamedTuple

from . import activations, mlp, recursions  # noqa: F401

ENV_VAR = "NTK_NGD_BACKEND"
CHOICES = ("auto", "neural_tangents", "jax")


class Backend(NamedTuple):
    """The backend in use ("neural_tangents" or "jax") and why, in one line."""

    name: str
    reason: str


@functools.lru_cache(maxsize=None)
def neural_tangents_status() -> tuple[bool, str]:
    """(importable, one-line reason), probed once per process."""
    try:
        from .. import _config

        _config._import_neural_tangents_quietly()  # TensorFlow's C++ start-up lines off stderr
        nt = importlib.import_module("neural_tangents")
    except Exception as exc:  # ImportError, or whatever an incompatible jax makes NT raise
        first = (str(exc).strip().splitlines() or [""])[0]
        return False, f"neural_tangents not importable: {type(exc).__name__}: {first}"
    try:
        version = importlib.metadata.version("neural-tangents")
    except importlib.metadata.PackageNotFoundError:
        version = getattr(nt, "__version__", "(unknown version)")
    return True, f"neural_tangents {version} imported"


def requested() -> str:
    """The value of ``NTK_NGD_BACKEND`` ("auto" when unset or empty); ValueError if unknown."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: expected one of {', '.join(CHOICES)}")
    return value


def active() -> Backend:
    """The backend to use now: ``Backend(name, reason)`` with name "neural_tangents" or "jax".

    ``NTK_NGD_BACKEND=jax`` never probes NT; ``=neural_tangents`` raises ImportError (one line,
    with NT's error) when NT does not import; ``auto`` takes NT when it imports.
    """
    choice = requested()
    if choice == "jax":
        return Backend("jax", f"{ENV_VAR}=jax")
    ok, reason = neural_tangents_status()
    if ok:
        return Backend("neural_tangents", reason)
    if choice == "neural_tangents":
        raise ImportError(f"{ENV_VAR}=neural_tangents but {reason}")
    return Backend("jax", reason)


__all__ = ["Backend", "CHOICES", "ENV_VAR", "active", "activations", "mlp", "neural_tangents_status",
           "recursions", "requested"]
