"""Smoke test: every figure at its tiny size writes a PNG and a JSON whose numbers pass their own
stated tolerances (re-evaluated here from the numbers, not read from the verdicts), with statuses in the
allowed set, at least one negative control per figure and per claim family (every control must fail), and
no registered method missing from a claim family that applies to it (each family's JSON lists the methods
it covered and the ones it skipped, with a reason; the union must be the registry)."""
from __future__ import annotations

import json
import math
import os
import re

import pytest

from ntk_ngd import METHODS
from ntk_ngd.cli import main
from ntk_ngd.experiments import available
from ntk_ngd.experiments._base import STATUSES

#: figures whose claims apply to many methods: each must state which registered methods it covered
REGISTRY_FIGURES = {"isotropy_table", "convergence", "width_scaling", "predictions", "cross_entropy"}


def reevaluate(check: dict) -> bool:
    """Apply the check's tolerance string to its measured and theoretical numbers."""
    measured, theory, tol = check["measured"], check["theory"], check["tolerance"]
    if not isinstance(measured, (int, float)) or not math.isfinite(measured):
        return False
    if m := re.fullmatch(r"rel\. error <= (\S+)", tol):
        scale = abs(theory) if theory != 0 else 1.0
        return abs(measured - theory) <= float(m.group(1)) * scale
    if m := re.fullmatch(r"<= (\S+)", tol):
        return measured <= float(m.group(1))
    if m := re.fullmatch(r"in \[(\S+), (\S+)\]", tol):
        return float(m.group(1)) <= measured <= float(m.group(2))
    raise AssertionError(f"unparsed tolerance {tol!r}")


@pytest.mark.parametrize("name", available())
def test_figure_tiny_profile(tmp_path, name, capsys):
    code = main(["figures", "--tiny", "--only", name, "--out", str(tmp_path)])
    capsys.readouterr()
    png, js = tmp_path / f"{name}.png", tmp_path / f"{name}.json"
    assert png.exists() and png.stat().st_size > 10_000
    record = json.loads(js.read_text())
    assert record["data"] and record["checks"], "a figure must state at least one checked claim"
    for check in record["checks"]:
        assert check["status"] in STATUSES, check
        if check["status"] != "unpredicted":
            assert reevaluate(check) == check["passed"], check
        # a "fails" row is a finding recorded in docs/THEORY.md, otherwise a bug
        assert check["status"] != "fails" or check.get("finding"), check
        for control in check.get("controls", []):
            assert control["failed"], (check["claim"], control)  # every negative control must fail
    verdicts = [c for c in record["checks"] if c["status"] != "unpredicted" and c.get("kind") == "evidence"]
    assert any(c.get("controls") for c in record["checks"]), "a figure needs at least one negative control"
    for family in {c.get("family", "") for c in verdicts}:
        rows = [c for c in verdicts if c.get("family", "") == family]
        assert family, ("every evidence row names its claim family", [c["claim"] for c in rows])
        assert any(c.get("controls") for c in record["checks"] if c.get("family") == family), (
            f"claim family {family!r} has no negative control")
    coverage = record.get("method_coverage", [])
    if name in REGISTRY_FIGURES:
        assert coverage, f"{name} must record which registered methods its claims covered"
    for cov in coverage:
        covered, skipped = set(cov["covered"]), set(cov["skipped"])
        assert not covered & skipped, cov
        assert covered | skipped == set(METHODS), (cov["family"], set(METHODS) - covered - skipped)
        assert not cov["missing"] and all(cov["skipped"].values()), cov
        for m in covered:  # a covered method has a row of that family
            assert any(m in c.get("methods", []) for c in record["checks"] if c.get("family") == cov["family"]), m
    assert code == 0
    assert os.path.exists(tmp_path / "REPORT.md")
