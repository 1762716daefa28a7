"""Run experiments and write figures/REPORT.md (claims, measured vs theory, status, controls, coverage)."""
from __future__ import annotations

import json
import os
import sys
import time

from . import EXPERIMENTS, PROFILES, available, load
from ._base import ExperimentResult, audit


def run_experiments(names, profile: str = "quick", out_dir: str = "figures", log=print,
                    progress=None, jobs: int = 1) -> list[ExperimentResult]:
    """Run the named figures (all by default); ``log(line)`` gets one line per finished figure, and so does
    ``progress`` (a :class:`ntk_ngd.progress.Progress`: ``progress(name, detail)``) when given.

    ``jobs`` > 1 runs the figures in that many worker processes (spawned: each its own jax runtime, so one
    figure's compilations and threads never touch another's numbers), longest first by the wall time the
    previous run of this profile recorded in ``out_dir`` (:func:`_longest_first`); the results come back in
    the order of ``names``. Most of a quick figure's time is single-threaded (XLA compilation was 40 % of
    cross_entropy's), so two processes use two cores where one process uses about one."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer (worker processes), got {jobs!r}")
    names = list(names) if names else list(available())
    for name in names:
        load(name)  # validates every name before any work starts
    os.makedirs(out_dir, exist_ok=True)

    def done(result):
        counts = _status_counts(result.checks)
        for defect in audit(result.checks):
            log(f"  DEFECT {result.name}: {defect}")
        verdict = "ok" if result.passed else "FAIL"
        log(f"[{verdict}] {result.name:<18} {result.wall_time:7.1f} s  {counts}  {result.summary}")
        if progress is not None:
            progress(result.name, f"{verdict}; {counts}; {result.summary}")
        return result

    if jobs == 1 or len(names) == 1:
        return [done(run_one(name, profile, out_dir)) for name in names]
    import concurrent.futures
    import multiprocessing

    by_name = {}
    with concurrent.futures.ProcessPoolExecutor(min(jobs, len(names)),
                                                mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, name, profile, out_dir) for name in _longest_first(names, profile, out_dir)]
        for future in concurrent.futures.as_completed(futures):
            result = done(future.result())
            by_name[result.name] = result
    return [by_name[name] for name in names]


def run_one(name: str, profile: str, out_dir: str) -> ExperimentResult:
    """Run one figure at ``profile`` into ``out_dir`` and record its checks, profile and wall time in its JSON."""
    module = load(name)
    start = time.perf_counter()
    result = module.run(dict(module.PROFILES[profile]), out_dir)
    result.wall_time = time.perf_counter() - start
    _record_checks(result, profile)
    return result


def _longest_first(names, profile: str, out_dir: str) -> list[str]:
    """``names`` by decreasing wall time of the last run of ``profile`` recorded in ``out_dir`` (unrecorded
    first: unknown cost), so the longest figures start first and the pool's finish is not one late long job."""
    def last(name):
        path = os.path.join(out_dir, f"{name}.json")
        try:
            with open(path, encoding="utf-8") as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            return float("inf")
        return record.get("wall_time_s", float("inf")) if record.get("profile") == profile else float("inf")

    return sorted(names, key=last, reverse=True)


def figure_files(out_dir: str = "figures") -> tuple[str, ...]:
    """The PNG files a full run writes in ``out_dir``: one per experiment of EXPERIMENTS
    (:func:`ntk_ngd.plotting.paths`)."""
    from ..plotting import paths

    return tuple(paths(name, out_dir)[0] for name in EXPERIMENTS)


def _record_checks(result: ExperimentResult, profile: str) -> None:
    """Add the claims, their verdicts, the profile and the wall time to the figure's JSON."""
    with open(result.json, encoding="utf-8") as fh:
        record = json.load(fh)
    record["checks"] = [c.as_dict() for c in result.checks]
    record["method_coverage"] = [cov.as_dict(result.checks) for cov in result.coverage]
    record["defects"] = audit(result.checks)
    record["passed"] = result.passed
    record["profile"] = profile
    record["wall_time_s"] = result.wall_time
    with open(result.json, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, allow_nan=False)
        fh.write("\n")


def _status_counts(checks) -> str:
    from ._base import STATUSES

    def status(c):
        kind = c.kind if hasattr(c, "kind") else c.get("kind", "evidence")
        if kind != "evidence":
            return "identity"
        return c.status if hasattr(c, "status") else c.get("status", "holds" if c["passed"] else "fails")

    statuses = [status(c) for c in checks]
    return ", ".join(f"{statuses.count(s)} {s}" for s in (*STATUSES, "identity") if statuses.count(s))


def _records(out_dir: str) -> list[dict]:
    """Every figure JSON in ``out_dir`` written by this runner, in the order of EXPERIMENTS."""
    records = []
    for name in EXPERIMENTS:
        path = os.path.join(out_dir, f"{name}.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                record = json.load(fh)
            if "checks" in record:
                records.append(record)
    return records


def _number(x) -> str:
    return x if isinstance(x, str) else ("-" if x is None else f"{x:.6g}")


def _cell(text) -> str:
    """A markdown table cell: pipes inside the text (|x|, ||K||) escaped."""
    return str(text).replace("|", "\\|")


def _status_of(c: dict) -> str:
    return c.get("status", "holds" if c["passed"] else "fails")


def report_markdown(out_dir: str, total_time: float) -> str:
    """REPORT.md from the figure JSONs present in ``out_dir`` (so `--only` runs keep it complete)."""
    from ._base import CONTROL_KINDS, STATUSES

    records = _records(out_dir)
    checks = [c for r in records for c in r["checks"]]
    evidence = [c for c in checks if c.get("kind", "evidence") == "evidence"]
    counts = ", ".join(f"**{sum(_status_of(c) == s for c in evidence)} {s}**" for s in STATUSES)
    identities = len(checks) - len(evidence)
    controls = [k for c in checks for k in c.get("controls", [])]
    by_kind = ", ".join(f"{sum(k.get('kind') == kind for k in controls)} {kind}" for kind in CONTROL_KINDS)
    unlabelled = sum(k.get("kind") not in CONTROL_KINDS for k in controls)
    lines = [
        "# ntk-ngd figure report",
        "",
        f"{len(records)} figures, {len(evidence)} claims: {counts}, **{identities} identity** (sanity rows, not "
        f"counted as evidence). {len(controls)} negative controls ({by_kind}"
        + (f", {unlabelled} without a kind" if unlabelled else "")
        + f"), {sum(k['failed'] for k in controls)} of them failed as they must. "
        f"The figures took {sum(r.get('wall_time_s') or 0 for r in records):.0f} s together (wall time per figure below; "
        f"the last `ntk-ngd figures` call took {total_time:.0f} s).",
        "",
        "Every row is a claim of docs/THEORY.md checked numerically: the measured number, the theoretical one "
        "(derived independently of the code that measures), the tolerance and the error model that fixed it "
        "before the run, and the status: *holds* (theory predicts it, measured agrees), *breaks as predicted* "
        "(a named condition fails and the predicted magnitude is met), *unpredicted* (docs/THEORY.md says nothing: "
        "the number is shown, no verdict), *unresolved* (theory predicts it but this profile cannot resolve it: the "
        "tolerance says what would), *fails* (the measurement contradicts the prediction: a finding recorded in "
        "docs/THEORY.md, linked); *identity* rows restate a computation through a shared formula. Negative "
        "controls run the same check on an input where the claim does not hold, each of a stated kind (another "
        "method, a broken condition, a wrong theory, other data); each must fail. The rules: docs/THEORY.md "
        "\"Verification\". The numbers behind each figure, its configuration and the software versions are in its "
        "JSON file.",
        "",
    ]
    for r in records:
        lines += [f"## {r['name']}", "", f"![{r['name']}]({r['name']}.png)", "",
                  f"Profile `{r.get('profile', '?')}`, {r.get('wall_time_s') or 0:.0f} s. "
                  f"Data: [{r['name']}.json]({r['name']}.json).", "",
                  ]
        for cov in r.get("method_coverage", []):
            skipped = "; ".join(f"{m} ({why})" for m, why in cov["skipped"].items()) or "none"
            missing = f" **Missing: {', '.join(cov['missing'])}.**" if cov["missing"] else ""
            lines.append(f"- Methods, *{cov['family']}*: {', '.join(cov['covered']) or 'none'}; skipped: {skipped}."
                         + missing)
        if r.get("method_coverage"):
            lines.append("")
        if r.get("defects"):
            lines += [f"**Framework defects** (docs/THEORY.md \"Verification\"): " + "; ".join(r["defects"]), ""]
        lines += ["| claim | measured | theory | tolerance | status | error model | controls |",
                  "|---|---|---|---|---|---|---|"]
        for c in r["checks"]:
            status = _status_of(c)
            if c.get("kind", "evidence") != "evidence":
                status += " (identity)"
            if c.get("finding"):
                status += f" ([finding](../docs/THEORY.md#{c['finding']}))"
            ctrl = "; ".join(f"[{k.get('kind', '?')}] {k['description']}: {_number(k['measured'])} "
                             f"({'fails' if k['failed'] else 'PASSES'})"
                             for k in c.get("controls", [])) or "-"
            cells = (c["claim"], _number(c["measured"]), _number(c["theory"]), c["tolerance"], status,
                     c.get("error_model") or "-", ctrl)
            lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
        lines.append("")
    benches = sorted(f for f in os.listdir(out_dir) if f.startswith("bench_") and f.endswith(".png"))
    if benches:
        lines += ["## Benchmarks", "", "Timings measured side by side in one run (`ntk-ngd bench`); the numbers, "
                  "ratios, machine and load are in each JSON file.", ""]
        for b in benches:
            lines += [f"### {b[:-4]}", "", f"![{b[:-4]}]({b}) — data: [{b[:-4]}.json]({b[:-4]}.json)", ""]
            lines += _bench_targets(os.path.join(out_dir, b[:-4] + ".json"))
    return "\n".join(lines)


def _bench_targets(path: str) -> list[str]:
    """The targets a benchmark JSON states (name, measured value, target, met), as a table."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        record = json.load(fh)
    targets = record.get("data", {}).get("targets") or []
    config = record.get("config", {})
    head = [f"Profile `{config.get('profile', '?')}`, wall {record.get('wall_time_s') or 0:.0f} s, load average at "
            f"start {config.get('load_average_start', '?')} on {config.get('cpu_count', '?')} cores.", ""]
    rows = ["| target | measured | wanted | met |", "|---|---|---|---|"]
    met = {True: "yes", False: "NO", None: "— (no verdict)"}  # None: a number reported without a verdict
    rows += [f"| {t['name']} | {_number(t['value'])} | {t['target']} | {met[t['met']]} |" for t in targets]
    return head + (rows if targets else []) + [""]


def write_report(out_dir, total_time, extra_sections: str = "") -> str:
    path = os.path.join(out_dir, "REPORT.md")
    text = report_markdown(out_dir, total_time)
    if extra_sections:
        text += "\n" + extra_sections
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def main(argv=None, only=None) -> int:
    """Entry point of the scripts in experiments/: ``python experiments/NAME.py --quick|--full``."""
    import argparse

    parser = argparse.ArgumentParser(description=f"Regenerate figure(s) {only or 'all'}")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="profile", action="store_const", const="quick")
    group.add_argument("--full", dest="profile", action="store_const", const="full")
    group.add_argument("--tiny", dest="profile", action="store_const", const="tiny")
    parser.add_argument("--out", default="figures")
    parser.set_defaults(profile="quick")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run_experiments([only] if only else None, args.profile, args.out)
    write_report(args.out, time.perf_counter() - start)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
