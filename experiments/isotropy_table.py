"""Regenerate figures/isotropy_table.png, .json and .md: python experiments/isotropy_table.py --quick|--full."""
import sys

from ntk_ngd.experiments.runner import main

sys.exit(main(only="isotropy_table"))
