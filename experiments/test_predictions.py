"""Regenerate figures/test_predictions.png and .json (isotropic methods: same training dynamics,
different test predictions): python experiments/test_predictions.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="test_predictions"))
