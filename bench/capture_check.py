"""Does every method's training step capture as a CUDA graph, and does the captured run compute the eager run's bits?

    .venv/bin/python bench/capture_check.py                        # CUDA: resnet56 → resnet20, CIFAR-100 shapes
    .venv/bin/python bench/capture_check.py --device cpu --small   # CPU smoke (static buffers, no capture)

For every registered method (`mcmikd.distill.METHODS`) and teacher objective (MLL; MCMI with frozen, EMA and
per-epoch centroids; the λ = 0 control), from the same initial weights and the same seed: a short `engine.fit`
(`--epochs` epochs, a learning-rate drop at the last one, so graphs are captured again under a new key; DKD's
warm-up and the two-stage methods' init stages included; a partial last batch; a zero-shot class omitted, so batch
sizes vary) once with `runtime.compile: none` and once with `graphs` (explicit: a step that cannot be captured is
refused, `mcmikd.step.CaptureError`). Per case: the run's `steps` record (graph replays, eager steps and why) and
whether the two runs' histories and final weights are equal bit for bit.

Exits 1 when any case was refused, replayed no graph on CUDA, or differs. Writes a Markdown table to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch

from mcmikd.data import DatasetTensors
from mcmikd.distill import METHODS, get_method
from mcmikd.distill.base import DistillContext
from mcmikd.engine import Recipe, ResumeFile, Runtime, TrainStream, evaluate, fit
from mcmikd.models import create_model, feature_shapes
from mcmikd.teachers import get_objective

TEACHER_CASES = {"mll": ("mll", {}), "mcmi": ("mcmi", {"lambda": 0.25}),
                 "mcmi ema": ("mcmi", {"lambda": 0.25, "centroids": "ema"}),
                 "mcmi per_epoch": ("mcmi", {"lambda": 0.25, "centroids": "per_epoch"}),
                 "control (λ = 0)": ("ce_finetune", {})}
INIT_EPOCHS = 1  # the init stages of AB, FT, FSP and HSAKD, shortened


def make_data(args) -> DatasetTensors:
    classes, size = (10, 8) if args.small else (100, 32)
    n = args.batch * args.steps + args.batch // 4  # a partial last batch
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n + 256, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n + 256) % classes
    return DatasetTensors(name="capture-check", train_images=images[:n], train_labels=labels[:n],
                          test_images=images[n:], test_labels=labels[n:], mean=(0.5,) * 3, std=(0.25,) * 3,
                          class_names=[str(i) for i in range(classes)], hflip=True)


def build(case: str, data: DatasetTensors, runtime: Runtime, args):
    """(training module, network evaluated, stream) of `case`, from seed 0."""
    arch_t, arch_s = ("resnet8", "resnet8") if args.small else (args.teacher, args.student)
    stream = TrainStream(data, runtime, omitted=(3,), padding=1 if args.small else 4, hflip=True)
    torch.manual_seed(0)
    if case in TEACHER_CASES:
        name, hp = TEACHER_CASES[case]
        cls = get_objective(name)
        objective = cls(cls.resolve_hp(hp, arch_t))
        model = runtime.prepare(create_model(arch_t, data.num_classes, 3))
        objective.bind(stream, runtime, data.num_classes)
        state = objective.prepare(model, stream, runtime, data.num_classes, 0)
        return objective.build(model, state), model, stream
    size = data.train_images.shape[-1]
    teacher = runtime.prepare(create_model(arch_t, data.num_classes, 3)).eval()
    ctx = DistillContext(num_classes=data.num_classes, num_train=stream.num_visible,
                         train_labels=stream.visible_labels.to(runtime.device), in_channels=3, image_size=size,
                         epochs=args.epochs, student_shapes=feature_shapes(arch_s, data.num_classes, 3, size),
                         teacher_shapes=feature_shapes(arch_t, data.num_classes, 3, size), student_arch=arch_s,
                         teacher_arch=arch_t)
    cls = get_method(case)
    hp = {"init_epochs": INIT_EPOCHS} if "init_epochs" in cls.defaults else {}
    if case == "dkd":
        hp["warmup"] = args.epochs  # the warm-up weight changes every epoch: a new graph key each time
    student = create_model(arch_s, data.num_classes, 3)
    return runtime.prepare(cls(student, teacher, hp, ctx)), student, stream


def run(case: str, data: DatasetTensors, runtime: Runtime, args):
    module, model, stream = build(case, data, runtime, args)
    recipe = Recipe.from_dict({"epochs": args.epochs, "batch_size": args.batch, "lr": 0.05, "momentum": 0.9,
                               "weight_decay": 5e-4, "schedule": "multistep", "milestones": [args.epochs],
                               "gamma": 0.1})
    result = fit(module, stream, recipe, runtime=runtime, seed=0, resume=ResumeFile(None, ""),
                 evaluator=lambda: evaluate(model, data.test_images, data.test_labels, stream.normalize, runtime,
                                            data.num_classes))
    h = hashlib.sha256(repr([{k: e.get(k) for k in ("phase", "epoch", "train", "train_acc", "test_acc")}
                             for e in result.history]).encode())
    for k, v in sorted(module.checkpoint_state().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16], result.steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--small", action="store_true", help="resnet8 → resnet8 on 8×8 images, 10 classes")
    parser.add_argument("--teacher", default="resnet56")
    parser.add_argument("--student", default="resnet20")
    parser.add_argument("--runtime", default="paper", choices=["paper", "fast"],
                        help="paper: fp32, deterministic; fast: bf16 autocast, not deterministic")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="full batches per epoch (plus a partial one)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cases", default=None, help="comma-separated (default: every method and teacher case)")
    parser.add_argument("--out", default=None, help="Markdown table (default: print only)")
    args = parser.parse_args()
    base = {"device": args.device, "channels_last": "auto"}
    base.update({"precision": "fp32", "deterministic": True} if args.runtime == "paper"
                else {"precision": "bf16", "deterministic": False})
    cases = args.cases.split(",") if args.cases else [*METHODS, *TEACHER_CASES]
    data = make_data(args)
    eager_rt = Runtime.from_config({**base, "compile": "none"}, threads=1 if args.small else None)
    graphs_rt = Runtime.from_config({**base, "compile": "graphs"}, threads=1 if args.small else None)
    cuda = graphs_rt.device.type == "cuda"
    lines = [f"# Capture check ({graphs_rt.device}, {args.runtime} runtime, "
             f"{'resnet8 → resnet8, 8 px' if args.small else f'{args.teacher} → {args.student}, 32 px'}, "
             f"batch {args.batch}, {args.epochs} epochs of {args.steps} + 1 steps)", "",
             f"Command: `python bench/capture_check.py {' '.join(sys.argv[1:])}`; torch {torch.__version__}"
             + (f", {torch.cuda.get_device_name(graphs_rt.device)}" if cuda else ""), "",
             "| case | graph replays | eager steps (why) | captured run = eager run, bit for bit | seconds |",
             "|---|---|---|---|---|"]
    bad = 0
    for case in cases:
        t0 = time.perf_counter()
        try:
            eager, _ = run(case, data, eager_rt, args)
            graphs, steps = run(case, data, graphs_rt, args)
        except Exception as exc:  # a refused capture (CaptureError) or a failure: the case fails, the check goes on
            bad += 1
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            lines.append(f"| {case} | – | – | **{type(exc).__name__}: {first}** | {time.perf_counter() - t0:.1f} |")
            print(lines[-1], flush=True)
            continue
        why = ", ".join(f"{k.removeprefix('eager: ')} {v}" for k, v in steps["eager_why"].items())
        same = eager == graphs
        ok = same and steps["capture_failed"] is None and (steps["graph_replays"] > 0 or not cuda)
        bad += not ok
        lines.append(f"| {case} | {steps['graph_replays']} | {steps['eager_steps']} ({why}) | "
                     f"{'yes' if same else '**no**'}{'' if ok else ' ✗'} | {time.perf_counter() - t0:.1f} |")
        print(lines[-1], flush=True)
    lines += ["", f"{len(cases) - bad} of {len(cases)} cases pass"
              + ("" if cuda else " (CPU: static buffers run eagerly; no capture, so no replays)") + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
