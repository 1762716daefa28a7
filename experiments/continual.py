"""Regenerate figures/continual.png and .json (continual learning: projections, forgetting from cross-task kernels):
python experiments/continual.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="continual"))
