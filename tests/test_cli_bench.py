"""`ntk-ngd bench`: bad input gets a one-line error; the tiny profile runs a benchmark end to end and its
correctness checks (Gram form vs dense reference, computed in the same run) pass."""
from __future__ import annotations

import json

import pytest

from ntk_ngd.cli import main


def test_bench_unknown_name_lists_the_valid_ones(capsys):
    code = main(["bench", "--only", "nonsense"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown benchmark(s) nonsense" in err and "kernels, methods, dynamics, training" in err
    assert "Traceback" not in err


def test_bench_bad_blas_threads(capsys):
    assert main(["bench", "--only", "training", "--blas-threads", "0"]) == 2
    assert "--blas-threads must be" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_tiny_training_end_to_end(tmp_path, capsys):
    code = main(["bench", "--tiny", "--only", "training", "--out", str(tmp_path), "--json"])
    payload = json.loads(capsys.readouterr().out)
    (result,) = payload["benchmarks"]
    assert code == 0 and result["ok"], result.get("table", result)
    record = json.loads((tmp_path / "bench_training.json").read_text())
    worst = max(v for p in record["data"]["part_b"] for v in p["rel_diff"].values())
    assert worst <= 1e-8  # Gram/Woodbury update vs the dense parameter-space update, same run
    assert (tmp_path / "bench_training.png").stat().st_size > 10_000
