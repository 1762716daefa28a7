"""Figure `unit_wise`: the unit-wise NGD kernel is isotropic only as the width grows (THEORY.md
claim 4).

At ρ → 0 and with every layer-input Gram K^H_l of full rank N, the unit-wise kernel on the
training points is diag(a_n) + I, where a_n counts the hidden units whose backward signal is
non-zero at x_n (the readout unit gives I). For ReLU a unit is active with probability exactly
1/2, so α = tr(Θ)/N ≈ Σ_l M_l/2 + 1 and a_n fluctuates by ~ M^{1/2} across samples: relative
deviation ~ M^{−1/2}. A smooth activation (erf) never has δ = 0, so a_n = Σ_l M_l for every n
and the kernel is exactly (Σ_l M_l + 1)·I.

Independent theory for the ReLU deviation (derived here, not taken from the method's code):
for a layer whose units draw i.i.d. symmetric Gaussian weights, unit j is active at x_n with
probability 1/2 and E[s_n s_m] = 1/2 − θ_nm/(2π) (θ_nm the angle between the layer inputs h̃_n,
h̃_m: the arc-cosine kernel of order 0). The centred counts a − ā1 are a sum of M i.i.d.
zero-mean vectors, and the counts of different layers are uncorrelated (given the layers below,
a unit above is active with probability exactly 1/2), so

    E||a − ā1||² = Σ_l M_l c_l,   c_l = (1/N) Σ_{n,m} θ^{(l)}_{nm} / (2π),
    deviation ≈ sqrt(Σ_l M_l c_l / N) / (Σ_l M_l / 2 + 1),

with θ^{(1)} the angles of the scaled inputs [σ_w x/√D, σ_b] (exact) and θ^{(l>1)} those of the
infinite-width NNGP kernel of layer l's input (leading order in 1/M). This predicts both the
slope −1/2 and the prefactor; the figure draws it as lines beside the measured markers.

Checks and their error models (``_checks``): the ReLU slope against −1/2 with a band of 3 standard errors
calibrated on the first half of the seeds and judged on the second half (``unresolved`` when 3 SE > 1/4); the
per-unit active fraction extrapolated to M → ∞ (fit a + b/M on the judged seeds) against the quadrature limit
(Gauss–Hermite active fractions at the NNGP variances: theory only, the method has no infinite-width kernel),
4 SE of the intercept with σ_M from the calibration seeds; the arc-cosine prediction of the deviation² (4
standard errors of the mean over the runs); erf exactly isotropic and the Gram form against the count of active
units (floating point). Each has a negative control of a stated kind (the erf runs' slope and fraction: a broken
condition / other data; a quarter of the width: wrong theory; the ReLU runs: broken condition; another seed's
counts: other data).

Modules: ``_measure`` (kernels per width and seed, the arc-cosine prediction), ``_checks`` (the claims as
checks, with their error models and controls), ``_plot`` (the figure), ``_run`` (:func:`run`).
"""
from __future__ import annotations

from ._run import run

PROFILES = {
    "tiny": {"widths": [64, 256, 1024], "depths": [2, 3], "n": 8, "in_dim": 16, "seeds": 8,
             "activations": ["relu", "erf"]},
    "quick": {"widths": [64, 128, 256, 512, 1024, 2048], "depths": [2, 3], "n": 16, "in_dim": 32, "seeds": 8,
              "activations": ["relu", "erf"]},
    # N stays at 32: the method eigendecomposes one N×N block per hidden unit, and jax's CPU eigh
    # jumps from ~0.1 ms (N=32) to ~10-30 ms (N=64) per block, i.e. hours for 8 seeds up to M=8192.
    # Depth 3 also needs K^H_2 of rank N (M + 1 >= N) and the first layer D + 1 >= N.
    "full": {"widths": [64, 128, 256, 512, 1024, 2048, 4096, 8192], "depths": [2, 3], "n": 32, "in_dim": 64,
             "seeds": 8, "activations": ["relu", "erf"]},
}

__all__ = ["PROFILES", "run"]
