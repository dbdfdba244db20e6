"""Workflow benchmarks (not tests): wall time of the default run, of a no-op rerun, per-job start-up overhead,
and how fast Snakemake plans the paper's CIFAR-100 grid.

    .venv/bin/python bench/benchmark.py [--skip-run] [--cores 2]

It runs the real Snakefile in a fresh temporary directory (or `--workdir DIR`, kept) with config/config.yaml, so
results/ of the checkout is untouched, and prints a Markdown report; `--out FILE` also writes it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(workdir: Path, config: Path, *args: str) -> tuple[float, str]:
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout + proc.stderr


def job_overheads(workdir: Path, name: str) -> list[float]:
    """Per training job: Snakemake's measured wall time minus the time the job's own code reports."""
    overheads = []
    for bench in (workdir / "benchmarks" / name).rglob("*.tsv"):
        rel = bench.relative_to(workdir / "benchmarks" / name)
        rule = rel.parts[0]
        if rule == "train_student":
            result = workdir / "results" / name / "students" / rel.parent.relative_to(rule) / (rel.stem + ".json")
        elif rule in ("train_teacher", "finetune_teacher"):  # benchmarks/<name>/<rule>/<arch>.<variant>.tsv
            arch, variant = rel.stem.split(".", 1)
            result = workdir / "results" / name / "teachers" / arch / variant / "metrics.json"
        else:
            continue
        if not result.exists():
            continue
        with open(bench) as handle:
            wall = float(next(csv.DictReader(handle, delimiter="\t"))["s"])
        inner = json.loads(result.read_text())["provenance"].get("wall_time_s")
        if inner:
            overheads.append(wall - inner)
    return overheads


def import_time() -> float:
    code = "import time; t = time.perf_counter(); import torch, mcmikd.jobs.student; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
            for _ in range(3)]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cores", default="2")
    parser.add_argument("--skip-run", action="store_true", help="only the planning benchmarks")
    parser.add_argument("--out")
    parser.add_argument("--workdir", help="run here (kept afterwards) instead of in a temporary directory")
    args = parser.parse_args()
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}; `{' '.join(sys.argv)}`", ""]
    if not args.skip_run:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.workdir or tmp)
            work.mkdir(parents=True, exist_ok=True)
            config = ROOT / "config" / "config.yaml"
            full, log = snakemake(work, config, "--cores", args.cores)
            jobs = log.count("Finished jobid")
            report, _ = snakemake(work, config, "--cores", args.cores, "--report", str(work / "report.html"))
            noop, log2 = snakemake(work, config, "--cores", args.cores)
            assert "Nothing to be done" in log2
            overheads = job_overheads(work, "digits")
            lines += [
                "| measurement | value |", "|---|---|",
                f"| default run (`snakemake --cores {args.cores}`, config/config.yaml, {jobs} jobs) | {full:.0f} s |",
                f"| HTML report (`--report`) | {report:.1f} s |",
                f"| no-op rerun right after | {noop:.1f} s |",
                f"| per-job start-up overhead (wall − job's own time), median over {len(overheads)} training jobs "
                f"| {statistics.median(overheads):.1f} s |" if overheads else "| per-job overhead | n/a |",
                f"| of which `import torch, mcmikd.jobs.student` | {import_time():.1f} s |",
            ]
    with tempfile.TemporaryDirectory() as tmp:
        plan, log = snakemake(Path(tmp), ROOT / "config" / "cifar100.yaml", "-n", "--quiet", "rules")
        total = next((line.split()[-1] for line in log.splitlines() if line.startswith("total")), "?")
        if args.skip_run:
            lines += ["| measurement | value |", "|---|---|"]
        lines.append(f"| dry run of config/cifar100.yaml ({total} jobs) | {plan:.1f} s |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
