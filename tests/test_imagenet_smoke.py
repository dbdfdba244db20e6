"""The ImageNet path end to end through Snakemake, at smoke scale on a CPU (issue 21): `config/imagenet.yaml` with
its two pairs replaced by one small one (resnet18 → MobileNetV1 at ImageNet's 224 px), one epoch, and every training
job run as 2 torch.distributed processes (`runtime.processes: 2`, gloo) on a generated class-folder dataset of 3
ImageNet classes (Border terrier among them), streamed from its files, up to the main table (data, MLL teacher, its
CMI, the KD and no-KD students, the runs and the table; Eigen-CAM and the figures on streamed data are covered by
tests/test_streaming.py's job chain and the in-memory workflow tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CLASSES = ("n02085620", "n02093754", "n02099601")


def _folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for c, wnid in enumerate(CLASSES):
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 52 - 5 * c, 3), dtype=np.uint8))
                img.save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=90)


def _smoke_config(data: Path) -> dict:
    c = yaml.safe_load((ROOT / "config" / "imagenet.yaml").read_text())
    c["name"] = "imagenet-smoke"
    c["dataset"]["root"] = str(data)
    c["runtime"].update(device="cpu", threads=1, processes=2, channels_last=False)
    one_epoch = {"epochs": 1, "batch_size": 4, "milestones": []}  # 9 images: batches of 4 and 5
    c["teachers"]["training"].update(one_epoch)
    c["teachers"]["objectives"] = ["mll"]
    c["teachers"]["cmi_temperatures"] = [1]
    c["students"]["training"].update(one_epoch)
    c["experiments"]["main"].update(pairs=[{"teacher": "resnet18", "student": "MobileNetV1"}], methods=["kd"])
    c["experiments"]["cam"]["enabled"] = False  # Eigen-CAM on streamed files: tests/test_streaming.py's job chain
    c.pop("reference")  # its cells are the real pairs'
    return c


@pytest.mark.slow
def test_the_imagenet_config_runs_end_to_end_with_two_processes_per_training_job(tmp_path):
    _folder(tmp_path / "imagenet")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_smoke_config(tmp_path / "imagenet"), allow_unicode=True))
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
           str(tmp_path / "config.yaml"), "--cores", "2", "results/imagenet-smoke/tables/main.md"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = tmp_path / "results" / "imagenet-smoke"
    runs = pd.read_csv(results / "runs" / "main.csv")
    assert sorted(runs.loc[runs["role"] == "student", "method"]) == ["ce", "kd"] and (runs["status"] == "ok").all()
    teacher = json.loads((results / "teachers" / "resnet18" / "mll" / "seed0" / "metrics.json").read_text())
    for record in (teacher, *(json.loads(p.read_text()) for p in results.glob("students/**/seed0.json"))):
        assert record["provenance"]["config"]["runtime"]["processes"] == 2  # each trained as 2 processes
    log = (tmp_path / "logs" / "imagenet-smoke" / "train_teacher" / "resnet18.mll.seed0.log").read_text()
    assert log.count("epoch 1/1") == 1  # rank 0 alone writes the job's log
    assert (results / "tables" / "main.md").stat().st_size > 0
