"""Numerical configuration applied when :mod:`ntk_ngd` is imported.

float64 is the default: every identity this package verifies (alpha = 1, L, ceil(L/3), ...)
is checked to 1e-8 or tighter, which float32 cannot resolve. Opt out by setting the
environment variable ``NTK_NGD_X64=0`` *before* importing ``ntk_ngd`` (or jax); tolerances
in the tests then do not apply.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # neural-tangents imports TensorFlow

import jax  # noqa: E402


def x64_requested() -> bool:
    """True unless NTK_NGD_X64 is set to 0/false/no/off."""
    return os.environ.get("NTK_NGD_X64", "1").strip().lower() not in {"0", "false", "no", "off"}


def apply() -> None:
    """Enable jax float64 unless the user opted out. neural-tangents is imported (quietly) only when the
    backend choice needs it (:func:`ntk_ngd.backends.active`); the package works without it."""
    if x64_requested():
        jax.config.update("jax_enable_x64", True)


def _import_neural_tangents_quietly() -> None:
    """neural-tangents imports TensorFlow, whose C++ logging writes CUDA-probe lines to the
    process's stderr before any Python setting applies. Silence fd 2 for that import only
    (set NTK_NGD_TF_LOGS=1 to see them)."""
    if os.environ.get("NTK_NGD_TF_LOGS") == "1":
        return
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import neural_tangents  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def x64_enabled() -> bool:
    return bool(jax.config.read("jax_enable_x64"))
