"""Draw figure `unit_wise`: unit-wise NGD's deviation from isotropy vs width (ReLU ~ M^-1/2, erf exactly 0)."""
import sys; from ntk_ngd.experiments.runner import main  # noqa: E401,E702
sys.exit(main(only="unit_wise"))
