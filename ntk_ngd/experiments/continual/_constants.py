"""Tolerances of figure `continual`, each fixed before the run with its error model (docs/THEORY.md "Continual
learning in function space")."""

#: a consistent projection's first-order forgetting |J_A d| relative to the plain step's: exactly 0; rounding of
#: N·C-sized solves (Grams of condition ≲ 1e8 here) leaves ≲ 1e-13
ZERO = 1e-10
#: the lazy prediction is the first-order term of a real step, so the remainder R(η) = Δf(η) − ηJd is O(η²) for a
#: smooth activation (erf): R(η)/R(η/2) = 4 + O(η) with η = 0.1/λ_max (third-order term ≲ 10 %); band ±1
REMAINDER_RATIO = (3.0, 5.0)
#: a naive projection forgets: its predicted |J_A d| relative to the plain step's is O(1), far above rounding
NAIVE_FLOOR = 1e-3
#: claim 4d counterexample: rᵀLr = −4.05 exactly as ρ → 0; ρ = 1e-10 moves it by ~Nρ/λ_min(Θ_BB) ≲ 1e-7
COUNTEREXAMPLE = (-4.05, 1e-6)
#: width exponents: NTK blocks fluctuate like M^{-1/2} at initialisation (ReLU), so do the kernels built from
#: them and the lazy-regime outputs (the project's claim 8); band ±0.2 around −1/2 as in figure mnist_one_step
#: (the next order bends a one-decade log-log line by ≲ 0.1, seed scatter of a 2–3-seed geometric mean ≲ 0.1)
WIDTH_SLOPE, SLOPE_BAND = -0.5, 0.2
