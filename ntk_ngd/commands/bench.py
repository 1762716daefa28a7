"""`ntk-ngd bench`: run the benchmark scripts of the repository's ``benchmarks/`` folder and print
their ratio tables.

The scripts are not a package: each ``benchmarks/bench_NAME.py`` is loaded by file path. A
script that defines ``run(quick: bool, out_dir) -> dict`` (keys ``table``, ``ok``, ``png``,
``json``, ``targets``, ``ratios``, ``wall_time_s``) is called in this process; one without it
(``bench_kernels.py`` at the time of writing) is run as ``python bench_NAME.py [--quick]
--out-dir OUT`` in a subprocess and its standard output is taken as its table (exit status 0
counts as ok). Every benchmark writes OUT/bench_NAME.png and OUT/bench_NAME.json.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

from .. import progress as _progress
from ._common import add_profile_flags, add_progress_flag, emit

#: Benchmarks in the order they run (benchmarks/bench_NAME.py).
BENCHMARKS = ("kernels", "methods", "dynamics", "training", "continual")


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the benchmarks of benchmarks/ (ratios measured side by side)",
                       description="Run benchmarks/bench_{kernels,methods,dynamics,training,continual}.py, one progress "
                       "line each, and print their ratio tables. Each writes OUT/bench_NAME.png and "
                       "OUT/bench_NAME.json. The full profile (default) took 1.4 h on 2 CPU cores (2026-11-23); "
                       "--quick takes minutes.")
    add_profile_flags(p, quick="smaller sizes (minutes)", full="the full sizes (default; N up to 8192, widths up to 8192)",
                      tiny="smoke-test sizes (numbers meaningless)")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"subset of: {', '.join(BENCHMARKS)}")
    p.add_argument("--out", default="figures", help="output folder (default figures/)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of the tables")
    p.add_argument("--blas-threads", default="auto",
                   help="OpenBLAS threads for the eigendecompositions: 'auto' (1 when the load average exceeds "
                   "the core count: multithreaded OpenBLAS is ~30x slower on an oversubscribed machine), "
                   "'default', or an integer")
    p.add_argument("--dir", default=None, help="benchmarks folder (default: the repository's benchmarks/)")
    add_progress_flag(p)
    p.set_defaults(func=run, profile="full")


def benchmarks_dir(path: str | None = None) -> Path:
    """The folder holding bench_*.py: ``path`` or the source checkout's benchmarks/."""
    folder = Path(path) if path else Path(__file__).resolve().parents[2] / "benchmarks"
    if not folder.is_dir():
        raise ValueError(f"benchmarks folder not found at {folder}; run from a source checkout of ntk-ngd "
                         "(pip install -e .) or pass --dir")
    return folder


def selected(only) -> list[str]:
    if not only:
        return list(BENCHMARKS)
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    names = [n[len("bench_"):] if n.startswith("bench_") else n for n in names]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; choose from: {', '.join(BENCHMARKS)}")
    return list(dict.fromkeys(names))


def load_script(path: Path):
    """Import benchmarks/bench_NAME.py by file path (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_ntk_ngd_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_in_process(module, profile: str, out_dir: str, blas_threads: str, quiet: bool) -> dict:
    params = inspect.signature(module.run).parameters
    kwargs = {"quick": profile != "full", "out_dir": out_dir}
    if "profile" in params:
        kwargs["profile"] = profile
    if "blas_threads" in params:
        kwargs["blas_threads"] = blas_threads
    if "log" in params and quiet:
        kwargs["log"] = lambda *a: None
    out = dict(module.run(**kwargs))
    out.setdefault("ok", True)
    out["runner"] = "run()"
    return out


def _run_subprocess(path: Path, profile: str, out_dir: str) -> dict:
    cmd = [sys.executable, str(path), "--out-dir", out_dir] + ([] if profile == "full" else ["--quick"])
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    name = path.stem
    return {"name": name, "runner": "subprocess (the script has no run(quick, out_dir))",
            "command": " ".join(cmd), "ok": proc.returncode == 0, "returncode": proc.returncode,
            "table": proc.stdout.strip() + ("" if proc.returncode == 0 else "\n" + proc.stderr.strip()[-3000:]),
            "png": os.path.join(out_dir, f"{name}.png"), "json": os.path.join(out_dir, f"{name}.json"),
            "wall_time_s": time.perf_counter() - start}


def check_blas_threads(value: str) -> str:
    if value in ("auto", "default"):
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--blas-threads must be 'auto', 'default' or an integer >= 1, got {value!r}")
    return str(n)


def run(args) -> int:
    names = selected(args.only)
    args.blas_threads = check_blas_threads(args.blas_threads)
    folder = benchmarks_dir(args.dir)
    paths = [folder / f"bench_{n}.py" for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"benchmark script(s) not found: {', '.join(missing)}")
    os.makedirs(args.out, exist_ok=True)
    progress = _progress.from_args(args, "bench", len(paths))
    results = []
    start = time.perf_counter()
    for name, path in zip(names, paths):
        progress.note(f"{name}: running ({args.profile} profile) ...")
        progress.start()
        t0 = time.perf_counter()
        try:
            module = load_script(path)
            if callable(getattr(module, "run", None)):
                out = _run_in_process(module, args.profile, args.out, args.blas_threads, args.json)
            else:
                out = _run_subprocess(path, args.profile, args.out)
        except Exception as err:  # a crashing benchmark is reported, the others still run
            out = {"name": f"bench_{name}", "ok": False, "error": f"{type(err).__name__}: {err}",
                   "table": f"FAILED: {type(err).__name__}: {err}"}
        out["wall_time_s"] = time.perf_counter() - t0
        results.append(out)
        progress.done(name, f"{'ok' if out['ok'] else 'FAILED'}, {out.get('runner', 'error')}")
        if not args.json:
            print(f"\n=== bench_{name} ===\n{out.get('table', '')}\n", flush=True)
    total = time.perf_counter() - start
    failed = [r.get("name", "?") for r in results if not r["ok"]]
    payload = {"profile": args.profile, "out": args.out, "wall_time_s": total, "load_average_end": os.getloadavg(),
               "benchmarks": results}
    emit(args, payload, f"{len(results)} benchmark(s) in {total:.0f} s; figures in {args.out}/"
         + (f"; FAILED: {', '.join(failed)}" if failed else "; every correctness check passed"))
    return 1 if failed else 0
