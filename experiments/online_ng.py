"""Regenerate figures/online_ng.png and .json (online deep-linear natural gradient: (1 - eta)^(2t) at every depth,
full batch and online): python experiments/online_ng.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="online_ng"))
