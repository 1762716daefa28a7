"""The CLI subcommands: JSON output whose numbers are checked, one-line errors with exit 2."""
from __future__ import annotations

import json

import pytest

from ntk_ngd.cli import main


def run_json(capsys, argv):
    code = main(argv + ["--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_isotropy_json_agrees_with_theory(capsys):
    code, payload = run_json(capsys, ["isotropy", "--depths", "1-3", "--widths", "48,inf", "--n", "6",
                                      "--in-dim", "8", "--methods", "exact,block_diag,block_tridiag,kfac"])
    assert code == 0
    rows = payload["rows"]
    assert len(rows) == 3 * 2 * 4
    for r in rows:  # the numbers themselves: alpha against the paper value per row
        expected = {"exact": 1, "block_diag": r["depth"], "block_tridiag": -(-r["depth"] // 3),
                    "kfac": 6 * (r["depth"] - 1) + 1}[r["method"]]
        assert abs(r["alpha"] - expected) <= 1e-8 * expected and r["deviation"] <= 1e-8, r


def test_simulate_json_one_step_convergence(capsys):
    code, payload = run_json(capsys, ["simulate", "--method", "exact", "--method", "gd", "--n", "8",
                                      "--in-dim", "12", "--steps", "3"])
    assert code == 0
    by = {r["method"]: r for r in payload["summary"]}
    assert by["exact"]["steps_to_1e-6"] == 1 and by["exact"]["lr_rule"].startswith("1/alpha: isotropic (theory alpha = 1,")
    assert by["gd"]["steps_to_1e-6"] is None


def test_train_json_runs_and_decreases(capsys):
    code, payload = run_json(capsys, ["train", "--method", "exact", "--n", "8", "--in-dim", "12", "--width", "256",
                                      "--steps", "3"])
    assert code == 0
    row = payload["summary"][0]
    assert row["final_loss"] < 1e-6 * row["initial_loss"]


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--method", "natural"], "unknown method 'natural'"),
    (["simulate", "--steps", "-1", "--method", "exact"], "steps must be >= 0"),
    (["train", "--width", "inf", "--method", "exact"], "--width inf is not trainable"),
    (["isotropy", "--widths", "0"], "--widths must be >= 1"),
    (["figures", "--only", "nonexistent"], "unknown figure 'nonexistent'; choose from: isotropy_table"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
