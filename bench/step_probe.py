"""Times the training step eagerly and as a captured CUDA graph, and checks that both compute the same numbers.

    .venv/bin/python bench/step_probe.py                      # CUDA: resnet56 → resnet20 KD, CIFAR-100 shapes, batch 64
    .venv/bin/python bench/step_probe.py --device cpu --small # CPU smoke test: resnet8 → resnet8 on 8×8 images

The step is `mcmikd.step.StepRunner`'s (the engine's): teacher forward, student forward/backward, KD loss, foreach
SGD (CUDA), loss sums on the device. Random uint8 images on the device go through the engine's batching and
augmentation (`TrainStream`, crop padding 4, flips), so only full batches are timed.

1. Numerics: from the same initial weights, `--check-steps` steps on the same batches with `runtime.compile: none`
   and `graphs`; compares the final student weights and momentum buffers and the summed loss terms bit for bit
   (and prints the largest difference otherwise). On CPU `graphs` means static buffers run eagerly.
2. Speed: per mode, `--warmup` steps (capture happens there), then `--steps` steps timed between device syncs;
   one host read of the sums at the end, as in an epoch. Prints ms per step.
Exits 1 if the numbers differ or the capture failed.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from mcmikd.data import DatasetTensors
from mcmikd.distill import get_method
from mcmikd.distill.base import DistillContext
from mcmikd.engine import Recipe, Runtime, TrainStream, make_generator, make_optimizer
from mcmikd.models import create_model, feature_shapes
from mcmikd.step import StepRunner


def build(args, runtime: Runtime):
    classes, size, arch_t, arch_s = (10, 8, "resnet8", "resnet8") if args.small else (100, 32, "resnet56", "resnet20")
    n = args.batch * max(args.steps + args.warmup, args.check_steps)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    data = DatasetTensors(name="probe", train_images=images, train_labels=labels, test_images=images[:2],
                          test_labels=labels[:2], mean=(0.5,) * 3, std=(0.25,) * 3,
                          class_names=[str(i) for i in range(classes)], hflip=True)
    stream = TrainStream(data, runtime, padding=4 if size >= 32 else 1, hflip=True)
    torch.manual_seed(0)
    teacher = runtime.prepare(create_model(arch_t, classes, 3)).eval()
    student = create_model(arch_s, classes, 3)
    ctx = DistillContext(num_classes=classes, num_train=n, train_labels=labels.to(runtime.device), in_channels=3,
                         image_size=size, epochs=1, student_shapes=feature_shapes(arch_s, classes, 3, size),
                         teacher_shapes=feature_shapes(arch_t, classes, 3, size), student_arch=arch_s,
                         teacher_arch=arch_t)
    hp = {"gamma": 0.1, "alpha": 0.9, "temperature": 4} if args.method == "kd" else {}
    module = runtime.prepare(get_method(args.method)(student, teacher, hp, ctx))
    return module, stream


def batches(stream: TrainStream, batch: int, count: int):
    gen = make_generator(1, stream.device)
    out = []
    while len(out) < count:
        out += [b for b in stream.batches(gen, batch) if len(b[1]) == batch]
    return out[:count], gen


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(module, runtime, mode: str, data, gen, recipe: Recipe):
    optimizer = make_optimizer(module.learnable_parameters(), recipe)
    runner = StepRunner(module, optimizer, runtime, mode=mode)
    module.train()
    runner.start_epoch(1)
    for images, labels, positions in data:
        runner.step(images, labels, positions, gen)
    return runner, optimizer


def state(module, optimizer) -> list[torch.Tensor]:
    tensors = [v.detach().float().cpu() for v in module.checkpoint_state().values() if v.is_floating_point()]
    return tensors + [s["momentum_buffer"].float().cpu() for s in optimizer.state.values() if "momentum_buffer" in s]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--small", action="store_true", help="resnet8 pair on 8×8 images (a CPU smoke test)")
    parser.add_argument("--method", default="kd")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--check-steps", type=int, default=20)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--deterministic", type=int, default=1)
    args = parser.parse_args()
    runtime = Runtime.from_config({"device": args.device, "precision": args.precision,
                                   "deterministic": bool(args.deterministic)})
    recipe = Recipe(epochs=1, batch_size=args.batch)
    module, stream = build(args, runtime)
    initial = copy.deepcopy(module.state_dict())
    failed = False

    # 1. numerics: the same batches, the same start, eager vs graphs
    check, _ = batches(stream, args.batch, args.check_steps)
    results = {}
    for mode in ("none", "graphs"):
        module.load_state_dict(initial)
        gen = make_generator(2, runtime.device)
        runner, optimizer = run(module, runtime, mode, check, gen, recipe)
        means, acc = runner.end_epoch()
        results[mode] = (state(module, optimizer), means, acc, runner)
    (a, means_a, acc_a, _), (b, means_b, acc_b, graphs_runner) = results["none"], results["graphs"]
    diff = max((x - y).abs().max().item() for x, y in zip(a, b))
    same = diff == 0 and means_a == means_b and acc_a == acc_b
    captured = graphs_runner.captures > 0 and not graphs_runner.capture_failed
    failed |= not same or not captured
    device_name = torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else "CPU"
    pair = "resnet8→resnet8 8×8" if args.small else "resnet56→resnet20 32×32"
    print(f"device {runtime.device} ({device_name}),"
          f" torch {torch.__version__}, {args.method} {pair},"
          f" batch {args.batch}, {args.precision}, deterministic {bool(args.deterministic)}")
    print(f"numerics over {args.check_steps} steps: {'identical' if same else f'DIFFERENT (max |Δ| {diff:.3g})'}; "
          f"means eager {means_a} graphs {means_b}; "
          f"{'captured' if graphs_runner.capture else 'static buffers'}: {graphs_runner.captures}"
          f"{f' CAPTURE FAILED: {graphs_runner.capture_failed}' if graphs_runner.capture_failed else ''}; "
          f"steps: {graphs_runner.stats()}")

    # 2. speed
    data, gen = batches(stream, args.batch, args.warmup + args.steps)
    for mode in ("none", "graphs"):
        module.load_state_dict(initial)
        runner, optimizer = run(module, runtime, mode, data[:args.warmup], gen, recipe)
        sync(runtime.device)
        t0 = time.perf_counter()
        for images, labels, positions in data[args.warmup:]:
            runner.step(images, labels, positions, gen)
        runner.end_epoch()  # the one host read (waits for the device)
        sync(runtime.device)
        ms = (time.perf_counter() - t0) / args.steps * 1000
        print(f"{mode:>6}: {ms:.2f} ms/step over {args.steps} steps")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
