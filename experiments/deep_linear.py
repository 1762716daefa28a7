"""Draw figure `deep_linear`: exact NG in deep linear nets converges at rate (1−η)² for every depth and input conditioning (closed form vs measured), GD slows ∝ cond; closed form vs dense pinv."""
import sys; from ntk_ngd.experiments.runner import main  # noqa: E401,E702
sys.exit(main(only="deep_linear"))
