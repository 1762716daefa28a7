"""Regenerate figures/ief_optimiser.png and .json (iEF vs EF vs SF vs SGD vs Adam as optimisers on MNIST: train loss,
the approximation-quality indicator gamma, damping robustness): python experiments/ief_optimiser.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="ief_optimiser"))
