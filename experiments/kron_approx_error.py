"""Regenerate figures/kron_approx_error.png and .json: python experiments/kron_approx_error.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="kron_approx_error"))
