"""One figure style for every experiment, and a ``save`` that writes the figure with its data.

Usage::

    from ntk_ngd import plotting
    fig, ax = plotting.figure()
    ax.plot(x, y, label="...")
    plotting.save(fig, "my_figure", data={"x": x, "y": y}, config=vars(args), wall_time=t)

``save`` writes ``figures/my_figure.png`` and ``figures/my_figure.json``; the JSON holds the
plotted numbers (numpy/jax arrays turned into plain lists of Python floats) plus the metadata
needed to reproduce them: package and library versions, jax backend and devices, float64
status, the run's configuration, its wall time and a UTC timestamp.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI
backend needed, nothing to close).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import sys
from importlib import metadata as _metadata
from typing import Any

import matplotlib
from matplotlib.figure import Figure

__all__ = ["STYLE", "DPI", "COLORS", "environment", "figure", "method_colors", "save", "to_jsonable"]

#: Resolution of saved PNGs.
DPI = 130

#: rcParams applied by :func:`figure` (every experiment looks the same).
STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.framealpha": 0.85,
    "figure.titlesize": 12,
    "axes.grid": True,
    "axes.grid.which": "major",
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "image.cmap": "viridis",
}

#: A colour-blind-safe cycle (Okabe–Ito), used for methods in a fixed order.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")



def method_colors() -> dict:
    """One colour per registered method, in registry order (the same colour in every figure)."""
    import matplotlib as mpl

    from .methods import names

    cmap = mpl.colormaps["tab20"]
    return {m: mpl.colors.to_hex(cmap(i % 20)) for i, m in enumerate(names())}


#: Size of one panel in inches; a grid of panels scales with it.
PANEL_SIZE = (4.2, 3.2)


def figure(nrows: int = 1, ncols: int = 1, *, figsize=None, sharex=False, sharey=False,
           squeeze: bool = True, title: str | None = None, **subplot_kw):
    """A new ``(fig, axes)`` in the project style (constrained layout, grid, font sizes).

    ``axes`` follows :func:`matplotlib.pyplot.subplots`: one Axes when ``nrows == ncols == 1``
    and ``squeeze`` is true, else a numpy array of Axes.
    """
    for name, v in (("nrows", nrows), ("ncols", ncols)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    matplotlib.rcParams.update(STYLE)
    matplotlib.rcParams["axes.prop_cycle"] = matplotlib.cycler(color=list(COLORS))
    if figsize is None:
        figsize = (PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze,
                        subplot_kw=subplot_kw or None)
    if title:
        fig.suptitle(title)
    return fig, axes


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------
def to_jsonable(obj):
    """``obj`` with numpy/jax arrays and scalars turned into plain Python lists/floats/ints.

    Dicts (keys become strings), lists, tuples, dataclasses and ``argparse.Namespace`` are
    converted recursively. Non-finite floats (NaN, ±inf) become ``None`` so the output is
    strict JSON. Anything else that is not JSON-native is stored as its ``str``.
    """
    import numpy as np

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, argparse.Namespace):
        return {k: to_jsonable(v) for k, v in vars(obj).items() if not callable(v)}
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
        arr = np.asarray(obj)
        if np.iscomplexobj(arr):
            raise TypeError("complex arrays are not supported in figure data; store real/imag parts")
        return to_jsonable(arr.tolist())
    return str(obj)


def _version(dist: str) -> str | None:
    try:
        return _metadata.version(dist)
    except _metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Versions, jax backend/devices and float64 status of this process."""
    import jax

    from . import __version__, backends
    from ._config import x64_enabled

    try:
        devices = [str(d) for d in jax.devices()]
        backend = jax.default_backend()
    except RuntimeError as err:  # no backend could be initialised
        devices, backend = [f"unavailable: {err}"], None
    return {
        "ntk_ngd": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "neural_tangents": _version("neural-tangents"),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "matplotlib": _version("matplotlib"),
        "jax_backend": backend,
        "jax_devices": devices,
        "float64": x64_enabled(),
        "kernel_backend": backends.active()._asdict(),
    }


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def paths(name: str, out_dir: str | os.PathLike = "figures") -> tuple[str, str]:
    """(png, json): the files :func:`save` writes for figure ``name`` in ``out_dir``."""
    return os.path.join(os.fspath(out_dir), f"{name}.png"), os.path.join(os.fspath(out_dir), f"{name}.json")


def save(fig, name: str, data: dict, out_dir: str | os.PathLike = "figures", config=None,
         wall_time: float | None = None) -> tuple[str, str]:
    """Write ``out_dir/name.png`` (dpi :data:`DPI`) and ``out_dir/name.json``.

    The JSON is ``{"name", "data", "config", "wall_time_s", "timestamp_utc", "environment"}``
    with every number a plain Python float/int (see :func:`to_jsonable`). Returns the two paths.
    """
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".png", ".json")):
        raise ValueError(f"name must be a plain file stem like 'bench_kernels', got {name!r}")
    if not isinstance(data, dict):
        raise ValueError(f"data must be a dict of the plotted numbers, got {type(data).__name__}")
    if wall_time is not None:
        wall_time = float(wall_time)
    os.makedirs(out_dir, exist_ok=True)
    png_path, json_path = paths(name, out_dir)
    record = {
        "name": name,
        "data": to_jsonable(data),
        "config": to_jsonable(config),
        "wall_time_s": wall_time,
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
    }
    text = json.dumps(record, indent=1, allow_nan=False)
    fig.savefig(png_path, dpi=DPI)
    with open(json_path, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    return png_path, json_path
