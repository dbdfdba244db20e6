"""What a config costs to run, measured on the real engine: every job of its grid, priced from the training step
this project runs (`mcmikd.step.StepRunner`: the method's own forward with its heads and losses, backward, SGD,
batch augmentation), eager and, on CUDA, captured as CUDA graphs.

    .venv/bin/python bench/cost.py --config config/cifar100.yaml [--steps 20] [--out docs/cost.md] [--pack N|best]

What is timed, on random data of the config's shape (the step costs the same on real data; a dataset read from its
files, `DatasetSpec.streams` (ImageNet), is priced by its device step alone: the JPEG decoding and crops in the
DataLoader workers, `mcmikd.streaming`, run beside it and are not priced, so a job whose workers cannot keep up takes
longer than the table says; its size comes from the folders, or from `published_sizes` before they exist):
* one **step family** per distinct (teacher, student, method, hyper-parameters, batch size) of the student runs and
  per (architecture, teacher objective and its hyper-parameters, batch size) of the teachers: the method built as
  its job builds it (`DistillContext` with the real training-set size, so CRD's memory bank and negatives are the
  real ones; HSAKD's rotated ×4 batch, ReviewKD's and CRD's heads included), `--steps` steps timed after the
  warm-up steps (and, with `graphs`, the capture), one device sync at the end; an init stage (AB, FT, FSP, HSAKD's
  auxiliary heads) timed the same way with its own loss;
* per epoch, the evaluation pass over the test set; for fine-tuned teachers the per-epoch diagnostics pass over the
  training images (and the per-epoch centroid pass of `centroids: per_epoch`), timed as forward passes;
* the CMI measurement jobs (a forward pass over training and test images per teacher job), the Eigen-CAM jobs
  (and, where the config measures CAMs, the measurement's forward/backward passes over the test set), and each
  job's start-up (importing torch and the package, measured once).

A job's hours = start-up + init epochs × init steps × init step + epochs × (steps per epoch × step + passes), with
its steps per epoch from its setting (few-shot fraction and epoch length, omitted classes). `--pack N` prices N
jobs per GPU: the most expensive step families (`--pack-families`) are timed again with N processes running them
at once, and every family's GPU-hours become hours × (packed step / single step) / N (the mean ratio of the
families timed packed stands in for the others; the report says which). `--pack best` takes N from the best
packing `bench/gpu.py` measured (docs/benchmarks-gpu.json).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from mcmikd.config import load_grid
from mcmikd.datasets import get_dataset
from mcmikd.engine import Runtime, make_generator

ROOT = Path(__file__).resolve().parents[1]
CAM_METHODS_PASSES = 3  # a CAM measurement: one forward (Eigen-CAM) and two forward/backward (Grad-CAM, Grad-CAM++)


@dataclass
class Family:
    """Jobs that share one training step: how it is built, what it costs, and the jobs priced with it."""
    kind: str  # "teacher" (from scratch), "fine-tuned teacher" or "student"
    arch: str  # the network trained
    teacher: str | None  # the frozen teacher of a student step
    name: str  # method or teacher objective
    hp: dict
    batch: int
    stage: str  # the report's stage of its jobs
    jobs: list[dict] = field(default_factory=list)  # per job: epochs, steps per epoch, passes per epoch, init epochs
    step: dict = field(default_factory=dict)  # mode -> seconds per step
    init_step: dict = field(default_factory=dict)
    init_epochs: int = 0
    replays: dict = field(default_factory=dict)  # mode -> graph replays seen while timing (captured or not)
    memory: dict = field(default_factory=dict)  # mode -> peak device memory of the timed job (MiB; CUDA only)

    @property
    def label(self) -> str:
        hp = ", ".join(f"{k} {v}" for k, v in sorted(self.hp.items()) if not isinstance(v, (dict, list)))
        if self.kind == "student":
            who = f"{self.teacher} → {self.arch}" if self.teacher else f"{self.arch} (no teacher)"
        else:
            who = f"{self.arch} {self.kind}"
        return f"{who}, {self.name}" + (f" ({hp})" if hp else "")


# ------------------------------------------------------------------------------------------------ the grid
def steps_per_epoch(n_train: int, classes: int, batch: int, setting: dict) -> int:
    """Training steps of one epoch of a student of `setting` (few-shot fraction and epoch length, omitted classes)."""
    images = n_train
    fraction = float(setting.get("fraction", 1.0))
    if fraction < 1.0 and setting.get("epoch_length", "full") != "full":
        images = max(1, round(n_train * fraction))
    images -= round(n_train * len(setting.get("omitted", ())) / classes)
    return max(1, math.ceil(images / batch))


def student_stage(experiment: str) -> str:
    """The cost table's stage label of an experiment's students."""
    return f"students: {experiment}"


def families(grid, n_train: int, classes: int) -> dict[tuple, Family]:
    out: dict[tuple, Family] = {}
    owner = {}
    for exp, runs in grid.runs.items():
        for run in runs:
            owner.setdefault(run, exp)
    for run in grid.all_runs():
        p = grid.student_params(run)
        recipe = p["recipe"]
        teacher = p["teacher"]["arch"] if p["teacher"] else None
        key = ("student", teacher, run.student, run.method, json.dumps(p["hp"], sort_keys=True), recipe["batch_size"])
        fam = out.setdefault(key, Family("student", run.student, teacher, run.method, p["hp"], recipe["batch_size"],
                                         student_stage(owner[run])))
        fam.jobs.append({"epochs": recipe["epochs"], "passes": 0,
                         "steps": steps_per_epoch(n_train, classes, recipe["batch_size"], p["setting"])})
    for arch, variant, tseed in grid.teacher_jobs():
        p = grid.teacher_params(arch, variant, tseed)
        recipe = p["recipe"]
        tuned = grid.start_variant(arch, variant) is not None
        kind = "fine-tuned teacher" if tuned else "teacher"
        key = (kind, arch, p["objective"], json.dumps(p["hp"], sort_keys=True), recipe["batch_size"])
        fam = out.setdefault(key, Family(kind, arch, None, p["objective"], p["hp"], recipe["batch_size"],
                                         "fine-tuned teachers" if tuned else "teachers from scratch"))
        # passes over the training set per epoch: the fine-tuning diagnostics, and per-epoch centroids
        passes = int(tuned) + int(p["hp"].get("centroids") == "per_epoch")
        fam.jobs.append({"epochs": recipe["epochs"], "passes": passes,
                         "steps": math.ceil(n_train / recipe["batch_size"])})
    return out


def dataset_sizes(ds: dict) -> tuple[tuple[int, int, int], int, int]:
    """((classes, channels, image size), training images, test images) of the config's dataset, without its data
    where the spec publishes its sizes (`published_sizes`: ImageNet's 1000 classes, 1,281,167 / 50,000 images);
    other datasets whose size is unknown are priced at 50,000 training and N/5 test images."""
    from mcmikd.errors import DataError

    spec = get_dataset(ds["name"])
    published = getattr(spec, "published_sizes", None)
    try:
        shape = spec.shape(ds)
    except DataError:
        if not published:
            raise
        shape = (published["classes"], spec.in_channels, spec.image_size_of(ds))
    n_train = spec.num_train(ds) or 50000
    n_test = getattr(spec, "num_test", lambda d: None)(ds) or max(1, n_train // 5)
    return shape, n_train, n_test


# ------------------------------------------------------------------------------------------------ timing
def _probe_data(classes: int, channels: int, size: int, n: int, seed: int = 0):
    from mcmikd.data import DatasetTensors

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return DatasetTensors(name="cost-probe", train_images=images, train_labels=labels, test_images=images,
                          test_labels=labels, mean=(0.5,) * channels, std=(0.25,) * channels,
                          class_names=[str(i) for i in range(classes)], hflip=True)


def build(fam: Family, runtime: Runtime, shape: tuple[int, int, int], n_train: int, probe_images: int):
    """(module, network, stream) of a family, built as its job builds it, on random probe data."""
    from mcmikd.engine import TrainStream
    from mcmikd.models import create_model, feature_shapes

    classes, channels, size = shape
    data = _probe_data(classes, channels, size, probe_images)
    stream = TrainStream(data, runtime, padding=4 if size >= 32 else 2, hflip=True)
    torch.manual_seed(0)
    if fam.kind != "student":
        from mcmikd.teachers import get_objective

        cls = get_objective(fam.name)
        objective = cls(cls.resolve_hp(fam.hp, fam.arch))
        model = runtime.prepare(create_model(fam.arch, classes, channels))
        objective.bind(stream, runtime, classes)
        state = objective.prepare(model, stream, runtime, classes, 0)
        return objective.build(model, state), model, stream
    from mcmikd.distill import get_method
    from mcmikd.distill.base import DistillContext

    cls = get_method(fam.name)
    teacher = t_shapes = None
    if cls.uses_teacher and fam.teacher:
        teacher = runtime.prepare(create_model(fam.teacher, classes, channels)).eval()
        t_shapes = feature_shapes(fam.teacher, classes, channels, size)
    labels = (torch.arange(n_train) % classes).to(runtime.device)  # the real training-set size (CRD's bank)
    ctx = DistillContext(num_classes=classes, num_train=n_train, train_labels=labels, in_channels=channels,
                         image_size=size, epochs=1, student_shapes=feature_shapes(fam.arch, classes, channels, size),
                         teacher_shapes=t_shapes or {}, student_arch=fam.arch, teacher_arch=fam.teacher or "",
                         full_train_labels=labels, full_train_slots=torch.arange(n_train, device=runtime.device))
    student = create_model(fam.arch, classes, channels)
    return runtime.prepare(cls(student, teacher, dict(fam.hp), ctx)), student, stream


def time_steps(module, stream, runtime: Runtime, batch: int, steps: int, mode: str, init: bool) -> tuple[float, int]:
    """(seconds per step, graph replays) of `steps` steps of the module's main step (or its init stage's), after
    the warm-up (and capture); one device sync at the end of the timed steps."""
    from mcmikd.engine import Recipe, make_optimizer
    from mcmikd.step import WARMUP_STEPS, StepRunner

    recipe = Recipe.from_dict({"epochs": 1, "batch_size": batch, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4})
    if init:
        stage = module.init_stage()
        runner = StepRunner(module, make_optimizer(stage.parameters, recipe), runtime, loss_fn=stage.loss, mode=mode,
                            strict=False)
    else:
        runner = StepRunner(module, make_optimizer(module.learnable_parameters(), recipe), runtime, mode=mode,
                            strict=False)
    gen = make_generator(0, runtime.device)

    def full_batches():
        while True:
            for b in stream.batches(gen, batch):
                if len(b[1]) == batch:
                    yield b

    batches = full_batches()
    module.train()
    runner.start_epoch(1)
    for _ in range(WARMUP_STEPS + 2):
        runner.step(*next(batches), gen)
    runner.end_epoch()  # waits for the device
    runner.start_epoch(1)
    t0 = time.perf_counter()
    for _ in range(steps):
        runner.step(*next(batches), gen)
    runner.end_epoch()
    return (time.perf_counter() - t0) / steps, runner.stats()["graph_replays"]


def time_forward(arch: str, runtime: Runtime, shape: tuple[int, int, int], images: int) -> float:
    """Seconds per image of an evaluation pass (`engine.predict`: batches of 500, no gradients)."""
    from mcmikd.engine import predict
    from mcmikd.models import create_model

    classes, channels, size = shape
    data = _probe_data(classes, channels, size, images, seed=1)
    model = runtime.prepare(create_model(arch, classes, channels)).eval()
    from mcmikd.engine import TrainStream

    normalize = TrainStream(data, runtime).normalize
    predict(model, data.test_images[: min(images, 64)], normalize, runtime)  # warm-up
    t0 = time.perf_counter()
    logits = predict(model, data.test_images, normalize, runtime)
    float(logits.sum())  # the pass has ended on the device
    return (time.perf_counter() - t0) / images


def measure(fam: Family, runtime: Runtime, mode: str, shape, n_train: int, steps: int) -> None:
    probe = fam.batch * (steps + 8)
    cuda = runtime.device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(runtime.device)
    module, _, stream = build(fam, runtime, shape, n_train, probe)
    fam.step[mode], fam.replays[mode] = time_steps(module, stream, runtime, fam.batch, steps, mode, init=False)
    stage = module.init_stage() if hasattr(module, "init_stage") else None
    if stage is not None and stage.epochs > 0:
        module, _, stream = build(fam, runtime, shape, n_train, probe)
        fam.init_epochs = stage.epochs
        fam.init_step[mode], _ = time_steps(module, stream, runtime, fam.batch, steps, mode, init=True)
    if cuda:  # the job's model, teacher, heads, optimizer state, graphs and activations (its data not included)
        fam.memory[mode] = torch.cuda.max_memory_allocated(runtime.device) / 2**20


def _packed_worker(index, spec, barrier, queue) -> None:
    runtime = Runtime.from_config(spec["runtime"], spec["threads"])
    for key in spec["keys"]:
        fam = Family(**spec["families"][key])
        module, _, stream = build(fam, runtime, tuple(spec["shape"]), spec["n_train"], fam.batch * (spec["steps"] + 8))
        barrier.wait()  # the N copies of a family start together
        sec, _ = time_steps(module, stream, runtime, fam.batch, spec["steps"], spec["mode"], init=False)
        queue.put((index, key, sec))


def packed_steps(fams: dict[str, Family], runtime_cfg: dict, threads: int, n: int, shape, n_train: int, steps: int,
                 mode: str) -> dict[str, float]:
    """Per family key: its step time while n copies of it train at once on the device (n spawned processes,
    `threads` torch threads each); the mean over the processes. Raises RuntimeError when a process fails."""
    ctx = mp.get_context("spawn")  # a fresh CUDA context per process
    barrier, queue = ctx.Barrier(n, timeout=900), ctx.Queue()
    spec = {"runtime": runtime_cfg, "threads": threads, "shape": list(shape), "n_train": n_train, "steps": steps,
            "mode": mode, "keys": list(fams),
            "families": {k: {f: getattr(v, f) for f in ("kind", "arch", "teacher", "name", "hp", "batch", "stage")}
                         for k, v in fams.items()}}
    procs = [ctx.Process(target=_packed_worker, args=(i, spec, barrier, queue)) for i in range(n)]
    for proc in procs:
        proc.start()
    times: dict[str, list[float]] = {k: [] for k in fams}
    try:
        for _ in range(n * len(fams)):
            while True:
                try:
                    _, key, sec = queue.get(timeout=5)
                    break
                except Exception:  # queue.Empty: is every process still alive?
                    if any(proc.exitcode not in (None, 0) for proc in procs):
                        raise RuntimeError("a packed step loop failed (its traceback is above)") from None
            times[key].append(sec)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    return {k: statistics.mean(v) for k, v in times.items()}


def startup_seconds() -> float:
    """Wall time of starting a job's Python process and importing torch and the package (one measurement)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, mcmikd.jobs.student, mcmikd.jobs.teacher"], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")})
    return time.perf_counter() - t0


def best_pack(path: Path) -> int:
    """The packing (jobs per GPU) with the highest aggregate throughput that `bench/gpu.py` measured."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        raise SystemExit(f"--pack best: no readable {path}; run bench/gpu.py on the GPU first, "
                         "or pass --pack N") from None
    if report.get("smoke") or not report.get("best_pack"):
        raise SystemExit(f"--pack best: {path} holds no packed GPU measurement; run bench/gpu.py on the GPU")
    return int(report["best_pack"])


# ------------------------------------------------------------------------------------------------ report
def fmt_hours(h: float) -> str:
    return f"{h:.1f}" if h >= 10 else f"{h:.2f}" if h >= 0.1 else f"{h:.3f}"


STAGE_ORDER = ("teachers from scratch", "fine-tuned teachers")


def job_hours(fam: Family, mode: str, forward_s: float, n_train: int, n_test: int, startup: float) -> float:
    total = 0.0
    for job in fam.jobs:
        per_epoch = job["steps"] * fam.step[mode] + (n_test + job["passes"] * n_train) * forward_s
        init = fam.init_epochs * job["steps"] * fam.init_step.get(mode, 0.0)
        total += startup + init + job["epochs"] * per_epoch
    return total / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "cifar100.yaml"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per family (after warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out")
    parser.add_argument("--pack", default="1", help="also the cost with N jobs per GPU, step times measured with "
                        "N concurrent processes; 'best': N from --gpu-report (bench/gpu.py's measurement)")
    parser.add_argument("--pack-families", type=int, default=3, help="families timed packed (the most expensive)")
    parser.add_argument("--gpu-report", default=str(ROOT / "docs" / "benchmarks-gpu.json"),
                        help="the JSON bench/gpu.py writes (for --pack best)")
    args = parser.parse_args()
    pack = best_pack(Path(args.gpu_report)) if args.pack == "best" else int(args.pack)
    if pack < 1:
        parser.error("--pack must be ≥ 1")
    config = yaml.safe_load(Path(args.config).read_text())
    grid = load_grid(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    runtime_cfg = {k: v for k, v in grid.config["runtime"].items() if k != "threads"}
    runtime = Runtime.from_config({**runtime_cfg, "compile": "none"}, args.threads)
    cuda = runtime.device.type == "cuda"
    modes = ["none", "graphs"] if cuda else ["none"]  # on CPU "graphs" is the eager step on static buffers
    mode_names = {"none": "eager", "graphs": "captured"}
    shape, n_train, n_test = dataset_sizes(grid.config["dataset"])
    classes = shape[0]
    fams = families(grid, n_train, classes)
    t_all = time.perf_counter()
    for fam in fams.values():
        for mode in modes:
            rt = Runtime.from_config({**runtime_cfg, "compile": mode}, args.threads)
            measure(fam, rt, mode, shape, n_train, args.steps)
    archs = sorted({f.arch for f in fams.values()})
    forward = {a: time_forward(a, runtime, shape, min(n_test, 2000)) for a in archs}
    startup = startup_seconds()

    hours = {m: {k: job_hours(f, m, forward[f.arch], n_train, n_test, startup) for k, f in fams.items()}
             for m in modes}
    main_mode = modes[-1]
    # CMI and CAM jobs: forward passes of the teachers (CMI: training and test images, per teacher job)
    extra = {}
    teacher_jobs = grid.teacher_jobs()
    extra["CMI measurements"] = sum(startup + (n_train + n_test) * forward[a] if a in forward else startup
                                    for a, _, _ in teacher_jobs) / 3600
    cam_jobs = len(grid.cam_experiments()) + len(grid.cam_measure_files())
    cam_arch = next(iter(archs))
    extra["Eigen-CAM"] = (cam_jobs * startup + len(grid.cam_measure_files()) * n_test * CAM_METHODS_PASSES * 3
                          * forward.get(cam_arch, 0.0)) / 3600

    packed_ratio, packed_keys = None, []
    if pack > 1:
        ranked = sorted(fams, key=lambda k: hours[main_mode][k], reverse=True)[:args.pack_families]
        chosen = {str(i): fams[k] for i, k in enumerate(ranked)}
        got = packed_steps(chosen, {**runtime_cfg, "compile": main_mode}, max(1, args.threads // pack), pack, shape,
                           n_train, args.steps, main_mode)
        ratios = [got[i] / chosen[i].step[main_mode] for i in chosen]
        packed_ratio = statistics.mean(ratios)
        packed_keys = [(chosen[i].label, got[i], r) for i, r in zip(chosen, ratios)]

    device = str(runtime.device) + (f" ({torch.cuda.get_device_name(runtime.device)})" if cuda
                                    else f" ({platform.processor() or platform.machine()}, {args.threads} threads)")
    config_name = os.path.relpath(args.config, ROOT) if Path(args.config).is_absolute() else args.config
    packed_cmd = f" --pack {args.pack}" if pack > 1 else ""
    rt_name = (f"runtime: {runtime.precision}, deterministic {str(runtime.deterministic).lower()}, "
               f"channels_last {str(runtime.channels_last).lower()}")
    lines = [f"Cost of `{Path(args.config).name}` measured on {device}, {rt_name}; the engine's training step per "
             f"step family, {args.steps} timed steps each (`bench/cost.py --config {config_name}{packed_cmd}`):", ""]
    cols = " | ".join(f"step, {mode_names[m]}" for m in modes)
    hcols = " | ".join(f"GPU-hours, {mode_names[m]}" for m in modes)
    mem = f" | peak memory, {mode_names[main_mode]}" if cuda else ""
    lines += [f"| step family | jobs | {cols} | init stage | {hcols}{mem} |",
              "|---|---|" + "---|" * len(modes) + "---|" + "---|" * len(modes) + ("---|" if cuda else "")]
    for key, fam in sorted(fams.items(), key=lambda kv: -hours[main_mode][kv[0]]):
        steps = " | ".join(f"{1000 * fam.step[m]:.1f} ms" + (" (not captured)" if m == "graphs" and
                                                               not fam.replays[m] else "") for m in modes)
        init = (f"{fam.init_epochs} epochs at {1000 * fam.init_step[main_mode]:.1f} ms" if fam.init_epochs else "–")
        lines.append(f"| {fam.label} | {len(fam.jobs)} | {steps} | {init} | "
                     + " | ".join(fmt_hours(hours[m][key]) for m in modes)
                     + (f" | {fam.memory[main_mode]:,.0f} MiB" if cuda else "") + " |")
    # teachers first, then the students' experiments in the config's order (never a set's order)
    order = STAGE_ORDER + tuple(student_stage(exp) for exp in grid.runs)
    stages = sorted({f.stage for f in fams.values()},
                    key=lambda st: (order.index(st) if st in order else len(order), st))
    lines += ["", "| stage | " + " | ".join(f"hours, {mode_names[m]}" for m in modes)
              + (f" | hours, {pack} jobs per GPU ({mode_names[main_mode]})" if packed_ratio else "") + " |",
              "|---|" + "---|" * (len(modes) + bool(packed_ratio))]
    totals = {m: 0.0 for m in modes}
    packed_total = 0.0
    for stage in stages:
        row = {m: sum(hours[m][k] for k, f in fams.items() if f.stage == stage) for m in modes}
        for m in modes:
            totals[m] += row[m]
        cells = [fmt_hours(row[m]) for m in modes]
        if packed_ratio:
            packed_total += row[main_mode] * packed_ratio / pack
            cells.append(fmt_hours(row[main_mode] * packed_ratio / pack))
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    for stage, h in extra.items():
        for m in modes:
            totals[m] += h
        packed_total += h * (packed_ratio or 1) / pack
        lines.append(f"| {stage} | " + " | ".join(fmt_hours(h) for _ in modes)
                     + (f" | {fmt_hours(h * packed_ratio / pack)}" if packed_ratio else "") + " |")
    lines.append("| **all** | " + " | ".join(f"**{fmt_hours(totals[m])}**" for m in modes)
                 + (f" | **{fmt_hours(packed_total)}**" if packed_ratio else "") + " |")
    lines += ["", f"Included per job: start-up {startup:.1f} s (measured), init stages, evaluation of {n_test:,} test "
              f"images per epoch, the fine-tuned teachers' diagnostics pass over {n_train:,} training images per "
              f"epoch; "
              f"CMI and Eigen-CAM jobs as forward passes. Measured in {time.perf_counter() - t_all:.0f} s."]
    if packed_ratio:
        lines.append(f"{pack} jobs per GPU: " + "; ".join(f"{label}: {1000 * sec:.1f} ms per step with {pack} at once "
                                                          f"(× {r:.2f})" for label, sec, r in packed_keys)
                     + f"; the mean ratio × {packed_ratio:.2f} prices the other families.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
