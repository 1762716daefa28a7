"""Regenerate figures/autoencoder.png and .json (the deep-autoencoder benchmark: K-FAC, EKFAC, KPSVD, K-FAC-corrected,
diagonal Fisher, online NG, SGD, Adam trained for real): python experiments/autoencoder.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="autoencoder"))
