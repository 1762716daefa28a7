"""The projections of a preconditioned step off old tasks' directions (docs/THEORY.md "Continual learning
in function space", CONTINUAL.md claims 1–4).

Task B is trained, the protected rows A (old tasks, or a memory of them) should not move. With the
method's metric M = G_B + ρI (gd: M = I), u = M⁻¹g_B, g_B = J_Bᵀr_B/N_B, every projection steps
θ ← θ + ηd with

    d = −u + 𝔅 β / N_B,     β = Mid_AA⁺ Right_AB r_B,

where 𝔅 maps coefficients on A to parameter space (raw J_Aᵀ, natural M⁻¹J_Aᵀ, or M_b⁻¹J_Aᵀ naturalised with
another damping ρ_b), so that on any rows X, to first order,

    J_X d = −[K_XB − Left_XA Mid_AA⁺ Right_AB] r_B,     Left_XA = J_X 𝔅 J... = the kernel of 𝔅,

with the kernels (all /N_B) Θ̂ = JJᵀ (the raw NTK), K = JM⁻¹Jᵀ, K² = JM⁻²Jᵀ, F = JMJᵀ, K_b = JM_b⁻¹Jᵀ and
S_b = JM_b⁻¹MM_b⁻¹Jᵀ:

| projection | 𝔅 | Left | Mid | Right | J_A d |
|---|---|---|---|---|---|
| none | — | — | — | — | −K_AB r |
| ogd | J_Aᵀ | Θ̂ | Θ̂ | K | 0 (claim 1 for gd; claim 4d for NGD) |
| ong | M⁻¹J_Aᵀ | K | K | K | 0 (claim 1: the consistent ONG; J_B d the Schur complement, claim 2) |
| ong_euclidean | M⁻¹J_Aᵀ | K | K² | K² | ≠ 0 (claim 4a: Euclidean projection against natural directions) |
| fisher_orthogonal | J_Aᵀ | Θ̂ | F | Θ̂ | ≠ 0 (claim 4b: FOPNG's M-orthogonality to raw old gradients) |
| ong_stale | M_b⁻¹J_Aᵀ | K_b | S_b | K_b | ≠ 0 (claim 4c: basis from damping ρ_b, projection in ρ) |
| ong_old_factors | M⁻¹J_Aᵀ | K | S_o | S_o | ≠ 0 (claim 4c: projection in the previous task's metric M_o) |

with S_o = J M⁻¹M_oM⁻¹Jᵀ/N_B. Two "stale" variants of claim 4c, both ONG-shaped (d = −(u − 𝔅(𝔅ᵀM'𝔅)⁻¹𝔅ᵀM'u)):

* ``ong_stale`` — the *different damping* one: basis 𝔅 = M_b⁻¹J_Aᵀ with M_b = G_B + ρ_bI, projection metric
  M' = M (same Fisher, other damping).
* ``ong_old_factors`` — what the ONG code does (CONTINUAL.md 4c): basis 𝔅 = M⁻¹J_Aᵀ from the current metric,
  projection metric M' = M_o, the Fisher frozen at the end of the previous task: the same method on the
  previous task's samples O (N_o of them) at the previous task's parameters/outputs, M_o = G_O + ρI. Then
  Mid = 𝔅ᵀM_o𝔅/N_B = S_o(A, A) and Right = 𝔅ᵀM_ou = S_o(A, B) r_B. In Gram form for exact NGD
  (M_o = J̃_OᵀJ̃_O/N_O + ρI): S_o = ρK² + (N_B/N_O) K_{·O}K_{O·}; for gd M = M_o = I (it is OGD). Each method
  declares it as ``Metric.old_sandwich`` (:mod:`ntk_ngd.methods._metric`; gd and exact NGD do); the others would
  need their old factors between two current inverses (K-FAC: per-factor sandwiches): one-line ValueError.

For gd (M = I) ong, ong_euclidean, fisher_orthogonal, ong_stale and ong_old_factors all reduce to ogd.
"""
from __future__ import annotations

import dataclasses

from .. import methods

#: kernels that need the two-sided inverse or sandwich of M between old rows: finite only for ρ > 0
TWO_SIDED = ("metric", "square", "basis", "stale", "old_square")
#: kernels that need the method's metric at all (the rest come from the NTK and the method's own kernel)
NEEDS_METRIC = TWO_SIDED + ("forward",)


@dataclasses.dataclass(frozen=True)
class Projection:
    """One row of the module docstring's table: names of the Left, Mid and Right kernels (None: no projection),
    whether it is consistent (zero first-order forgetting on the protected rows) and the claim it tests."""

    name: str
    left: str | None
    middle: str | None
    right: str | None
    consistent: bool
    claim: str

    @property
    def kernels(self) -> tuple[str, ...]:
        return tuple(k for k in (self.left, self.middle, self.right) if k is not None)

    @property
    def needs_metric(self) -> bool:
        return any(k in NEEDS_METRIC for k in self.kernels)

    @property
    def needs_positive_damping(self) -> bool:
        return any(k in TWO_SIDED for k in self.kernels)

    @property
    def uses_basis_damping(self) -> bool:
        return "basis" in self.kernels

    @property
    def uses_old_metric(self) -> bool:
        """Needs the previous task's samples and outputs (its metric M_o): ``ong_old_factors``."""
        return "old_square" in self.kernels


PROJECTIONS = {p.name: p for p in (
    Projection("none", None, None, None, False, "no protection (plain step)"),
    Projection("ogd", "ntk", "ntk", "step", True, "claim 1 (OGD) / claim 4d (Euclidean projection of M^-1 g)"),
    Projection("ong", "metric", "metric", "step", True, "claims 1-2 (consistent ONG: natural basis, same metric)"),
    Projection("ong_euclidean", "metric", "square", "square", False, "claim 4a (Euclidean projection, natural basis)"),
    Projection("fisher_orthogonal", "ntk", "forward", "ntk", False, "claim 4b (FOPNG: M-projection, raw basis)"),
    Projection("ong_stale", "basis", "stale", "basis", False, "claim 4c (basis damping rho_b, metric damping rho)"),
    Projection("ong_old_factors", "metric", "old_square", "old_square", False,
               "claim 4c (current natural basis, projection in the previous task's Fisher M_o)"),
)}
NAMES = tuple(PROJECTIONS)


def get(name) -> Projection:
    if isinstance(name, Projection):
        return name
    if name not in PROJECTIONS:
        raise ValueError(f"unknown projection {name!r}; choose one of: {', '.join(NAMES)}")
    return PROJECTIONS[name]


def check_method(spec, projection: Projection, damping) -> None:
    """One-line errors, early: a projection that needs a metric the method does not define, or ρ = 0 where the
    two-sided kernels diverge."""
    if projection.uses_old_metric and not _has_old_metric(spec):
        offered = ", ".join(m.name for m in methods.registered() if _has_old_metric(m))
        raise ValueError(f"projection {projection.name!r} needs the previous task's metric between two current "
                         f"inverses, which method {spec.name!r} does not declare (Metric.old_sandwich); use one of "
                         f"{offered}, or projection 'ong_stale' with method {spec.name!r}")
    if projection.needs_metric:
        spec.require_metric(f"projection {projection.name!r}")
    if projection.needs_positive_damping and spec.damping_rule != "none" and not damping.positive:
        raise ValueError(f"projection {projection.name!r} with method {spec.name!r} needs damping > 0: J_A(G + rho)^-1 "
                         "J_A^T between old rows diverges like 1/rho")


def _has_old_metric(spec) -> bool:
    return spec.metric is not None and spec.metric.old_sandwich is not None


def supports(spec, projection) -> bool:
    """Whether ``projection`` is defined for the method ``spec`` (no error from :func:`check_method` at ρ > 0)."""
    projection = get(projection)
    if projection.uses_old_metric and not _has_old_metric(spec):
        return False
    return spec.metric is not None or not projection.needs_metric


__all__ = ["NAMES", "PROJECTIONS", "Projection", "check_method", "get", "supports"]
