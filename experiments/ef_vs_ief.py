"""Regenerate figures/ef_vs_ief.png and .json (EF vs iEF vs SF: per-sample steps, loss curves,
robustness to damping, efficiency ratio): python experiments/ef_vs_ief.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="ef_vs_ief"))
