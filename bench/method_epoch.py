"""Seconds per training epoch of distillation methods on digits (a benchmark, not a test).

    PYTHONPATH=src .venv/bin/python bench/method_epoch.py --methods kd hsakd \
        --teacher resnet56 --student resnet20 --size 8 --threads 1

Untrained networks (an epoch costs the same), digits-full's recipe (batch 64, padding 1), CPU fp32. Each method's
main-stage epoch is timed, and its init stage's epoch where it has one (HSAKD: the teacher's auxiliary heads);
methods run with their class defaults (plus `--hp method.key=value`).
"""

from __future__ import annotations

import argparse
import time

import torch

from mcmikd.datasets.digits import load_digits
from mcmikd.distill import get_method
from mcmikd.distill.base import DistillContext
from mcmikd.engine import Recipe, Runtime, TrainStream, _epoch_pass, make_generator, make_optimizer
from mcmikd.models import create_model, feature_shapes
from mcmikd.step import StepRunner


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["kd", "hsakd"])
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runtime = Runtime(device=torch.device("cpu"), channels_last=False, precision="fp32", deterministic=True)
    data = load_digits(image_size=args.size)
    stream = TrainStream(data, runtime, padding=1)
    n_cls = 10
    print(f"| method | phase | seconds / epoch ({len(stream.visible_labels)} images, batch {args.batch}, "
          f"{args.teacher} → {args.student}, {args.size} px, {args.threads} thread) |\n|---|---|---|")
    for method in args.methods:
        torch.manual_seed(0)
        ctx = DistillContext(num_classes=n_cls, num_train=stream.num_visible, train_labels=stream.visible_labels,
                             in_channels=1, image_size=args.size, epochs=8, student_arch=args.student,
                             teacher_arch=args.teacher,
                             student_shapes=feature_shapes(args.student, n_cls, 1, args.size),
                             teacher_shapes=feature_shapes(args.teacher, n_cls, 1, args.size))
        d = get_method(method)(create_model(args.student, n_cls, 1), create_model(args.teacher, n_cls, 1), {}, ctx)
        recipe = Recipe(epochs=1, batch_size=args.batch, lr=0.05)
        gen = make_generator(0, runtime.device)
        init = d.init_stage()
        if init is not None:
            params = init.parameters
            d.train()
            t0 = time.perf_counter()
            runner = StepRunner(d, make_optimizer(params, recipe), runtime, loss_fn=init.loss)
            _epoch_pass(runner, stream, gen, args.batch, 1)
            print(f"| {method} | init | {time.perf_counter() - t0:.2f} |")
        params = d.learnable_parameters()
        d.train()
        t0 = time.perf_counter()
        _epoch_pass(StepRunner(d, make_optimizer(params, recipe), runtime), stream, gen, args.batch, 1)
        print(f"| {method} | main | {time.perf_counter() - t0:.2f} |")


if __name__ == "__main__":
    main()
