"""Helpers shared by the benchmarks/bench_*.py scripts (the folder is not a package: each script
puts its own folder on sys.path and imports this module).

Timing protocol (every script): one warm-up call (jit compilation), then the median of
``repeats`` calls, each ending in ``jax.block_until_ready``. Large cases run in a fresh Python
(``in_subprocess``) that reports its own peak RSS, so no other case's buffers are counted.

Method lists come from the registry (:func:`registered`), never from hand-kept tuples. What a method
costs is not a registry attribute (corrected K-FAC solves an (N·C)²-sized system, unit-wise one
N-sized system per unit), so sweeps over N or M do not pick a subset in advance: every applicable
method runs under a time and memory budget (:func:`run_methods`), and one that exceeds it, or whose
cost extrapolated from the previous size with a lower bound on its growth would (:class:`Sweep`), is
recorded as "did not complete" with the reason and not tried at larger sizes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import jax
import numpy as np

from ntk_ngd import methods, plotting


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
        warnings.warn("benchmarks: threadpoolctl is not installed, so BLAS threads are not limited (timings on a "
                      "loaded machine can be ~30x slower); pip install threadpoolctl", RuntimeWarning, stacklevel=2)
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
    return fit_exponent_with_error(x, y)[0]


def fit_exponent_with_error(x, y) -> tuple[float, float]:
    """(slope k, its standard error) of the least-squares fit of log y against log x; the error is
    NaN with fewer than 3 points (no residual degree of freedom)."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(x) < 2:
        return float("nan"), float("nan")
    if len(x) == 2:
        return float(np.polyfit(x, y, 1)[0]), float("nan")
    coef, cov = np.polyfit(x, y, 1, cov="unscaled")
    resid = y - np.polyval(coef, x)
    sigma2 = float(resid @ resid) / (len(x) - 2)
    return float(coef[0]), float(np.sqrt(sigma2 * cov[0, 0]))


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
    if spec.get("memory_gib"):  # set here, not in a preexec_fn: forking a process that runs jax can deadlock
        limit = int(spec["memory_gib"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
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


def target(name: str, value, wanted: str, met) -> dict:
    """One row of a benchmark's ``targets``. ``met`` None: the number is reported without a verdict."""
    return {"name": name, "value": value, "target": wanted, "met": None if met is None else bool(met)}


def reported(name: str, value, why: str) -> dict:
    """A ``targets`` row that states a measured number without a verdict (``why``: why there is none)."""
    return target(name, value, f"reported, no verdict ({why})", None)


def verdict_word(met) -> str:
    return "reported" if met is None else ("MET" if met else "NOT MET")


def targets_lines(targets: list[dict]) -> list[str]:
    return ["targets:"] + [f"  {t['name']}: {t['value']:.3g} (target {t['target']}) {verdict_word(t['met'])}"
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


# ---------------------------------------------------------------------------------------------
# methods from the registry
# ---------------------------------------------------------------------------------------------
def registered(where=None) -> tuple:
    """The registered methods (:func:`ntk_ngd.methods.registered`, registration order) for which
    ``where(spec)`` holds."""
    return tuple(s for s in methods.registered() if where is None or where(s))


def fixed_kernel(spec) -> bool:
    """Θ_G does not change along an MSE trajectory: it depends neither on the residual nor on random draws."""
    return not (spec.needs_residual or spec.random)


def infinite_width(spec) -> bool:
    """The method has an infinite-width kernel (``finite_width_only`` is None)."""
    return spec.finite_width_only is None


def one_per_damping_rule(specs) -> tuple:
    """The first method of ``specs`` for each damping rule (``Method.damping_rule``): a few methods that
    together exercise every way the damping enters a Gram form (:mod:`ntk_ngd.damping`)."""
    seen = {}
    for spec in specs:
        seen.setdefault(spec.damping_rule, spec)
    return tuple(seen.values())


def method_options(spec, residual=None) -> dict:
    """The options a benchmark runs ``spec`` with: its ``example_options`` (the registry's runnable
    choice, e.g. pattern's bandwidth), plus the MSE ``residual`` f − Y when the method depends on it."""
    opts = dict(spec.example_options)
    if spec.needs_residual and residual is not None:
        opts["residual"] = residual
    return opts


def style(i: int) -> dict:
    """Colour, marker and line style of the i-th method of a plot (distinct for up to 24 methods)."""
    colors = plotting.COLORS
    return {"color": colors[i % len(colors)], "marker": "os^vDxP*"[i % 8],
            "linestyle": ("-", "--", "-.")[(i // len(colors)) % 3]}


def short(names) -> str:
    return ", ".join(names) if names else "none"


# ---------------------------------------------------------------------------------------------
# compilations
# ---------------------------------------------------------------------------------------------
def compilations(jitted, run) -> int:
    """How many new entries ``run()`` adds to the compilation cache of the jit-compiled ``jitted``
    (``jax.jit(...)._cache_size()``): 1 when every call of the sweep reuses one compilation."""
    before = jitted._cache_size()
    run()
    return jitted._cache_size() - before


#: the damping values of the compile-count sweeps (issue 13: "a damping sweep of 10 values compiles once")
SWEEP_DAMPINGS = tuple(float(v) for v in np.logspace(-4, -1, 10))


def cross_entropy_problem(seed: int = 0):
    """(net, params, X, labels): a small 3-class problem for the compile-count sweeps (sizes do not matter)."""
    from ntk_ngd.networks import mlp

    net = mlp(depth=3, width=16, in_dim=4, out_dim=3, activation="relu", bias=True)
    rng = np.random.default_rng(seed)
    return net, net.init(seed), rng.standard_normal((8, 4)), rng.integers(0, 3, 8)


def damping_sweep_compilations(jitted, call) -> dict:
    """{method: new compilations of ``jitted`` during ``call(spec, rho)`` for every ρ of SWEEP_DAMPINGS},
    for one method per damping rule (:func:`one_per_damping_rule`: the damping is what the sweep varies)."""
    return {spec.name: compilations(jitted, lambda spec=spec: [call(spec, rho) for rho in SWEEP_DAMPINGS])
            for spec in one_per_damping_rule(registered())}


def compile_target(what: str, counts: dict) -> dict:
    """The ``targets`` row of a sweep that must compile once per method (issue 13, "Performance")."""
    worst = max(counts.values()) if counts else 0
    return target(f"{what} compiles once per method ({', '.join(f'{m} {c}' for m, c in counts.items())})", worst,
                  "== 1", worst == 1)


def exponent_target(what: str, fits: dict, bound: float, why: str) -> dict:
    """``targets`` row: every method's fitted exponent k ({method: (k, standard error)}) is at most
    ``bound`` (the cost model, ``why``) within 3 standard errors of its fit. The cost model gives only
    this upper bound: fixed costs (dispatch, N-sized solves next to O(P) passes) lower the slope over a
    finite range, so a small k is no contradiction. No verdict where a fit has no error estimate (< 3
    points)."""
    worst = max((k for k, _ in fits.values()), default=float("nan"))
    wanted = f"<= {bound:g} + 3 std. err. of the fit ({why})"
    name = f"{what}, largest over methods ({', '.join(f'{m} {k:.2f}±{e:.2f}' for m, (k, e) in fits.items())})"
    if not fits or any(not np.isfinite(e) for _, e in fits.values()):
        return reported(name, worst, "fewer than 3 sizes: no error estimate for the fitted slope")
    return target(name, worst, wanted, all(k <= bound + 3 * e for k, e in fits.values()))


# ---------------------------------------------------------------------------------------------
# every method under a time and memory budget
# ---------------------------------------------------------------------------------------------
_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "MemoryError", "bad_alloc", "Out of memory", "failed to allocate",
                "Cannot allocate")


def memory_cap_gib(requested: float = 24.0) -> float:
    """``requested`` GiB, at most 90 % of this machine's physical memory."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return min(float(requested), 0.9 * total)


def _emit(record: dict) -> None:
    print(json.dumps(plotting.to_jsonable(record)), flush=True)


def method_records(names, measure) -> dict:
    """Child side of :func:`run_methods`: ``measure(name) -> dict`` for each method in turn, each
    announced and reported on its own stdout line, so that the parent knows which method a time-out
    or a crash belongs to. A ValueError (the method declares it does not apply to this problem) is
    recorded as ``{"completed": False, "reason": ...}``; nothing is tried after it for that method."""
    out = {}
    for name in names:
        _emit({"__start__": name})
        t0 = time.perf_counter()
        try:
            rec = dict(measure(name), completed=True)
        except ValueError as err:
            rec = {"completed": False, "reason": f"not applicable: {err}".splitlines()[0][:300]}
        rec.update(wall_s=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb())
        _emit({"__done__": name, "record": rec})
        out[name] = rec
    return out


def _read_lines(proc, limit_of, on_line) -> str | None:
    """Feed ``proc``'s stdout lines to ``on_line`` until EOF; kill it and return a reason when the
    current deadline (``limit_of()`` → (seconds, what), renewed at every line) passes."""
    fd = proc.stdout.fileno()
    buf = b""
    last = time.perf_counter()
    while True:
        seconds, what = limit_of()
        wait = seconds - (time.perf_counter() - last)
        ready, _, _ = select.select([fd], [], [], max(wait, 0.0))
        if not ready:
            proc.kill()
            proc.wait()
            return f"over the {seconds:.0f} s time limit ({what})"
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            last = time.perf_counter()
            on_line(line.decode("utf-8", "replace"))


def run_methods(script: str, case: str, kwargs: dict, names, threads: int | None, *, budget_s: float,
                memory_gib: float, setup_s: float = 1800.0, log=None) -> tuple[dict, dict]:
    """Run ``case(methods_=names, **kwargs)`` of ``script`` in a fresh Python under an address-space
    limit of ``memory_gib``; the case measures each method with :func:`method_records`.

    A method that runs longer than ``budget_s`` (its whole measurement: warm-up, repeats, checks) is
    killed, one whose process dies (out of memory, a crash) is recorded with the reason, and the case
    is started again for the methods after it. Returns (the case's own result from the process that
    finished, {method: record}); a record has ``completed`` and, if False, ``reason``."""
    log = log or default_log
    remaining, records, shared = list(names), {}, None
    while shared is None:
        spec = json.dumps({"case": case, "kwargs": {**kwargs, "methods_": remaining}, "blas_threads": threads,
                           "memory_gib": memory_gib})
        state = {"current": None, "final": None}

        def on_line(line):
            try:
                msg = json.loads(line)
            except ValueError:
                return
            if "__start__" in msg:
                state["current"] = msg["__start__"]
            elif "__done__" in msg:
                records[msg["__done__"]] = msg["record"]
                state["current"] = None
            else:
                state["final"] = msg

        def limit_of():
            name = state["current"]
            return (budget_s, f"{name}'s budget") if name else (setup_s, "set-up")

        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([sys.executable, os.path.abspath(script), "--case", spec], stdout=subprocess.PIPE,
                                    stderr=err)
            with proc:
                timeout = _read_lines(proc, limit_of, on_line)
                code = proc.wait()
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
        if code == 0 and state["final"] is not None:
            shared = state["final"]
            break
        name = state["current"]
        if name is None:
            raise RuntimeError(f"{case} failed outside any method ({timeout or f'exit {code}'}):\n{stderr[-3000:]}")
        if timeout:
            reason = timeout
        elif any(k in stderr for k in _OOM_MARKERS):
            reason = f"out of memory (address space limited to {memory_gib:.0f} GiB)"
        else:
            tail = stderr.strip().splitlines()
            reason = f"exit {code}: {tail[-1][:200] if tail else ''}"
        records[name] = {"completed": False, "reason": reason}
        log(f"    {name}: did not complete ({reason})")
        remaining = [m for m in remaining if m not in records]
    return shared, {m: records[m] for m in names}


class Sweep:
    """Which methods to try at the next size of a sweep: each method's measurement wall time at the
    previous size, scaled by (size / previous size)^``exponent``, must stay within ``budget_s``; a
    method that did not complete is not tried again. Every skip is recorded with its reason.

    ``exponent`` is a lower bound on how the dominant cost grows, so that no method is skipped that
    could have fitted: 2 for N (every N×N kernel and Gram is at least O(N²); solves are O(N³)), 1 for
    the width (the features are O(M); the kernels from Grams do not grow)."""

    def __init__(self, names, budget_s: float, exponent: float = 2.0):
        self.names, self.budget_s, self.exponent = list(names), float(budget_s), exponent
        self.last: dict = {}  # method -> (size, wall time) of its last completed measurement
        self.failed: dict = {}  # method -> size at which it did not complete

    def plan(self, size) -> tuple[list, dict]:
        """(methods to run at ``size``, {method: record of why it is skipped})."""
        run, skipped = [], {}
        for name in self.names:
            if name in self.failed:
                skipped[name] = {"completed": False, "reason": f"not tried: did not complete at {self.failed[name]}"}
            elif name in self.last and self.last[name][1] * (size / self.last[name][0]) ** self.exponent > self.budget_s:
                s0, t0 = self.last[name]
                skipped[name] = {"completed": False, "reason": f"not tried: {t0:.1f} s at {s0} × ({size}/{s0})^"
                                 f"{self.exponent:g} exceeds the {self.budget_s:.0f} s budget"}
            else:
                run.append(name)
        return run, skipped

    def record(self, size, records: dict) -> None:
        for name, rec in records.items():
            if rec.get("completed"):
                self.last[name] = (size, rec["wall_s"])
            elif not rec.get("reason", "").startswith("not tried"):
                self.failed.setdefault(name, size)


def not_completed(records: dict) -> dict:
    """{method: reason} of the records that did not complete."""
    return {m: r["reason"] for m, r in records.items() if not r["completed"]}


def peak_rss_of(shared: dict, records: dict) -> float:
    """Peak RSS [MiB] over the process(es) of a :func:`run_methods` call (each record carries its own)."""
    return max([shared["peak_rss_mb"]] + [r["peak_rss_mb"] for r in records.values() if "peak_rss_mb" in r])


def merge_point(shared: dict, records: dict, keys) -> dict:
    """One point of a sweep: the case's own result, {method: value} for each of ``keys`` over the methods
    that completed, the peak RSS of the process(es) and :func:`not_completed`."""
    done = {m: r for m, r in records.items() if r["completed"]}
    return {**shared, **{k: {m: r[k] for m, r in done.items()} for k in keys},
            "peak_rss_mb": peak_rss_of(shared, records), "not_completed": not_completed(records)}


def sweep_points(script: str, case: str, sizes, kwargs_of, names, keys, threads, *, budget_s: float,
                 memory_gib: float, exponent: float | None = None, log=None) -> list:
    """A sweep over ``sizes``: one :func:`run_methods` process per size with ``case(**kwargs_of(size))``;
    with ``exponent`` the methods of each size are planned by :class:`Sweep`, else every method runs at
    every size. Returns the :func:`merge_point` of each size."""
    log = log or default_log
    sweep = Sweep(names, budget_s, exponent) if exponent is not None else None
    pts = []
    for size in sizes:
        run, skipped = sweep.plan(size) if sweep else (list(names), {})
        kwargs = kwargs_of(size)
        log(f"  {case}: " + ", ".join(f"{k}={v}" for k, v in kwargs.items() if k in ("n", "width"))
            + f" ({len(run)} methods; subprocess)")
        shared, records = run_methods(script, case, kwargs, run, threads, budget_s=budget_s, memory_gib=memory_gib,
                                      log=log)
        if sweep:
            sweep.record(size, records)
        pts.append(merge_point(shared, {**records, **skipped}, keys))
    return pts
