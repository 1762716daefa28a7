"""One-line checks of the reference's public input: method names, method options, learning rate.

A method's options are the keyword-only parameters of its builder (:data:`.builders.BUILDERS`):
names and defaults come from the signature, values are checked here by option name.
"""
from __future__ import annotations

import inspect

from .. import _validate
from ..methods._pattern import check_pattern  # input validation, shared: the reference's numbers stay its own
from .builders import BUILDERS
from .fits import KFAC_READOUTS

#: former option names still accepted: sf's ``k`` (number of samples)
ALIASES = {"k": "samples"}
KFAC_ROUTES = ("auto", "factor", "gram")


def check_method(method: str) -> str:
    if method not in BUILDERS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(BUILDERS)}")
    return method


def no_fisher(method: str) -> None:
    """Raise for iEF where an explicit G is asked for."""
    if method == "ief":
        raise ValueError("method 'ief' is an update, not a Fisher approximation; use parameter_update, "
                         "function_step or preconditioned_kernel")


_CHECKS = {
    "pattern": lambda v, depth: None if v is None else check_pattern(v, depth),
    "bandwidth": lambda v, depth: None if v is None else _validate.positive_int("bandwidth", v, minimum=0),
    "kfac_readout": lambda v, depth: _validate.choice("kfac_readout", v, KFAC_READOUTS),
    "kfac_route": lambda v, depth: _validate.choice("kfac_route", v, KFAC_ROUTES),
    "unit_chunk": lambda v, depth: _validate.positive_int("unit_chunk", v),
    "samples": lambda v, depth: _validate.positive_int("samples", v),
    "seed": lambda v, depth: _validate.positive_int("seed", v, minimum=0),
    "step": lambda v, depth: _validate.positive_int("step", v, minimum=0),
    "rank": lambda v, depth: _validate.positive_int("kpsvd rank (number of Kronecker terms)", v),
}


def option_defaults(method: str) -> dict:
    """{option: default} from the builder's keyword-only parameters."""
    params = inspect.signature(BUILDERS[check_method(method)]).parameters.values()
    return {q.name: q.default for q in params if q.kind is inspect.Parameter.KEYWORD_ONLY}


def normalise_options(method: str, options: dict, depth: int) -> dict:
    """Validated options of ``method`` with defaults filled in (aliases renamed)."""
    options = dict(options)
    for old, new in ALIASES.items():
        if old in options:
            if new in options:
                raise ValueError(f"pass {new}= or its alias {old}=, not both")
            options[new] = options.pop(old)
    defaults = option_defaults(method)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        owners = {o: [m for m in BUILDERS if o in option_defaults(m)] for o in unknown}
        where = "".join(f"; {o} is only used by method {', '.join(map(repr, ms))}" for o, ms in owners.items() if ms)
        raise ValueError(f"unexpected options {unknown} for method {method!r} (its options: "
                         f"{', '.join(defaults) or 'none'}){where}")
    out = {name: _CHECKS[name](options.get(name, default), depth) for name, default in defaults.items()}
    if method == "pattern" and (out["pattern"] is None) == (out["bandwidth"] is None):
        raise ValueError(f"method 'pattern' needs pattern=<{depth}x{depth} symmetric matrix> or bandwidth=<int>, "
                         "not both")
    return out


__all__ = ["ALIASES", "check_method", "no_fisher", "normalise_options",
           "option_defaults"]
