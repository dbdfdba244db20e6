"""Every figure renders to a non-empty PNG and PDF from small synthetic inputs, also when the MCMI teacher
collapsed and its students were skipped."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mcmikd import plots

CLASSES = [str(i) for i in range(10)]
LAYOUTS = {
    "fewshot": {"pairs": [["resnet32", "resnet8"]], "methods": ["kd"], "fractions": [0.05, 0.1, 0.25, 0.5]},
    "zeroshot": {"pairs": [["resnet32", "resnet8"]], "methods": ["kd"], "omitted": [[3], [1, 3]],
                 "class_names": CLASSES[:5]},  # 5 classes keep the test fast
    "temperature": {"pairs": [["resnet32", "resnet8"]], "methods": ["kd"], "temperatures": [1.0, 2.0, 4.0, 8.0]},
}
TEMPS = [1, 2, 4, 6, 8, 10]


def _confusion(rng, n, omitted, recall_omitted, per_class=40):
    """Counts with ~90 % on the diagonal; an omitted class keeps `recall_omitted` of its images."""
    conf = np.zeros((n, n), int)
    for c in range(n):
        hit = recall_omitted if c in omitted else rng.uniform(0.85, 0.98)
        conf[c, c] = round(hit * per_class)
        wrong = rng.multinomial(per_class - conf[c, c], np.full(n - 1, 1 / (n - 1)))
        conf[c, [k for k in range(n) if k != c]] = wrong
    return conf


def _student(rng, kind, method, seed, *, n=10, fraction=1.0, omitted=(), temperature=4.0, skipped=False):
    row = {"experiment": "x", "role": "student", "file": "f.json", "teacher_arch": "none" if kind == "none" else
           "resnet32", "teacher_kind": kind, "lambda": 0.25 if kind == "mcmi" else None, "student": "resnet8",
           "method": method, "setting": "full", "fraction": fraction, "omitted": ".".join(map(str, omitted)),
           "temperature": None if method == "ce" else temperature, "seed": seed,
           "status": "skipped" if skipped else "ok", "reason": "collapsed teacher: ..." if skipped else None}
    if skipped:
        return row
    recall = 0.0 if method == "ce" else {"mll": 0.3, "mcmi": 0.5}[kind] + rng.uniform(-0.1, 0.1)
    conf = _confusion(rng, n, set(omitted), recall)
    per_class = (100 * np.diag(conf) / conf.sum(1)).tolist()
    acc = 100 * np.trace(conf) / conf.sum() - 10 * (1 - fraction) ** 2 - abs(np.log(temperature / 4))
    return {**row, "best_acc": acc + 0.3, "last_acc": acc, "best_epoch": 10,
            "per_class_acc_best": json.dumps(per_class), "per_class_acc_last": json.dumps(per_class),
            "confusion_best": json.dumps(conf.tolist()), "confusion_last": json.dumps(conf.tolist())}


def _teacher(kind, collapsed=False):
    scale = 1.3 if kind == "mcmi" else 1.0
    return {"experiment": "x", "role": "teacher", "teacher_arch": "resnet32", "teacher_kind": kind,
            "lambda": 0.25 if kind == "mcmi" else None, "status": "collapsed" if collapsed else "ok",
            "best_acc": 97.0, "last_acc": 96.8, "model_acc": 96.8,
            **{f"cmi_T{t}": scale * 0.2 * t * np.exp(-t / 3) for t in TEMPS}}


def write_runs(path, experiment, collapsed=False, n=5, seeds=(0, 1)):
    rng = np.random.default_rng(0)
    rows = [_teacher("mll"), _teacher("mcmi", collapsed)]
    kinds = ["mll", "mcmi"]
    for seed in seeds:
        if experiment == "fewshot":
            rows += [_student(rng, k, "kd", seed, n=n, fraction=f, skipped=collapsed and k == "mcmi")
                     for f in LAYOUTS["fewshot"]["fractions"] for k in kinds]
            if not collapsed:  # the CE-only baseline is optional: drawn in one case, absent in the other
                rows += [_student(rng, "none", "ce", seed, n=n, fraction=f) for f in LAYOUTS["fewshot"]["fractions"]]
        elif experiment == "zeroshot":
            for omitted in LAYOUTS["zeroshot"]["omitted"]:
                rows.append(_student(rng, "none", "ce", seed, n=n, omitted=omitted))
                rows += [_student(rng, k, "kd", seed, n=n, omitted=omitted, skipped=collapsed and k == "mcmi")
                         for k in kinds]
        else:
            rows += [_student(rng, k, "kd", seed, n=n, temperature=t, skipped=collapsed and k == "mcmi")
                     for t in LAYOUTS["temperature"]["temperatures"] for k in kinds]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def write_metrics(folder, collapsed=False, epochs=6):
    def history(kind, lam=None):
        out = []
        for e in range(1, epochs + 1):
            train = {"ce": 0.2 + 0.05 * e, "total": 0.0}
            if kind == "mcmi":
                train["neg_cmi"] = -lam * (0.05 + 0.04 * e) * (100 if collapsed and e > 3 else 1)
            out.append({"phase": "main", "epoch": e, "lr": 0.01, "train": train, "train_acc": 99.0,
                        "test_acc": 96.0 - (40 * (e > 3) if collapsed else 0.2 * e), "test_loss": 0.2,
                        "test_cmi": 0.05 + 0.02 * e, "seconds": 1.0})
        if collapsed and kind == "mcmi":
            out[-1]["train"]["ce"] = float("inf")
        return out

    mll = {"teacher": {"arch": "resnet32", "kind": "mll", "lambda": None}, "model_acc": 96.9, "collapsed": False,
           "collapse_reason": None, "history": history("mll")}
    files = [folder / "mll.json"]
    files[0].write_text(json.dumps(mll))
    for lam in (0.25, 2.0):
        bad = collapsed and lam == 2.0
        m = {"teacher": {"arch": "resnet32", "kind": "mcmi", "lambda": lam}, "model_acc": 50.0 if bad else 96.0,
             "mll_acc": 96.9, "collapsed": bad, "collapse_reason": "test accuracy 50.00% is below 0.5 × ..." if bad
             else None, "history": history("mcmi", lam)}
        path = folder / f"mcmi-{lam:g}.json"
        path.write_text(json.dumps(m))
        files.append(path)
    return [str(f) for f in files]


def write_cam(path, channels=1, n=4, size=16, teachers=("MLL", "MCMI")):
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    maps = torch.stack([torch.exp(-((yy - 4 - i) ** 2 + (xx - 8) ** 2) / 12.0) for i in range(n)])
    cam = {"indices": torch.arange(n), "images": torch.randint(0, 256, (n, channels, size, size), generator=gen,
                                                                 dtype=torch.uint8),
           "labels": torch.arange(n) % 10, "class_names": CLASSES, "center": True,
           "teachers": {k: {"maps": maps.flip(1) if k == "MCMI" else maps, "pred": torch.arange(n).roll(i),
                            "layer": "layer3", "arch": "resnet32", "kind": k.lower(),
                            "lambda": 0.25 if k == "MCMI" else None} for i, k in enumerate(teachers)}}
    torch.save(cam, path)
    return str(path)


def _written(tmp_path, name):
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    return str(png), str(pdf)


def _check(png, pdf):
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(pdf).read_bytes()[:5] == b"%PDF-"
    assert not list(Path(png).parent.glob(".*.tmp"))  # atomic writes leave no temporary file behind


@pytest.mark.parametrize("collapsed", [False, True])
@pytest.mark.parametrize("figure,experiment", [("fewshot", "fewshot"), ("zeroshot_bars", "zeroshot"),
                                               ("zeroshot_confusion", "zeroshot"), ("temperature", "temperature")])
def test_runs_figures(tmp_path, figure, experiment, collapsed):
    runs = write_runs(tmp_path / "runs.csv", experiment, collapsed)
    png, pdf = _written(tmp_path, figure)
    getattr(plots, f"{figure}_figure")(runs, LAYOUTS[experiment], "best", png, pdf)
    _check(png, pdf)


def test_runs_figures_survive_an_empty_table(tmp_path):
    empty = tmp_path / "runs.csv"
    empty.write_text("")
    for figure, experiment in [("fewshot", "fewshot"), ("zeroshot_bars", "zeroshot"),
                               ("zeroshot_confusion", "zeroshot"), ("temperature", "temperature")]:
        png, pdf = _written(tmp_path, figure)
        getattr(plots, f"{figure}_figure")(str(empty), LAYOUTS[experiment], "last", png, pdf)
        _check(png, pdf)


def test_omitted_classes_stay_text(tmp_path):
    runs = plots.read_runs(write_runs(tmp_path / "runs.csv", "zeroshot"))
    assert {o for o in runs["omitted"] if o} == {"3", "1.3"}


def test_teachers_mcmi_with_a_collapsed_teacher(tmp_path):
    png, pdf = _written(tmp_path, "teachers_mcmi")
    plots.teachers_mcmi_figure(write_metrics(tmp_path, collapsed=True), png, pdf)  # one row fine, one collapsed
    _check(png, pdf)


@pytest.mark.parametrize("channels,teachers", [(1, ("MLL", "MCMI")), (3, ("MLL", "MCMI")), (1, ("MLL",))])
def test_cam(tmp_path, channels, teachers):
    png, pdf = _written(tmp_path, "cam")
    plots.cam_figure(write_cam(tmp_path / "cam.pt", channels, n=7, teachers=teachers), png, pdf, per_row=4)
    _check(png, pdf)


@pytest.mark.parametrize("collapsed", [False, True])
def test_main_delta(tmp_path, collapsed):
    rng = np.random.default_rng(1)
    rows = [_teacher("mll"), _teacher("mcmi", collapsed)]
    for seed in (0, 1):
        rows.append(_student(rng, "none", "ce", seed))
        rows += [_student(rng, k, m, seed, skipped=collapsed and k == "mcmi") for m in ("kd", "crd")
                 for k in ("mll", "mcmi")]
    runs = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(runs, index=False)
    layout = {"pairs": [["resnet32", "resnet8"], ["resnet32", "ShuffleV1"]], "methods": ["ce", "kd", "crd", "fsp"]}
    png, pdf = _written(tmp_path, "main_delta")
    plots.main_delta_figure(str(runs), layout, "best", png, pdf)
    _check(png, pdf)
