"""`ntk-ngd continual`: the table and JSON per method × projection, one-line errors (exit 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ntk_ngd.cli import main
from ntk_ngd.continual import rotated_tasks, sequential
from ntk_ngd.networks import mlp


def test_json_rows_match_the_library(capsys):
    code = main(["continual", "--n", "6", "--n-tasks", "3", "--max-angle", "90", "--method", "exact",
                 "--projection", "none", "--projection", "ong", "--steps", "4", "--lr", "0.5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["projection"] for r in out["rows"]] == ["none", "ong"]
    tasks = rotated_tasks(3, 6, max_angle=90)
    net = mlp(depth=3, width=1024, in_dim=64, out_dim=10)
    run = sequential(net, tasks, "exact", "ong", lr=0.5, steps=4)
    assert np.allclose(out["rows"][1]["accuracy"], run.accuracy)
    assert out["rows"][1]["average_accuracy"] == pytest.approx(run.average_accuracy)


def test_table_and_training(capsys):
    code = main(["continual", "--tasks", "permuted", "--n", "4", "--n-tasks", "2", "--width", "64", "--train",
                 "--method", "gd", "--projection", "ogd", "--steps", "2"])
    text = capsys.readouterr().out
    assert code == 0 and "trained" in text and "ogd" in text and "avg acc" in text


@pytest.mark.parametrize("argv,match", [
    (["--projection", "bogus"], "unknown projection 'bogus'"),
    (["--method", "ief", "--projection", "ong"], "method 'ief' has no two-sided metric kernel"),
    (["--train"], "--train needs a finite --width"),
    (["--memory", "100", "--n", "4", "--n-tasks", "2"], "memory=100 is larger"),
    (["--projection", "ong", "--damping", "0"], "needs damping > 0"),
])
def test_bad_input_is_one_line(capsys, argv, match):
    assert main(["continual"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err
