"""benchmarks/_common.py: the helpers that decide which methods a benchmark runs and how a verdict is
reached — method lists from the registry, the budgeted sweep, the exponent check and its error model,
and the runner that survives a method's time-out or crash. No timing is asserted."""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ntk_ngd as nn

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("_common", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH))


def test_method_lists_come_from_the_registry(common):
    assert [s.name for s in common.registered()] == list(nn.METHODS)
    fixed = [s.name for s in common.registered(lambda s: common.fixed_kernel(s) and common.infinite_width(s))]
    assert fixed == [s.name for s in nn.methods.registered()
                     if not (s.needs_residual or s.random) and s.finite_width_only is None]
    reps = common.one_per_damping_rule(common.registered())
    assert sorted(s.damping_rule for s in reps) == sorted({s.damping_rule for s in nn.methods.registered()})


def test_method_options_are_the_example_options_plus_the_residual(common):
    r = np.ones((3, 1))
    for spec in nn.methods.registered():
        opts = common.method_options(spec, r)
        assert {k: v for k, v in opts.items() if k != "residual"} == dict(spec.example_options)
        assert ("residual" in opts) == spec.needs_residual


def test_fitted_exponent_and_its_error(common):
    x = np.array([1.0, 2.0, 4.0, 8.0])
    k, e = common.fit_exponent_with_error(x, 3.0 * x**1.5)
    assert k == pytest.approx(1.5) and e == pytest.approx(0.0, abs=1e-12)
    k2, e2 = common.fit_exponent_with_error(x[:2], x[:2] ** 2)
    assert k2 == pytest.approx(2.0) and np.isnan(e2)


def test_exponent_target_can_fail_and_says_when_it_cannot_judge(common):
    assert common.exponent_target("t", {"a": (0.9, 0.05), "b": (0.3, 0.1)}, 1.0, "model")["met"] is True
    assert common.exponent_target("t", {"a": (1.4, 0.05)}, 1.0, "model")["met"] is False  # cubic would fail too
    assert common.exponent_target("t", {"a": (1.1, 0.05)}, 1.0, "model")["met"] is True  # within 3 std. err.
    row = common.exponent_target("t", {"a": (0.9, float("nan"))}, 1.0, "model")
    assert row["met"] is None and "no verdict" in row["target"]
    assert common.targets_lines([row])[1].endswith("reported")


def test_sweep_skips_by_prediction_and_after_a_failure(common):
    sweep = common.Sweep(["fast", "slow", "broken"], budget_s=100.0, exponent=2.0)
    assert sweep.plan(64) == (["fast", "slow", "broken"], {})
    sweep.record(64, {"fast": {"completed": True, "wall_s": 1.0}, "slow": {"completed": True, "wall_s": 30.0},
                      "broken": {"completed": False, "reason": "out of memory"}})
    run, skipped = sweep.plan(128)  # slow: 30 s × 2² = 120 s > 100 s
    assert run == ["fast"] and set(skipped) == {"slow", "broken"}
    assert all(not r["completed"] and r["reason"].startswith("not tried") for r in skipped.values())


def test_compile_target(common):
    assert common.compile_target("sweep", {"a": 1, "b": 1})["met"] is True
    assert common.compile_target("sweep", {"a": 1, "b": 10})["met"] is False


@pytest.mark.slow
def test_run_methods_survives_a_time_out_and_a_crash(common, tmp_path):
    script = tmp_path / "bench_fake.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(BENCH)!r})
        from _common import case_main, method_records

        def measure(name):
            if name == "slow":
                time.sleep(120)
            if name == "crash":
                os._exit(3)
            if name == "refuses":
                raise ValueError("does not apply here")
            return {{"value": len(name)}}

        def case(methods_):
            method_records(methods_, measure)
            return {{"shared": 1}}

        sys.exit(case_main({{"case": case}}, sys.argv[2]))
    """))
    names = ["ok", "slow", "crash", "refuses", "last"]
    shared, records = common.run_methods(str(script), "case", {}, names, None, budget_s=15, memory_gib=8,
                                         log=lambda *a: None)
    assert shared["shared"] == 1 and list(records) == names
    assert records["ok"]["value"] == 2 and records["last"]["value"] == 4
    assert "time limit" in records["slow"]["reason"]
    assert records["crash"]["reason"].startswith("exit 3")
    assert records["refuses"]["reason"] == "not applicable: does not apply here"
