"""Does a tiny last batch break the batch-relational losses? (a diagnostic, not a test)

    PYTHONPATH=src .venv/bin/python bench/last_batch.py --method pkt --beta 30000 \
        --teacher results/digits-full/teachers/resnet56/mll/seed0/model.pt --sizes 1347 1344 1077

digits' 1,347 training images leave a last batch of 3 images per epoch at batch 64 (the engine trains on every
image, as RepDistiller's DataLoader with drop_last=False does). PKT's loss is a mean over the b × b kernel and SP's
a Gram difference ÷ b², so both grow ≈ 1/b on a small batch; with their β the step on 3 images can throw the student
off. This trains resnet20 from the given resnet56 teacher for a few epochs of digits-full's recipe (8 px, batch 64,
lr 0.05, padding 1) on the first N training images for each N and prints the test loss and accuracy after each
epoch: N = 1347 has the 3-image batch, N = 1344 (21 × 64) and N = 1077 (the method-weight run's 80 %, last batch
53) do not.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from mcmikd.datasets.digits import load_digits
from mcmikd.distill import get_method
from mcmikd.distill.base import DistillContext
from mcmikd.engine import Recipe, Runtime, TrainStream, _epoch_pass, evaluate, make_generator, make_optimizer
from mcmikd.models import create_model, feature_shapes
from mcmikd.step import StepRunner


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="pkt")
    ap.add_argument("--beta", type=float, default=30000.0)
    ap.add_argument("--teacher", required=True, help="model.pt of a resnet56 digits-full MLL teacher")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1347, 1344, 1077])
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runtime = Runtime(device=torch.device("cpu"), channels_last=False, precision="fp32", deterministic=True)
    full = load_digits(image_size=8)
    state = torch.load(args.teacher, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    print(f"| training images | last batch | test loss / accuracy (%) after each epoch ({args.method}, "
          f"β = {args.beta:g}) |\n|---|---|---|")
    for n in args.sizes:
        data = dataclasses.replace(full, train_images=full.train_images[:n], train_labels=full.train_labels[:n])
        stream = TrainStream(data, runtime, padding=1)
        torch.manual_seed(0)
        teacher = create_model("resnet56", 10, 1)
        teacher.load_state_dict(state)
        ctx = DistillContext(num_classes=10, num_train=stream.num_visible, train_labels=stream.visible_labels,
                             in_channels=1, image_size=8, epochs=8, student_arch="resnet20", teacher_arch="resnet56",
                             student_shapes=feature_shapes("resnet20", 10, 1, 8),
                             teacher_shapes=feature_shapes("resnet56", 10, 1, 8))
        d = get_method(args.method)(create_model("resnet20", 10, 1), teacher, {"beta": args.beta}, ctx)
        params = d.learnable_parameters()
        runner = StepRunner(d, make_optimizer(params, Recipe(epochs=args.epochs, batch_size=64, lr=0.05)), runtime)
        generator = make_generator(0, runtime.device)
        after = []
        for epoch in range(1, args.epochs + 1):
            d.train()
            _epoch_pass(runner, stream, generator, 64, epoch)
            ev = evaluate(d.student, full.test_images, full.test_labels, stream.normalize, runtime, 10)
            after.append(f"{ev.loss:.3g} / {ev.acc:.1f}")
        print(f"| {n} | {n % 64} | {', '.join(after)} |")


if __name__ == "__main__":
    main()
