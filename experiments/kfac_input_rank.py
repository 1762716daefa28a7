"""Draw figure `kfac_input_rank`: K-FAC's deviation from isotropy vs N/(D+1), leverage-score theory, Forster fix."""
import sys; from ntk_ngd.experiments.runner import main  # noqa: E401,E702
sys.exit(main(only="kfac_input_rank"))
