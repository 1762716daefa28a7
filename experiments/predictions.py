"""Regenerate figures/predictions.png and .json (isotropic methods: same training dynamics,
different test predictions): python experiments/predictions.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="predictions"))
