"""`ntk-ngd train`: real parameter-space training of a finite network with each method."""
from __future__ import annotations

from .. import budget
from ..training import train
from ._problem import add_problem_arguments, build_problem, method_options, problem_size, run_methods
from ._problem import selected_methods


def register(sub) -> None:
    p = sub.add_parser("train", help="train a finite network with each preconditioner (parameter space)",
                       description="Full-batch training of the (nonlinear) network with Δθ = -lr (G + ρI)^-1 ∇L "
                       "for each method, computed from N-sized Grams (no P×P matrix), through the method's optax "
                       "transformation. Without --lr each method's step rule applies (1/alpha from theory when "
                       "isotropy is predicted, else measured; gd 1/lambda_max; ef min ||u||^2; ief, sf 1).")
    add_problem_arguments(p, width_default="512")
    p.set_defaults(func=run)


def run(args) -> int:
    names = selected_methods(args)
    net, params, X, Y, X_test, Y_test = build_problem(args, allow_infinite=False)

    def one(m):
        return train(net, params, X, Y, m, lr=args.lr, steps=args.steps, damping=args.damping, X_test=X_test,
                     Y_test=Y_test, loss=args.loss, **method_options(m, args))

    size = problem_size(args, net)

    def cost(m):
        return budget.estimate(m, size, args.steps, "train", method_options(m, args))

    return run_methods(args, names, one, "train", estimate=cost)
