"""Regenerate figures/cross_entropy.png and .json (softmax NGD on digits, 10 classes: loss and accuracy
per method, isotropy of the whitened operator, width convergence): python experiments/cross_entropy.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="cross_entropy"))
