"""Helpers shared by the benchmarks/bench_*.py scripts (the folder is not a package: each script
puts its own folder on sys.path and imports this module).

Timing protocol (every script): one warm-up call (jit compilation), then the median of
``repeats`` calls, each ending in ``jax.block_until_ready``. Large cases run in a fresh Python
(``in_subprocess``) that reports its own peak RSS, so no other case's buffers are counted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import jax
import numpy as np

from ntk_ngd import plotting


def blas_threads_for(setting) -> int | None:
    """'auto' → 1 when the 1-min load average exceeds the core count, else None (library default).

    Measured: on an oversubscribed machine multithreaded OpenBLAS spins, and an eigh of a
    1024×1024 matrix took 13–16 s instead of 0.4–0.5 s."""
    if setting in (None, "default", "none"):
        return None
    if setting == "auto":
        return 1 if os.getloadavg()[0] > (os.cpu_count() or 1) else None
    n = int(setting)
    if n < 1:
        raise ValueError(f"--blas-threads must be 'auto', 'default' or an integer >= 1, got {setting!r}")
    return n


@contextlib.contextmanager
def blas_limit(threads: int | None):
    """Limit OpenBLAS/MKL/OpenMP threads (threadpoolctl) for the duration; None: no change."""
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover (scikit-learn depends on threadpoolctl)
        warnings.warn("threadpoolctl not installed: BLAS threads not limited", RuntimeWarning, stacklevel=2)
        yield
        return
    with threadpool_limits(limits=threads):
        yield


def timed(fn, repeats: int, warmup: bool = True):
    """(median seconds, list of times, result): one warm-up call (compiles), then ``repeats``
    timed calls, 3 if the warm-up took over 2 s and 1 if over 20 s. ``warmup=False``: one
    timed call only (for cases too slow to run twice)."""
    if not warmup:
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        t = time.perf_counter() - t0
        return t, [t], out
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    warm = time.perf_counter() - t0
    if warm > 20:
        repeats = 1
    elif warm > 2:
        repeats = min(repeats, 3)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def rel(a, b) -> float:
    """max|a − b| / max|b|."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def fit_exponent(x, y) -> float:
    """Least-squares slope of log y against log x."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own address space.
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is not used there because the kernel carries
    the *parent's* peak over fork + exec into it (a subprocess started from a 1.6 GiB parent
    reports ≥ 1.6 GiB however little it uses); elsewhere ru_maxrss is the fallback."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def in_subprocess(script: str, case: str, kwargs: dict, threads: int | None, timeout: float | None = None) -> dict:
    """Run ``case(**kwargs)`` of ``script`` in a fresh Python; returns its dict plus peak RSS."""
    spec = json.dumps({"case": case, "kwargs": kwargs, "blas_threads": threads})
    proc = subprocess.run([sys.executable, os.path.abspath(script), "--case", spec], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def case_main(cases: dict, spec: str) -> int:
    """The subprocess side of :func:`in_subprocess`: run one case, print its dict as JSON."""
    spec = json.loads(spec)
    with blas_limit(spec["blas_threads"]):
        out = cases[spec["case"]](**spec["kwargs"])
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(plotting.to_jsonable(out)))
    return 0


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def profile_config(profiles: dict, quick: bool, profile: str | None, repeats: int | None) -> tuple[str, dict]:
    """(profile name, a copy of its settings with ``repeats`` overridden when given)."""
    profile = profile or ("quick" if quick else "full")
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; choose one of: {', '.join(profiles)}")
    prof = dict(profiles[profile])
    if repeats is not None:
        prof["repeats"] = int(repeats)
    return profile, prof


def default_log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def targets_lines(targets: list[dict]) -> list[str]:
    return ["targets:"] + [f"  {t['name']}: {t['value']:.3g} (target {t['target']}) {'MET' if t['met'] else 'NOT MET'}"
                           for t in targets]


def bench_main(doc: str, name: str, run, cases: dict, argv=None, quick_help: str = "small sizes (minutes)") -> int:
    """Command line of a benchmark script: --quick/--tiny/--repeats/--out-dir/--blas-threads."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds; numbers meaningless)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per call (default 5, quick 3)")
    p.add_argument("--out-dir", default="figures", help=f"where to write {name}.{{png,json}}")
    p.add_argument("--blas-threads", default="auto", help="'auto' (default), 'default' or an integer")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        return case_main(cases, args.case)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    out = run(quick=args.quick, out_dir=args.out_dir, blas_threads=args.blas_threads, repeats=args.repeats,
              profile="tiny" if args.tiny else None)
    print(out["table"])
    print(f"wrote {out['png']} and {out['json']}")
    return 0 if out["ok"] else 1


def log_axes(ax, xs, xlabel: str, ylabel: str, base: int = 2) -> None:
    """Log-log axes with one labelled tick per measured x (the sizes of a sweep)."""
    ax.set_xscale("log", base=base)
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([str(int(v)) for v in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def start_run(profiles: dict, quick: bool, profile: str | None, repeats: int | None, blas_threads, log):
    """What every benchmark's ``run()`` starts with: (log, profile, settings, BLAS threads, load
    average, start time)."""
    profile, prof = profile_config(profiles, quick, profile, repeats)
    return log or default_log, profile, prof, blas_threads_for(blas_threads), load_average(), time.perf_counter()
