"""GPU training speed, side by side on one GPU in one run: a RepDistiller-style training loop, this project's
engine in each runtime mode, and several engine jobs packed on the one GPU.

    .venv/bin/python bench/gpu.py                       # on a GPU machine: ≤ --budget-s (280 s), writes
                                                        # docs/benchmarks-gpu.md and docs/benchmarks-gpu.json
    .venv/bin/python bench/gpu.py --smoke --device cpu  # seconds on a CPU: checks the script, writes to a temp dir

What runs (resnet56 → resnet20 KD, batch 64, CIFAR-100 shapes; `--teacher/--student` change the pair):

1. A fake CIFAR-100 folder in the real on-disk format (`cifar-100-python/{train,test,meta}`: pickled dicts with a
   uint8 `data` array (N, 3072) and `fine_labels`, as the standard download; random pixels, balanced labels) is
   written to a temporary directory: 50,000 train / 10,000 test images (smoke: 640 / 128).
2. The RepDistiller-style loop, written here from the public description of RepDistiller's `train_student.py` and
   `helper/loops.py` (`train_distill`, `validate`): torchvision's `CIFAR100` over that folder (its md5 checks
   pointed at the fake files), PIL `RandomCrop(32, padding=4)`, `RandomHorizontalFlip`, `ToTensor`, `Normalize`,
   `DataLoader(batch 64, shuffle, num_workers=8, pin_memory)`, test loader at batch 32 with 4 workers,
   `cudnn.benchmark = True`, teacher in eval mode under no_grad, SGD lr 0.05 momentum 0.9 weight decay 5e-4,
   loss 0.1·CE + 0.9·KL(T=4)·T², top-1/top-5 and a `loss.item()` meter per step, as RepDistiller does. The models
   are this project's (`mcmikd.models.create_model`), so both sides run the same networks.
3. This engine: the student job's own code path (`jobs.prepare.prepare_data` reads the folder with the project's
   CIFAR loader; a KD `Distiller` is built as `jobs/student.py` builds it and trained by `jobs.common.train`, i.e.
   `engine.fit` with the evaluator), once per runtime mode: paper (fp32, deterministic), fp32 with TF32 and
   cudnn.benchmark (`deterministic: false`), bf16 autocast with channels-last, each with `runtime.compile: none`
   and `graphs`. An engine without the `runtime.compile` key gets its rows marked "not available in this engine".
4. 2, 4 and 8 engine jobs at once on the one GPU (separate processes, started together, best single-job mode);
   1 job is that mode's single-job row.

Every measured run (each process) trains a warm-up epoch of `--warmup-steps` steps (cudnn autotuning, CUDA graph
capture, allocator), waits at a barrier until every process of its row is warm, then trains a measured epoch of
`--steps` steps (default 200 of the 782 of a full CIFAR-100 epoch) followed by a test pass over the same fraction of
the test set (steps·64/5 images: 2,560 of 10,000). Images/s = training images of the measured epoch / wall time of
that epoch including its test pass; for packed rows, total training images of all jobs / (last end − first start).
`--steps 0` times full epochs (782 steps + 10,000 test images; about 3× longer, raise --budget-s).

Time: every row runs in subprocesses with a hard time box cut from `--budget-s` (data 10 %, RepDistiller loop
15 %, engine rows 40 %, packing 35 %; time a section leaves unused passes on); a row that overruns is killed and
marked, a failed row records its error's last line; the report is rewritten after every row, so a killed run still
leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS_OUT = ROOT / "docs" / "benchmarks-gpu.md"
FULL_TRAIN, FULL_TEST = 50000, 10000
MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)  # CIFAR-100 (mcmikd.datasets.cifar100)
KD = {"gamma": 0.1, "alpha": 0.9, "temperature": 4.0}  # RepDistiller's KD weights (config/cifar100.yaml methods.kd)
RECIPE = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
# engine runtime modes: (label, runtime config without device/compile)
MODES = {
    "paper": ("paper runtime (fp32, deterministic)", {"precision": "fp32", "deterministic": True,
                                                      "channels_last": "auto"}),
    "tf32": ("fp32 + TF32 + cudnn.benchmark", {"precision": "fp32", "deterministic": False,
                                              "channels_last": "auto"}),
    "bf16": ("bf16 autocast + channels_last", {"precision": "bf16", "deterministic": False,
                                              "channels_last": True}),
}
COMPILE = ("none", "graphs")
SHARES = {"data": 0.10, "repdistiller": 0.25, "engine": 0.65, "packing": 1.0}  # cumulative section deadlines


# =============================================================================================== fake data
def write_fake_cifar100(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write `<root>/cifar-100-python/{train,test,meta}` as the standard "python version" holds them: pickled
    dicts with 'data' (uint8 array (N, 3072), the R, G, B planes of 32×32 images), 'fine_labels' and
    'coarse_labels' (lists of int), 'filenames', 'batch_label'; meta with 'fine_label_names' and
    'coarse_label_names'. Only numpy arrays, lists, strings and ints: what the project's restricted unpickler
    (`mcmikd.datasets._cifar.SafeUnpickler`) and torchvision accept. Pixels are random, labels balanced."""
    import numpy as np

    from mcmikd.datasets.cifar100 import CIFAR100

    folder = root / CIFAR100.folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % 100)
        batch = {"filenames": [f"fake_{split}_{i}.png" for i in range(n)], "batch_label": f"fake {split} batch",
                 "fine_labels": [int(v) for v in labels], "coarse_labels": [int(v) // 5 for v in labels],
                 "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}
        with open(folder / split, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)  # the standard files are protocol-2 pickles (Python 2)
    meta = {"fine_label_names": list(CIFAR100.class_names),
            "coarse_label_names": [f"superclass_{i}" for i in range(20)]}
    with open(folder / "meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return folder


# =============================================================================================== workers
def _barrier(spec: dict) -> float:
    """Say this process is warm, wait until the parent says go; the wall-clock time the measurement starts."""
    Path(spec["barrier"], f"ready-{spec['index']}").touch()
    go = Path(spec["barrier"], "go")
    while not go.exists():
        time.sleep(0.005)
    return time.time()


def worker_repdistiller(spec: dict) -> dict:
    """The RepDistiller-style loop (module docstring, item 2); returns the measured epoch's numbers."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    from mcmikd.datasets._cifar import md5
    from mcmikd.models import create_model

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    folder = Path(spec["root"], "cifar-100-python")

    class FakeCIFAR100(torchvision.datasets.CIFAR100):  # torchvision's reader; its md5 checks, of the fake files
        train_list = [["train", md5(folder / "train")]]
        test_list = [["test", md5(folder / "test")]]
        meta = {**torchvision.datasets.CIFAR100.meta, "md5": md5(folder / "meta")}

    normalize = transforms.Normalize(MEAN, STD)
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    test_tf = transforms.Compose([transforms.ToTensor(), normalize])
    train_set = FakeCIFAR100(spec["root"], train=True, transform=train_tf)
    test_set = Subset(FakeCIFAR100(spec["root"], train=False, transform=test_tf), range(spec["test_images"]))
    batch, workers = spec["batch"], spec["workers"]
    pin = device.type == "cuda"
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=pin)
    test_loader = DataLoader(test_set, batch_size=batch // 2, shuffle=False, num_workers=workers // 2,
                             pin_memory=pin)

    student = create_model(spec["student"], 100).to(device)
    teacher = create_model(spec["teacher"], 100).to(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=RECIPE["lr"], momentum=RECIPE["momentum"],
                                weight_decay=RECIPE["weight_decay"])
    T = KD["temperature"]

    def kl_div(y_s, y_t):  # KL(p_t ‖ p_s) at temperature T, summed, × T² / batch (RepDistiller's DistillKL)
        return F.kl_div(F.log_softmax(y_s / T, 1), F.softmax(y_t / T, 1), reduction="sum") * T**2 / y_s.shape[0]

    def topk_correct(logits, target, ks=(1, 5)):
        top = logits.topk(max(ks), 1).indices
        hit = top.eq(target.view(-1, 1))
        return [hit[:, :k].any(1).float().sum() * 100.0 / target.shape[0] for k in ks]

    class Meter:  # RepDistiller's AverageMeter
        def __init__(self):
            self.sum, self.count = 0.0, 0

        def update(self, value, n=1):
            self.sum += value * n
            self.count += n

    def train_epoch(steps: int) -> int:
        student.train()
        teacher.eval()
        losses, top1, top5, batch_time = Meter(), Meter(), Meter(), Meter()
        seen, end = 0, time.time()
        for i, (images, target) in enumerate(train_loader):
            if i == steps:
                break
            images, target = images.float().to(device, non_blocking=True), target.to(device, non_blocking=True)
            logits = student(images)
            with torch.no_grad():
                t_logits = teacher(images)
            loss = KD["gamma"] * F.cross_entropy(logits, target) + KD["alpha"] * kl_div(logits, t_logits)
            acc1, acc5 = topk_correct(logits, target)
            losses.update(loss.item(), images.size(0))
            top1.update(acc1, images.size(0))
            top5.update(acc5, images.size(0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch_time.update(time.time() - end)
            end = time.time()
            seen += images.size(0)
        return seen

    def validate() -> None:
        student.eval()
        losses, top1 = Meter(), Meter()
        with torch.no_grad():
            for images, target in test_loader:
                images, target = images.float().to(device), target.to(device)
                logits = student(images)
                losses.update(F.cross_entropy(logits, target).item(), images.size(0))
                top1.update(topk_correct(logits, target)[0], images.size(0))

    train_epoch(spec["warmup_steps"])
    validate()
    steps = spec["steps"] or len(train_loader)
    start = _barrier(spec)
    seen = train_epoch(steps)
    validate()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"images": seen, "start": start, "end": time.time()}


def worker_engine(spec: dict) -> dict:
    """One student job of this project (module docstring, item 3) with a warm-up and a measured epoch."""
    import dataclasses

    import torch

    from mcmikd.data import DatasetTensors
    from mcmikd.distill import get_method
    from mcmikd.distill.base import DistillContext
    from mcmikd.engine import Runtime, TrainStream
    from mcmikd.jobs.common import augment_args, train
    from mcmikd.models import create_model, feature_shapes

    runtime = Runtime.from_config(spec["runtime"], spec.get("threads"))
    wanted = spec["runtime"].get("compile")
    if wanted is not None and getattr(runtime, "compile", None) != wanted:
        raise RuntimeError(f"runtime.compile: {wanted} not available in this engine")
    data = DatasetTensors.from_file(spec["data"])
    k = spec["test_images"]
    data = dataclasses.replace(data, test_images=data.test_images[:k], test_labels=data.test_labels[:k])
    batch = spec["batch"]
    steps = spec["steps"] or -(-len(data.train_labels) // batch)
    stream = TrainStream(data, runtime, epoch_length=spec["warmup_steps"] * batch,
                         **augment_args(data, {"crop_padding": 4, "hflip": True}))
    params = {"seed": spec["index"], "recipe": {"epochs": 2, "batch_size": batch, "schedule": "constant", **RECIPE},
              "runtime": spec["runtime"]}
    cls = get_method("kd")
    torch.manual_seed(1000 + spec["index"])
    teacher = runtime.prepare(create_model(spec["teacher"], data.num_classes, data.in_channels)).eval()
    t_shapes = feature_shapes(spec["teacher"], data.num_classes, data.in_channels, data.image_size)
    s_shapes = feature_shapes(spec["student"], data.num_classes, data.in_channels, data.image_size)
    cls.check_compatible(s_shapes, t_shapes, KD)
    ctx = DistillContext(num_classes=data.num_classes, num_train=stream.num_visible,
                         train_labels=stream.visible_labels.to(runtime.device), in_channels=data.in_channels,
                         image_size=data.image_size, epochs=2, student_shapes=s_shapes, teacher_shapes=t_shapes,
                         student_arch=spec["student"], teacher_arch=spec["teacher"])
    torch.manual_seed(params["seed"])
    student = create_model(spec["student"], data.num_classes, data.in_channels)
    distiller = runtime.prepare(cls(student, teacher, dict(KD), ctx))
    stamps: dict = {}

    def hook(record: dict) -> None:
        if record["epoch"] == 1:  # warm: the measured epoch is `steps` long and starts with the others
            stream.epoch_length = steps * batch
            stamps["start"] = _barrier(spec)
        else:
            stamps["end"] = time.time()  # after the measured epoch's training pass and test pass
        return None

    result = train(distiller, student, data, stream, params, runtime, None, epoch_hook=hook)
    if result.stopped_early or "end" not in stamps:
        raise RuntimeError(f"the run stopped early: {result.stopped_early}")
    return {"images": steps * batch, "start": stamps["start"], "end": stamps["end"],
            "compile": getattr(runtime, "compile", None), "precision": runtime.precision,
            "steps": getattr(result, "steps", None),
            "channels_last": runtime.channels_last, "deterministic": runtime.deterministic}


def run_worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = {"repdistiller": worker_repdistiller, "engine": worker_engine}[spec["kind"]](spec)
    Path(spec["out"]).write_text(json.dumps(result))


# =============================================================================================== parent side
@dataclass
class Row:
    section: str
    label: str
    jobs: int = 1
    images_s: float | None = None  # aggregate images/s (per-job = images_s / jobs)
    status: str = "ok"
    detail: dict = field(default_factory=dict)


def run_group(kind: str, specs: list[dict], timeout: float, work: Path, logs: Path | None = None,
              env: dict | None = None) -> tuple[float | None, str, list[dict]]:
    """Start one worker process per spec together, release them at one barrier when all are warm, wait for
    them within `timeout` seconds (then kill them: each runs in its own session, its DataLoader workers too).
    `env`: extra environment variables of the workers (e.g. CUDA MPS's pipe). When the group does not finish
    cleanly, the workers' logs are kept in `logs` (a folder beside the report). Returns (aggregate images/s,
    status, per-process results)."""
    if timeout < 5:
        return None, "skipped: the time budget is spent", []
    barrier = Path(tempfile.mkdtemp(dir=work, prefix="barrier-"))
    procs, logs = [], []
    for i, spec in enumerate(specs):
        spec = {**spec, "kind": kind, "index": i, "barrier": str(barrier), "out": str(barrier / f"out-{i}.json")}
        spec_path = barrier / f"spec-{i}.json"
        spec_path.write_text(json.dumps(spec))
        log = open(barrier / f"log-{i}.txt", "w")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      env={**os.environ, **(env or {})}))
    deadline = time.monotonic() + timeout
    status = "ok"
    try:
        released = False
        while time.monotonic() < deadline:
            if not released and all((barrier / f"ready-{i}").exists() for i in range(len(specs))):
                (barrier / "go").touch()
                released = True
            if all(p.poll() is not None for p in procs):
                break
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one failed: the others would wait at the barrier for ever
            time.sleep(0.01)
        else:
            status = f"timed out: killed after its {timeout:.0f} s time box"
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # the process group this function started (start_new_session)
                p.wait()
        for log in logs:
            log.close()
    results = []
    for i, p in enumerate(procs):
        out = barrier / f"out-{i}.json"
        if p.returncode == 0 and out.exists():
            results.append(json.loads(out.read_text()))
        elif status == "ok":
            lines = [ln for ln in (barrier / f"log-{i}.txt").read_text().splitlines() if ln.strip()]
            tail = lines[-1].strip() if lines else f"exit {p.returncode}"
            status = "not available in this engine" if "not available in this engine" in tail else f"failed: {tail}"
    if logs is not None and (status != "ok" or len(results) != len(specs)):
        kept = logs / barrier.name
        kept.mkdir(parents=True, exist_ok=True)
        for log in barrier.glob("log-*.txt"):
            shutil.copy(log, kept / log.name)
        status += f" (worker logs: {kept})"
    shutil.rmtree(barrier, ignore_errors=True)
    if status != "ok" or len(results) != len(specs):
        return None, status, results
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return sum(r["images"] for r in results) / wall, status, results


MPS_SCRIPT = ROOT / "workflow" / "scripts" / "mps.sh"


def start_mps(work: Path, wanted: str, device: str) -> dict | None:
    """Start a CUDA MPS daemon for the packed rows (workflow/scripts/mps.sh, its pipe under `work`); the workers'
    environment, or None when MPS is off, the device is not CUDA, or the daemon did not start."""
    if wanted == "off" or not device.startswith("cuda"):
        return None
    proc = subprocess.run(["bash", str(MPS_SCRIPT), "start", str(work / "mps")], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    env = dict(kv.split("=", 1) for kv in proc.stdout.split("export", 1)[-1].split())
    return env


def stop_mps(work: Path) -> None:
    subprocess.run(["bash", str(MPS_SCRIPT), "stop", str(work / "mps")], capture_output=True, text=True)


def machine_header(device: str) -> list[str]:
    import torch

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
        cuda = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        gpu, cuda = f"none (device {device})", "CUDA not used"
    return [f"* GPU: {gpu}",
            f"* Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}, torch {torch.__version__}, {cuda}",
            f"* Commit: {commit}{' (with uncommitted changes)' if dirty else ''}; "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}"]


def steps_cell(row: Row) -> str:
    """'graph replays / eager steps' summed over the row's processes (their results' `steps` records), with the
    reason capture stopped if it did; '–' for rows without engine results."""
    steps = [r["steps"] for r in row.detail.get("results", []) if r.get("steps")]
    if not steps:
        return "–"
    cell = f"{sum(s['graph_replays'] for s in steps):,} / {sum(s['eager_steps'] for s in steps):,}"
    failed = next((s["capture_failed"] for s in steps if s.get("capture_failed")), None)
    return cell + (f" (capture stopped: {failed})" if failed else "")


def render(rows: list[Row], header: list[str], args, command: str, notes: list[str]) -> str:
    base = next((r.images_s for r in rows if r.section == "repdistiller" and r.images_s), None)

    def ratio(v: float | None) -> str:
        return f"{v / base:.2f}×" if v and base else "–"

    scaled = (f"scaled from a full epoch of {args.full_steps:,} steps + {args.n_test:,} test images" if args.steps
              else "a full epoch")
    lines = [f"# GPU training speed ({args.teacher} → {args.student} KD, batch {args.batch})", "",
             *header, f"* Command: `{command}`", "",
             f"Each row: a warm-up epoch of {args.warmup_steps} step(s), then a measured epoch of "
             f"{args.steps or 'all'} steps of batch {args.batch} and a test pass over {args.test_images} test "
             f"images ({scaled}); "
             f"images/s = training images / wall time of the measured epoch with its test pass. Packed rows: "
             f"all jobs' training images / (last end − first start), the jobs released together after warm-up.", "",
             "| run | jobs | images/s (aggregate) | images/s per job | × RepDistiller-style loop | "
             "steps: graph replays / eager (all jobs, warm-up included) | status |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        per_job = f"{r.images_s / r.jobs:,.0f}" if r.images_s else "–"
        agg = f"{r.images_s:,.0f}" if r.images_s else "–"
        lines.append(f"| {r.label} | {r.jobs} | {agg} | {per_job} | {ratio(r.images_s)} | {steps_cell(r)} | "
                     f"{r.status} |")
    lines += ["", *notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="tiny data, small models, few steps (seconds)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    parser.add_argument("--budget-s", type=float, default=280.0, help="overall limit in seconds (default 280)")
    parser.add_argument("--teacher", default=None, help="default resnet56 (smoke: resnet8)")
    parser.add_argument("--student", default=None, help="default resnet20 (smoke: resnet8)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="measured steps (default 200, smoke 3; 0 = epoch)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="default 30 (smoke 1)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 8, smoke 1)")
    parser.add_argument("--jobs", default=None, help="packed job counts (default 1,2,4,8; smoke 1,2)")
    parser.add_argument("--modes", default=None,
                        help=f"engine modes among {','.join(MODES)} (default all; smoke: paper)")
    parser.add_argument("--out", help=f"report (default {DOCS_OUT.relative_to(ROOT)}; smoke: a temp file)")
    parser.add_argument("--mps", default="auto", choices=["auto", "off"],
                        help="also measure the packed rows under CUDA MPS (auto: when nvidia-cuda-mps-control "
                             "is found and the device is CUDA)")
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker)
        return
    t_start = time.monotonic()
    command = "python bench/gpu.py " + " ".join(sys.argv[1:])
    smoke = args.smoke
    args.teacher = args.teacher or ("resnet8" if smoke else "resnet56")
    args.student = args.student or ("resnet8" if smoke else "resnet20")
    args.steps = args.steps if args.steps is not None else (3 if smoke else 200)
    args.warmup_steps = args.warmup_steps or (1 if smoke else 30)
    args.workers = args.workers if args.workers is not None else (1 if smoke else 8)
    jobs = [int(n) for n in (args.jobs or ("1,2" if smoke else "1,2,4,8")).split(",")]
    n_train, n_test = (640, 128) if smoke else (FULL_TRAIN, FULL_TEST)
    args.test_images = n_test if not args.steps else max(1, min(n_test, args.steps * args.batch * n_test // n_train))
    args.full_steps, args.n_test = -(-n_train // args.batch), n_test

    modes = [m for m in (args.modes or ("paper" if smoke else ",".join(MODES))).split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown --modes {unknown}; use {','.join(MODES)}")


    from mcmikd.engine import Runtime, resolve_device

    device = str(resolve_device(args.device))
    compile_known = "compile" in getattr(Runtime, "__dataclass_fields__", {})
    work = Path(tempfile.mkdtemp(prefix="mcmikd-gpu-bench-"))
    out = Path(args.out) if args.out else (work.parent / f"{work.name}-report.md" if smoke else DOCS_OUT)
    header = machine_header(device)
    logs = out.parent / f"{out.stem}-logs"  # workers' logs of rows that fail (kept)
    rows: list[Row] = []
    notes: list[str] = []
    # torch threads per process: the GPU does the work; on a CPU (smoke runs) one thread each, so that the
    # processes of a row do not oversubscribe the cores
    threads_total = (os.cpu_count() or 1) if device.startswith("cuda") else 1

    def deadline(section: str) -> float:
        return t_start + SHARES[section] * args.budget_s

    def write() -> None:
        text = render(rows, header, args, command, notes)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        best_pack = max((r for r in rows if r.section == "packing" and r.images_s), key=lambda r: r.images_s,
                        default=None)
        out.with_suffix(".json").write_text(json.dumps({
            "command": command, "device": device, "header": header, "smoke": smoke,
            "steps": args.steps, "warmup_steps": args.warmup_steps, "batch": args.batch,
            "teacher": args.teacher, "student": args.student,
            "rows": [r.__dict__ for r in rows], "best_pack": best_pack.jobs if best_pack else None}, indent=1))

    try:
        # ---------------------------------------------------------------------------------------- data
        t0 = time.monotonic()
        write_fake_cifar100(work / "data", n_train, n_test)
        from mcmikd.jobs.prepare import prepare_data

        prepare_data({"name": "cifar100", "root": str(work / "data"), "download": False,
                      "verify_checksums": False}, str(work / "data.pt"))
        notes.append(f"Fake CIFAR-100 folder: {n_train:,} train / {n_test:,} test images, written and prepared "
                     f"in {time.monotonic() - t0:.1f} s.")
        notes.append("The RepDistiller-style loop keeps PyTorch's defaults besides cudnn.benchmark, as RepDistiller "
                     "does: fp32 tensors, with TF32 convolutions allowed (torch.backends.cudnn.allow_tf32) on GPUs "
                     "that have TF32.")
        common = {"device": device, "teacher": args.teacher, "student": args.student, "batch": args.batch,
                  "steps": args.steps, "warmup_steps": args.warmup_steps, "test_images": args.test_images}

        # ---------------------------------------------------------------------------------------- RepDistiller
        label = f"RepDistiller-style loop (fp32, cudnn.benchmark, DataLoader {args.workers} workers)"
        speed, status, _ = run_group("repdistiller", [{**common, "root": str(work / "data"),
                                                       "workers": args.workers, "threads": threads_total}],
                                     deadline("repdistiller") - time.monotonic(), work)
        rows.append(Row("repdistiller", label, 1, speed, status))
        write()

        # ---------------------------------------------------------------------------------------- engine modes
        variants = [(m, c) for c in COMPILE for m in modes]
        runnable = [v for v in variants if compile_known or v[1] == "none"]
        best: tuple[float, dict, str] | None = None
        for mode, comp in variants:
            name, cfg = MODES[mode]
            label = f"this engine, {name}, compile {comp}"
            if not compile_known and comp != "none":
                rows.append(Row("engine", label, 1, None, "not available in this engine"))
                write()
                continue
            runtime_cfg = {"device": device, **cfg, **({"compile": comp} if compile_known else {})}
            if not compile_known:
                label = f"this engine, {name} (no runtime.compile key: eager)"
            box = (deadline("engine") - time.monotonic()) / (len(runnable) - runnable.index((mode, comp)))
            speed, status, res = run_group("engine", [{**common, "data": str(work / "data.pt"),
                                                       "runtime": runtime_cfg, "threads": threads_total}], box, work,
                                           logs)
            rows.append(Row("engine", label, 1, speed, status, {"runtime": runtime_cfg,
                                                                 "resolved": res[0] if res else None,
                                                                 "results": res}))
            if speed and (best is None or speed > best[0]):
                best = (speed, runtime_cfg, label)
            write()

        # ---------------------------------------------------------------------------------------- packing
        if best is None:
            notes.append("Packing: not run (no engine row finished).")
        else:
            notes.append(f"Packed rows use the fastest single-job mode: {best[2].removeprefix('this engine, ')}; "
                         f"1 job is that row.")
            rows.append(Row("packing", "packed engine jobs, 1 at once (the row above)", 1, best[0], "ok",
                            {"runtime": best[1]}))
            packs = [n for n in jobs if n > 1]
            mps = start_mps(work, args.mps, device)
            if mps is None and args.mps != "off":
                notes.append("CUDA MPS: not measured (" + ("no CUDA device" if not device.startswith("cuda") else
                             "nvidia-cuda-mps-control not found or did not start") + ").")
            groups = [(n, None) for n in packs] + ([(n, mps) for n in packs] if mps else [])
            try:
                for i, (n, env) in enumerate(groups):
                    weights = [m + 4 for m, _ in groups[i:]]
                    box = (deadline("packing") - time.monotonic()) * weights[0] / sum(weights)
                    specs = [{**common, "data": str(work / "data.pt"), "runtime": best[1],
                              "threads": max(1, threads_total // n)} for _ in range(n)]
                    speed, status, res = run_group("engine", specs, box, work, logs, env)
                    how = "with CUDA MPS" if env else "time-sliced (no MPS)"
                    rows.append(Row("packing", f"packed engine jobs, {n} at once on one device, {how}", n, speed,
                                    status, {"runtime": best[1], "mps": bool(env), "results": res}))
                    write()
            finally:
                if mps:
                    stop_mps(work)

        # ---------------------------------------------------------------------------------------- targets
        base = next((r.images_s for r in rows if r.section == "repdistiller" and r.images_s), None)
        paper = [r for r in rows if r.section == "engine" and r.images_s and "paper" in r.label]
        paper_row = next((r for r in paper if "graphs" in r.label), paper[0] if paper else None)
        packed = max((r.images_s for r in rows if r.section == "packing" and r.jobs > 1 and r.images_s), default=None)
        best_packed = max((r for r in rows if r.section == "packing" and r.jobs > 1 and r.images_s),
                          key=lambda r: r.images_s, default=None)
        if best_packed is not None:
            notes.append(f"Fastest packing: {best_packed.label} ({best_packed.images_s:,.0f} images/s); use it "
                         "(profiles/local `gpu` slots, and workflow/scripts/mps.sh when it is the MPS row).")
        if base:
            notes.append("Targets (issue): single job, paper runtime ≥ 5× the RepDistiller-style loop: "
                         + (f"{paper_row.images_s / base:.2f}× ({paper_row.label})" if paper_row else "not measured")
                         + "; packed aggregate ≥ 10×: " + (f"{packed / base:.2f}×" if packed else "not measured")
                         + ".")
        notes.append(f"Total wall time {time.monotonic() - t_start:.0f} s (budget {args.budget_s:.0f} s).")
    except BaseException as exc:
        notes.append(f"Interrupted: {type(exc).__name__}: {exc}")
        raise
    finally:
        write()
        shutil.rmtree(work, ignore_errors=True)
        print(out.read_text())
        print(f"written: {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
