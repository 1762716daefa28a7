"""Regenerate figures/convergence.png and .json: python experiments/convergence.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="convergence"))
