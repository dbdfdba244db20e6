"""What the paper's configs cost: measured time per training step of every teacher and teacher→student pair,
scaled to the config's grid (epochs × steps × runs), per stage.

    .venv/bin/python bench/cost.py --config config/cifar100.yaml [--steps 3] [--out docs/cost.md] [--pack N|best]

Steps are timed on the machine at hand (device as the config's runtime.device resolves, batch size and image
size as the config says; random data, which costs the same as real data). A student step is its KD step: one
student forward/backward and one teacher forward; other frameworks add their heads (CRD and ReviewKD the most).

`--pack N` adds the cost with N training jobs sharing each GPU (`profiles/local`'s gpu slots, or N jobs per SLURM
GPU allocation): N processes run the same step loop at the same time (started together at a barrier, job by job),
each job's step time is the mean of their median step times, MEASURED that way, and its GPU-hours are that step
time × steps / N. `--pack best` takes N from the best packing `bench/gpu.py` measured (docs/benchmarks-gpu.json).
Without --pack (or with 1) the report is the one-job-per-GPU report alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from mcmikd.config import load_grid
from mcmikd.datasets import get_dataset
from mcmikd.engine import Runtime
from mcmikd.models import create_model

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(student: str, teacher: str | None, runtime: Runtime, batch: int, classes: int, size: int,
                 channels: int, steps: int) -> float:
    model = runtime.prepare(create_model(student, classes, channels)).train()
    frozen = runtime.prepare(create_model(teacher, classes, channels)).eval() if teacher else None
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, channels, size, size, device=runtime.device)
    y = torch.randint(0, classes, (batch,), device=runtime.device)
    times = []
    for i in range(steps + 1):
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with runtime.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if frozen is not None:
                with torch.no_grad():
                    t_logits = frozen(x)
                loss = loss + F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(t_logits / 4, 1), reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _packed_worker(index: int, jobs: list, runtime_cfg: dict, threads: int, shape: tuple, steps: int,
                   barrier, queue) -> None:
    runtime = Runtime.from_config(runtime_cfg, threads)
    for j, (student, teacher, batch) in enumerate(jobs):
        barrier.wait()  # the N loops of a job start together
        queue.put((index, j, step_seconds(student, teacher, runtime, batch, *shape, steps)))


def packed_step_seconds(jobs: list[tuple[str, str | None, int]], runtime_cfg: dict, threads: int, n: int,
                        shape: tuple[int, int, int], steps: int) -> list[float]:
    """Per job (student, teacher or None, batch size): its step time in seconds while n copies of it train at
    once on the device, measured with n processes (spawned, one runtime each, `threads` torch threads each)
    running `step_seconds` together; the mean over the processes of each one's median. `shape` is
    (classes, image size, channels). Raises RuntimeError when a process fails."""
    ctx = mp.get_context("spawn")  # a fresh CUDA context per process (a forked one cannot use CUDA)
    barrier, queue = ctx.Barrier(n, timeout=900), ctx.Queue()
    procs = [ctx.Process(target=_packed_worker, args=(i, jobs, runtime_cfg, threads, shape, steps, barrier, queue))
             for i in range(n)]
    for proc in procs:
        proc.start()
    times: dict[int, list[float]] = {j: [] for j in range(len(jobs))}
    try:
        for _ in range(n * len(jobs)):
            while True:
                try:
                    _, j, sec = queue.get(timeout=5)
                    break
                except Exception:  # queue.Empty: check that every process is still alive
                    if any(proc.exitcode not in (None, 0) for proc in procs):
                        raise RuntimeError("a packed step loop failed (its traceback is above)") from None
            times[j].append(sec)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    return [statistics.mean(times[j]) for j in range(len(jobs))]


def best_pack(path: Path) -> int:
    """The packing (jobs per GPU) with the highest aggregate throughput that `bench/gpu.py` measured."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        raise SystemExit(f"--pack best: no readable {path}; run bench/gpu.py on the GPU first, or pass --pack N")
    if report.get("smoke") or not report.get("best_pack"):
        raise SystemExit(f"--pack best: {path} holds no packed GPU measurement; run bench/gpu.py on the GPU")
    return int(report["best_pack"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "config" / "cifar100.yaml"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out")
    parser.add_argument("--pack", default="1", help="also the cost with N jobs per GPU, step times measured with "
                        "N concurrent step loops; 'best': N from --gpu-report (bench/gpu.py's measurement)")
    parser.add_argument("--gpu-report", default=str(ROOT / "docs" / "benchmarks-gpu.json"),
                        help="the JSON bench/gpu.py writes (for --pack best)")
    args = parser.parse_args()
    pack = best_pack(Path(args.gpu_report)) if args.pack == "best" else int(args.pack)
    if pack < 1:
        parser.error("--pack must be ≥ 1")
    config = yaml.safe_load(Path(args.config).read_text())
    grid = load_grid(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    runtime = Runtime.from_config(grid.config["runtime"], args.threads)
    ds = grid.config["dataset"]
    spec = get_dataset(ds["name"])
    classes, channels, size = spec.shape(ds)
    n_train = spec.num_train(ds) or 50000
    t_cfg, f_cfg, s_cfg = grid.config["teachers"]["training"], grid.config["teachers"]["finetuning"], \
        grid.config["students"]["training"]
    steps_per_epoch = lambda batch: -(-n_train // batch)  # noqa: E731

    device = str(runtime.device) + (f" ({torch.cuda.get_device_name(runtime.device)})"
                                    if runtime.device.type == "cuda" else f" ({platform.processor() or platform.machine()}, "
                                    f"{args.threads} threads)")
    stages = ("teachers from scratch", "fine-tuned teachers", "students")
    rows, totals = [], {k: 0.0 for k in stages}
    packed_totals = {k: 0.0 for k in stages}
    teacher_jobs = [(arch, None, t_cfg["batch_size"]) for arch in sorted(grid.teachers)]
    by_pair: dict[tuple[str, str], int] = {}
    for run in grid.all_runs():
        key = (run.t_arch, run.student)
        by_pair[key] = by_pair.get(key, 0) + 1
    pairs = sorted(by_pair.items())
    student_jobs = [(s_arch, None if t_arch == "none" else t_arch, s_cfg["batch_size"]) for (t_arch, s_arch), _ in pairs]
    jobs = teacher_jobs + student_jobs
    single = [step_seconds(student, teacher, runtime, batch, classes, size, channels, args.steps)
              for student, teacher, batch in jobs]
    packed = (packed_step_seconds(jobs, grid.config["runtime"], max(1, args.threads // pack), pack,
                                  (classes, size, channels), args.steps) if pack > 1 else [None] * len(jobs))
    for (arch, _, _), sec, psec in zip(teacher_jobs, single, packed):
        variants = grid.teachers[arch]
        tuned = sum(grid.start_variant(arch, v) is not None for v in variants)
        seeds = len(grid.teacher_seeds())  # every teacher variant is trained once per teacher seed
        row = f"| teacher {arch} |"
        for step, share, total in ((sec, 1, totals), (psec, pack, packed_totals)):
            if step is None:
                continue
            scratch = seeds * (len(variants) - tuned) * step * steps_per_epoch(t_cfg["batch_size"]) * t_cfg["epochs"] / 3600
            finetune = seeds * tuned * step * steps_per_epoch(f_cfg["batch_size"]) * f_cfg["epochs"] / 3600
            scratch, finetune = scratch / share, finetune / share
            total["teachers from scratch"] += scratch
            total["fine-tuned teachers"] += finetune
            row += (f" {1000 * step:.0f} ms | {scratch:.2f} h (from scratch, {len(variants) - tuned}× {seeds} seeds) + "
                    f"{finetune:.2f} h (fine-tuned, {tuned}× {seeds} seeds) |")
        rows.append(row)
    for ((t_arch, s_arch), count), sec, psec in zip(pairs, single[len(teacher_jobs):], packed[len(teacher_jobs):]):
        row = f"| {t_arch} → {s_arch}: {count} student runs |"
        for step, share, total in ((sec, 1, totals), (psec, pack, packed_totals)):
            if step is None:
                continue
            hours = step * steps_per_epoch(s_cfg["batch_size"]) * s_cfg["epochs"] * count / 3600 / share
            total["students"] += hours
            row += f" {1000 * step:.0f} ms | {hours:.1f} h |"
        rows.append(row)
    config_name = os.path.relpath(args.config, ROOT) if Path(args.config).is_absolute() else args.config
    packed_cmd = f" --pack {args.pack}" if pack > 1 else ""
    lines = [f"Cost of `{Path(args.config).name}` measured on {device}, batch sizes and epochs of the config "
             f"(`bench/cost.py --config {config_name}{packed_cmd}`):", ""]
    if pack == 1:
        lines += ["| job | time per step | total |", "|---|---|---|", *rows, "",
                  "| stage | hours |", "|---|---|", *[f"| {k} | {v:.1f} |" for k, v in totals.items()],
                  f"| **all** | **{sum(totals.values()):.1f}** |"]
    else:
        lines += [f"One job per GPU, and {pack} jobs per GPU: {pack} step loops of the same job run at once on the "
                  f"device, each job's step time is measured that way, and a job costs its step time × steps / "
                  f"{pack} GPU-hours (hours of the device measured on).", "",
                  f"| job | time per step | total, one job per GPU | time per step, {pack} at once | "
                  f"total, {pack} jobs per GPU |", "|---|---|---|---|---|", *rows, "",
                  f"| stage | hours, one job per GPU | hours, {pack} jobs per GPU |", "|---|---|---|",
                  *[f"| {k} | {totals[k]:.1f} | {packed_totals[k]:.1f} |" for k in stages],
                  f"| **all** | **{sum(totals.values()):.1f}** | **{sum(packed_totals.values()):.1f}** |"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
