"""Regenerate figures/width_scaling.png and .json: python experiments/width_scaling.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="width_scaling"))
