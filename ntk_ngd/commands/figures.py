"""`ntk-ngd figures`: regenerate every figure, its JSON and figures/REPORT.md."""
from __future__ import annotations

import os
import time

from .. import progress as _progress
from ..experiments import available
from ..experiments.runner import run_experiments, write_report
from ._common import add_profile_flags, add_progress_flag, emit


def register(sub) -> None:
    p = sub.add_parser("figures", help="regenerate the figures, their JSON data and REPORT.md",
                       description="Run the experiments behind every figure. Each writes OUT/NAME.png and "
                       "OUT/NAME.json; the run writes OUT/REPORT.md with every claim's status and controls.")
    add_profile_flags(p, quick="minutes on a laptop CPU (default)", full="paper-scale widths and N (about an hour)",
                      tiny="smoke-test sizes")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"subset of: {', '.join(available())}")
    p.add_argument("--out", default="figures", help="output folder (default figures/)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--jobs", type=int, default=default_jobs(), metavar="N",
                   help=f"figures run in N worker processes at once (default {default_jobs()}: this machine's "
                   "cores, at most 4; 1 runs them one after another in this process)")
    add_progress_flag(p)
    p.set_defaults(func=run, profile="quick")


def default_jobs() -> int:
    """Worker processes for ``figures``: the cores this process may use, at most 4 (each worker holds its own
    jax runtime, ~0.5–2 GB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def run(args) -> int:
    start = time.perf_counter()
    names = args.only or available()
    progress = _progress.from_args(args, "figures", len(names))
    results = run_experiments(args.only, args.profile, args.out, log=lambda *_: None, progress=progress,
                              jobs=getattr(args, "jobs", 1))
    total = time.perf_counter() - start
    report = write_report(args.out, total)
    failed = [r.name for r in results if not r.passed]
    payload = {
        "profile": args.profile, "report": report, "wall_time_s": total,
        "figures": [{"name": r.name, "png": r.png, "json": r.json, "passed": r.passed, "summary": r.summary,
                     "wall_time_s": r.wall_time, "checks": [c.as_dict() for c in r.checks]} for r in results],
    }
    emit(args, payload, f"{len(results)} figure(s) in {total:.0f} s; report: {report}"
         + (f"; FAILED (a fails row without a finding, a control that passed, or a missing method): "
            f"{', '.join(failed)}" if failed else "; every fails row is a recorded finding, every control failed"))
    return 1 if failed else 0
