"""The first ten minutes of a user (issue 27): progress lines on stderr, the time budget of multi-method runs,
the README's figures, warnings once per call."""
from __future__ import annotations

import io
import json
import os
import re
import warnings

import pytest

import ntk_ngd as nn
from ntk_ngd import _warn, budget, cli, progress
from ntk_ngd.commands import _problem
from ntk_ngd.experiments.runner import figure_files
from ntk_ngd.methods._cost import Size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMULATE = ["simulate", "--method", "exact", "--method", "gd", "--n", "6", "--in-dim", "5", "--depth", "2",
            "--steps", "3"]


def run(capsys, argv):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def test_wanted_terminal_json_and_flag():
    assert progress.wanted(None, quiet=False, stream=_Stream(True))
    assert not progress.wanted(None, quiet=True, stream=_Stream(True))  # --json
    assert not progress.wanted(None, quiet=False, stream=_Stream(False))  # a log file, a pipe
    assert progress.wanted(True, quiet=True, stream=_Stream(False))  # --progress forces it
    assert not progress.wanted(False, quiet=False, stream=_Stream(True))  # --no-progress


def test_progress_line_per_method_on_stderr_and_table_unchanged(capsys):
    code, out, err = run(capsys, SIMULATE + ["--progress"])
    assert code == 0
    assert re.findall(r"^\[simulate (\d)/2\] (\w+): [\d.]+ s", err, flags=re.M) == [("1", "exact"), ("2", "gd")]
    assert re.search(r"^\[simulate\] 2 method\(s\), estimated \d+ s in total \(on an idle machine", err, flags=re.M)
    code, plain, err_plain = run(capsys, SIMULATE)  # not a terminal, no flag: silent
    assert "[simulate" not in err_plain
    assert plain == out  # the table is the same with or without progress


def test_no_progress_under_json(capsys):
    code, out, err = run(capsys, SIMULATE + ["--json"])
    assert code == 0 and "[simulate" not in err
    payload = json.loads(out)
    assert [r["method"] for r in payload["summary"]] == ["exact", "gd"] and payload["skipped"] == []


def test_isotropy_progress_one_line_per_width(capsys):
    code, _, err = run(capsys, ["isotropy", "--methods", "exact", "--depths", "1-2", "--widths", "inf", "--n", "4",
                                "--in-dim", "6", "--progress"])
    assert code == 0
    assert re.findall(r"\[isotropy (\d)/2\] depth (\d), width inf", err) == [("1", "1"), ("2", "2")]


def _estimates(argv):
    """Each method's estimate, computed here from the budget module at the run's size."""
    args = cli.build_parser().parse_args(argv)
    net = _problem.build_problem(args, allow_infinite=True)[0]
    size = _problem.problem_size(args, net, infinite=True)
    return {m: budget.estimate(m, size, args.steps, "simulate", _problem.method_options(m, args))
            for m in ("exact", "gd")}


def test_budget_skips_the_method_over_it_and_says_so(capsys):
    est = _estimates(SIMULATE)
    assert est["exact"] > est["gd"]  # exact adds an N-sized solve to gd's kernel
    limit = 0.5 * (est["exact"] + est["gd"])
    code, out, err = run(capsys, SIMULATE + ["--budget", repr(limit)])
    assert code == 0
    assert re.search(r"exact: skipped, estimated [\d.e+-]+ s > budget [\d.e+-]+ s \(--force or --budget 0 runs it\)",
                     err)
    assert "skipped" in out and "exact" in out.splitlines()[-1] and "--force" in out.splitlines()[-1]
    code, out, err = run(capsys, SIMULATE + ["--budget", repr(limit), "--json"])
    payload = json.loads(out)
    assert [r["method"] for r in payload["summary"]] == ["gd"]
    assert [s["method"] for s in payload["skipped"]] == ["exact"]
    assert payload["skipped"][0]["estimate_s"] == pytest.approx(est["exact"])
    code, out, _ = run(capsys, SIMULATE + ["--budget", repr(limit), "--force", "--json"])
    assert [r["method"] for r in json.loads(out)["summary"]] == ["exact", "gd"]


def test_default_budget_only_for_method_all():
    parse = cli.build_parser().parse_args
    assert _problem.budget_of(parse(["train"])) == budget.DEFAULT_BUDGET_S
    assert _problem.budget_of(parse(["train", "--method", "kfac_cor"])) is None  # named: run it
    assert _problem.budget_of(parse(["train", "--budget", "0"])) is None
    assert _problem.budget_of(parse(["train", "--force"])) is None
    with pytest.raises(ValueError, match="--budget must be >= 0"):
        _problem.budget_of(parse(["train", "--budget", "-1"]))


def test_every_method_declares_its_cost():
    size = Size(8, 2, (5, 17), (16, 2))
    for spec in nn.methods.registered():
        assert spec.cost is not None, f"{spec.name} declares no cost"
        cost = spec.estimate(size, dict(spec.normalise_options(dict(spec.example_options), 2)))
        assert cost.kernel > 0 and cost.update > 0


def test_declared_scaling_matches_the_leading_order():
    """At large sizes the counts follow the leading terms derived on paper: exact NGD's update is one
    eigendecomposition of order R = N·k (∝ R³); kfac_cor's is one of its (r_H·r_Δ)-square M with r_H = N, r_Δ = R
    under jit (∝ (N·R)³ = N⁶ at k = 1)."""
    def update(name, n):
        return nn.methods.get(name).estimate(Size(n, 1, (8, 9), (8, 1)), {}).update

    assert update("exact", 4000) / update("exact", 2000) == pytest.approx(8, rel=0.02)
    assert update("kfac_cor", 400) / update("kfac_cor", 200) == pytest.approx(64, rel=0.02)


def test_readme_figures_are_files_the_runner_writes():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    written = set(figure_files("figures"))
    assert len(links) >= 3
    assert set(links) <= written, f"README figures not written by the runner: {set(links) - written}"
    assert all(os.path.exists(os.path.join(ROOT, link)) for link in links)
    assert text.index(links[-1]) < text.index("## The public API")
    assert len(re.findall(r"^python3 -m venv", text, flags=re.M)) == 2  # the two set-up commands, no more


def test_warn_once_per_call_whatever_the_numbers():
    @_warn.once_per_call
    def loop():
        for step in range(5):
            _warn.warn("m", f"condition at {step}", "remedy", key="condition")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop()
        loop()
    assert [str(w.message) for w in caught] == ["m: condition at 0; remedy"] * 2


def test_train_warns_once_and_names_method_condition_remedy():
    """sf with fewer samples than rows per sample at ρ = 0 warns; the optimiser is built twice per train call
    (the step rule's transformation and the jitted step), which used to warn twice."""
    net = nn.mlp(depth=2, width=16, in_dim=4, out_dim=3)
    X, Y = nn.datasets.synthetic(6, 4, out_dim=3, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nn.train(net, net.init(0), X, Y, "sf", lr=0.1, steps=3, samples=1)
    runtime = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1
    assert runtime[0].startswith("sf: samples=1 < 3 rows per sample") and "pass damping > 0" in runtime[0]


def test_figures_reports_each_finished_figure(capsys, monkeypatch, tmp_path):
    """The figures command hands its Progress to the runner, which closes one unit per figure (stubbed here:
    the real figures take minutes)."""
    from ntk_ngd.commands import figures

    def fake_run(names, profile, out_dir, log, progress, jobs=1):
        for name in names:
            progress(name, "ok")
        return []

    monkeypatch.setattr(figures, "run_experiments", fake_run)
    monkeypatch.setattr(figures, "write_report", lambda out, total: str(tmp_path / "REPORT.md"))
    only = ["isotropy_table", "kfac_input_rank"]
    code, _, err = run(capsys, ["figures", "--only", *only, "--out", str(tmp_path), "--progress"])
    assert code == 0
    assert re.findall(r"^\[figures (\d)/2\] (\w+): [\d.]+ s \(ok\)$", err, flags=re.M) == [("1", only[0]),
                                                                                          ("2", only[1])]
    code, _, err = run(capsys, ["figures", "--only", *only, "--out", str(tmp_path), "--json"])
    assert "[figures" not in err
