"""The factored (parameter-space) form of the Kronecker-family methods (THEORY.md "Factored form (parameter
space)"): per-layer Kronecker factors A_l = E[h̃h̃ᵀ], G_l = E[δ̃δ̃ᵀ] and per-sample features, curvature inverted
at O(Σ_l d_l³ + m_l³) (K-FAC, EKFAC), elementwise (diagonal Fisher) or by power iteration + CG (KPSVD, corrected
K-FAC); memory independent of N·C. A method declares its form in ``Method.factored``; ``form="factored"`` of
:func:`ntk_ngd.optim.natural_gradient` selects it.

Modules: :mod:`.features` (h̃, δ̃, A, G, ∇) · :mod:`.form` (FactoredForm, Settings, direction) · :mod:`.damping`
(the π-split) · :mod:`.kfac` · :mod:`.ekfac` · :mod:`.diag` · :mod:`.rearranged` (power iteration on R(F_l)) ·
:mod:`.kron_sum` (Kronecker-sum solves) · :mod:`.kpsvd` (kpsvd, kfac_cor).
"""
from .form import FORMS, SETTING_NAMES, SPLITS, FactoredForm, Settings, direction, methods_with_factored_form, split_options

__all__ = ["FORMS", "FactoredForm", "SETTING_NAMES", "SPLITS", "Settings", "direction", "methods_with_factored_form",
           "split_options"]
