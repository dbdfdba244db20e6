"""What the paper's configs cost: measured time per training step of every teacher and teacher→student pair,
scaled to the config's grid (epochs × steps × runs), per stage.

    .venv/bin/python bench/cost.py --config config/cifar100.yaml [--steps 3] [--out docs/cost.md]

Steps are timed on the machine at hand (device as the config's runtime.device resolves, batch size and image
size as the config says; random data, which costs the same as real data). A student step is its KD step: one
student forward/backward and one teacher forward; other frameworks add their heads (CRD and ReviewKD the most).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "config" / "cifar100.yaml"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out")
    args = parser.parse_args()
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
    rows, totals = [], {"teachers from scratch": 0.0, "fine-tuned teachers": 0.0, "students": 0.0}
    for arch, variants in sorted(grid.teachers.items()):
        sec = step_seconds(arch, None, runtime, t_cfg["batch_size"], classes, size, channels, args.steps)
        tuned = sum(grid.start_variant(arch, v) is not None for v in variants)
        scratch = (len(variants) - tuned) * sec * steps_per_epoch(t_cfg["batch_size"]) * t_cfg["epochs"] / 3600
        finetune = tuned * sec * steps_per_epoch(f_cfg["batch_size"]) * f_cfg["epochs"] / 3600
        totals["teachers from scratch"] += scratch
        totals["fine-tuned teachers"] += finetune
        rows.append(f"| teacher {arch} | {1000 * sec:.0f} ms | {scratch:.2f} h (from scratch, "
                    f"{len(variants) - tuned}×) + {finetune:.2f} h (fine-tuned, {tuned}×) |")
    by_pair: dict[tuple[str, str], int] = {}
    for run in grid.all_runs():
        key = (run.t_arch, run.student)
        by_pair[key] = by_pair.get(key, 0) + 1
    for (t_arch, s_arch), count in sorted(by_pair.items()):
        teacher = None if t_arch == "none" else t_arch
        sec = step_seconds(s_arch, teacher, runtime, s_cfg["batch_size"], classes, size, channels, args.steps)
        hours = sec * steps_per_epoch(s_cfg["batch_size"]) * s_cfg["epochs"] * count / 3600
        totals["students"] += hours
        rows.append(f"| {t_arch} → {s_arch}: {count} student runs | {1000 * sec:.0f} ms | {hours:.1f} h |")
    lines = [f"Cost of `{Path(args.config).name}` measured on {device}, batch sizes and epochs of the config "
             f"(`bench/cost.py --config {Path(args.config).relative_to(ROOT) if Path(args.config).is_absolute() else args.config}`):",
             "", "| job | time per step | total |", "|---|---|---|", *rows, "",
             "| stage | hours |", "|---|---|", *[f"| {k} | {v:.1f} |" for k, v in totals.items()],
             f"| **all** | **{sum(totals.values()):.1f}** |"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
