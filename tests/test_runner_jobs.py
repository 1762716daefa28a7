"""``figures --jobs``: figures run in spawned worker processes give the numbers the same figures give run one after
another in this process (independent runs of the same seeded code: every measured and theory value equal,
statuses and controls equal), results in the requested order; bad ``jobs`` is a one-line error."""
from __future__ import annotations

import pytest

from ntk_ngd.experiments.runner import run_experiments

#: two of the cheapest figures at the tiny profile (a few seconds each)
NAMES = ["kron_approx_error", "deep_linear"]


def _values(result):
    return [(c.claim, c.measured, c.theory, c.status, [(k.kind, k.measured, k.failed) for k in c.controls])
            for c in result.checks]


def test_worker_processes_give_the_numbers_of_one_process(tmp_path):
    serial = run_experiments(NAMES, "tiny", str(tmp_path / "serial"), log=lambda *_: None, jobs=1)
    parallel = run_experiments(NAMES, "tiny", str(tmp_path / "parallel"), log=lambda *_: None, jobs=2)
    assert [r.name for r in parallel] == NAMES
    for a, b in zip(serial, parallel):
        assert _values(a) == _values(b), a.name
        assert a.passed == b.passed


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_bad_jobs_is_one_line(jobs, tmp_path):
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        run_experiments(NAMES, "tiny", str(tmp_path), jobs=jobs)
