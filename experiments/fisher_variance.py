"""Regenerate figures/fisher_variance.png and .json (variance of the squared-score and Hessian Fisher
estimators vs samples k, and the sampled-Fisher step's scatter): python experiments/fisher_variance.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="fisher_variance"))
