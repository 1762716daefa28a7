"""`ntk-ngd simulate`: function-space trajectories (closed form or lax.scan) of each method
(THEORY.md claim 8; cross-entropy: logit dynamics)."""
from __future__ import annotations

from .. import budget
from ..dynamics import simulate
from ._problem import add_problem_arguments, build_problem, is_infinite_width, method_options, problem_size
from ._problem import run_methods, selected_methods


def register(sub) -> None:
    p = sub.add_parser("simulate", help="function-space dynamics of each method (infinite or linearised width)",
                       description="Simulate f_{t+1} = f_t - lr Θ_G u_t for each method (THEORY.md claim 8): closed "
                       "form for fixed kernels with MSE, lax.scan otherwise. --width inf uses the infinite-width "
                       "kernels, a number linearises the network at its initial parameters.")
    add_problem_arguments(p, width_default="inf")
    p.add_argument("--time", choices=("discrete", "continuous"), default="discrete")
    p.set_defaults(func=run)


def run(args) -> int:
    names = selected_methods(args, infinite=is_infinite_width(args))
    net, params, X, Y, X_test, Y_test = build_problem(args, allow_infinite=True)

    def one(m):
        # MSE: residual-dependent methods step in discrete time whatever --time says (no closed form in τ);
        # cross-entropy has none for any method, so --time continuous is an error there
        time = "discrete" if args.loss == "mse" and _residual_or_random(m) else args.time
        return simulate(net, X, Y, m, params=params, lr=args.lr, steps=args.steps, X_test=X_test, Y_test=Y_test,
                        damping=args.damping, time=time, loss=args.loss,
                        **method_options(m, args))

    size = problem_size(args, net, infinite=params is None)

    def cost(m):
        return budget.estimate(m, size, args.steps, "simulate", method_options(m, args))

    return run_methods(args, names, one, "simulate", estimate=cost)


def _residual_or_random(name) -> bool:
    from .. import methods

    spec = methods.get(name)
    return spec.needs_residual or spec.random
