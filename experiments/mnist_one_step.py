"""Regenerate figures/mnist_one_step.png and .json (the one-step NGD table on MNIST 0 vs 1):
python experiments/mnist_one_step.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="mnist_one_step"))
