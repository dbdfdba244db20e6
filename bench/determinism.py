"""Exact reruns and exact resume on the machine at hand (the device check of `runtime.deterministic: true`).

    .venv/bin/python bench/determinism.py [--device cuda] [--epochs 3] [--compile graphs] \
        [--out docs/determinism-cuda.md]

On digits (8×8, the tiny test config's recipe), for an MLL teacher, its MCMI fine-tuning and students of kd, crd, at
and reviewkd: each job runs twice from scratch and once killed after its first epoch and resumed, and the script
compares the per-epoch records (losses, accuracies, CMI) and the final weights of the three runs bit for bit.
Prints a table and exits 1 when any run differs. Takes about a minute on a GPU, a few on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from mcmikd.datasets.digits import load_digits
from mcmikd.jobs import common
from mcmikd.jobs.student import train_student
from mcmikd.jobs.teacher import train_teacher

METHODS = {"kd": {"gamma": 0.1, "alpha": 0.9, "temperature": 4}, "crd": {}, "at": {}, "reviewkd": {"warmup": 1}}


def comparable(metrics_path: Path) -> str:
    m = json.loads(metrics_path.read_text())
    records = [{k: r.get(k) for k in ("phase", "epoch", "train", "train_acc", "test_acc", "test_loss", "test_cmi")}
               for r in m["history"]]
    return json.dumps({"history": records, "confusion": m["confusion_last"]}, sort_keys=True)


def killed_after_first_epoch(run, resume: str) -> None:
    """Run `run()` with evaluation raising KeyboardInterrupt in epoch 2 (as a kill would), then run it again: it
    must resume from the epoch checkpoint the interrupted run left."""
    real, calls = common.evaluate, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    common.evaluate = dying
    try:
        run()
    except KeyboardInterrupt:
        pass
    finally:
        common.evaluate = real
    if not Path(resume).exists():
        raise SystemExit(f"the interrupted run left no epoch checkpoint {resume}")
    run()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--compile", default="none", choices=["none", "graphs", "auto"], help="runtime.compile")
    parser.add_argument("--out")
    args = parser.parse_args()
    runtime = {"device": args.device, "channels_last": "auto", "precision": "fp32", "deterministic": True,
               "compile": args.compile}
    recipe = {"epochs": args.epochs, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
              "schedule": "multistep", "milestones": [args.epochs - 1], "gamma": 0.1}
    augment = {"crop_padding": 1, "hflip": False}
    work = Path(tempfile.mkdtemp(prefix="determinism-"))
    data = work / "data.pt"
    load_digits(image_size=8).to_file(data)
    mll = {"arch": "resnet8", "objective": "mll", "variant": "mll", "hp": {}, "seed": 0, "recipe": recipe,
           "checkpoint": "last", "augment": augment, "runtime": runtime}
    mcmi = {**mll, "objective": "mcmi", "variant": "mcmi-0.25", "hp": {"lambda": 0.25, "centroids": "eval"},
            "recipe": {**recipe, "schedule": "cosine", "lr": 0.01}, "collapse_ratio": 0.5}
    teacher_dir = work / "teacher"
    teacher_dir.mkdir()
    jobs = {"teacher mll": lambda out, resume: train_teacher(str(data), mll, str(out.with_suffix(".pt")), str(out),
                                                             resume_path=resume),
            "teacher mcmi": lambda out, resume: train_teacher(
                str(data), mcmi, str(out.with_suffix(".pt")), str(out), start_model=str(teacher_dir / "m.pt"),
                start_metrics=str(teacher_dir / "m.json"), resume_path=resume)}
    for method, hp in METHODS.items():
        params = {"teacher": {"arch": "resnet8", "objective": "mll", "variant": "mll"}, "student": "resnet8",
                  "method": method, "hp": hp, "recipe": recipe, "setting": {}, "seed": 1, "augment": augment,
                  "runtime": runtime}
        jobs[f"student {method}"] = (lambda p: lambda out, resume: train_student(
            str(data), p, str(out), str(teacher_dir / "m.pt"), str(teacher_dir / "m.json"), resume_path=resume))(params)
    train_teacher(str(data), mll, str(teacher_dir / "m.pt"), str(teacher_dir / "m.json"))
    rows, failed = [], False
    for name, job in jobs.items():
        runs = {}
        for label in ("first", "second", "resumed"):
            out = work / f"{name.replace(' ', '_')}.{label}.json"
            resume = str(out.with_name(f".{out.name}.resume.pt"))
            if label == "resumed":
                killed_after_first_epoch(lambda: job(out, resume), resume)  # noqa: B023 (called within this iteration)
            else:
                job(out, resume)
            runs[label] = comparable(out)
        same_rerun, same_resume = runs["first"] == runs["second"], runs["first"] == runs["resumed"]
        failed |= not (same_rerun and same_resume)
        rows.append(f"| {name} | {'identical' if same_rerun else 'DIFFERENT'} | "
                    f"{'identical' if same_resume else 'DIFFERENT'} |")
    device = common.Runtime.from_config(runtime).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    text = "\n".join([f"Exact reruns on {device} ({name}), torch {torch.__version__}, `runtime.deterministic: true`, "
                      f"`runtime.compile: {args.compile}`, {args.epochs} epochs "
                      f"(`bench/determinism.py --device {args.device} --compile {args.compile}`):", "",
                      "| job | second run from scratch | killed after epoch 1, resumed |", "|---|---|---|",
                      *rows]) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
