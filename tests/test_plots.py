"""Every declared figure renders to a non-empty PNG and PDF from small synthetic inputs, for two and three compared
teacher objectives, also when the MCMI teacher collapsed and its students were skipped."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mcmikd import plots

CLASSES = [str(i) for i in range(10)]
OBJECTIVES = {"mll": ("MLL", "#0173B2"), "mcmi": ("MCMI", "#DE8F05"), "ce_finetune": ("CE-FT", "#029E73")}


def compared(names=("mll", "mcmi", "ce_finetune")) -> dict:
    return {"objectives": list(names), "labels": {n: OBJECTIVES[n][0] for n in names},
            "colors": {n: OBJECTIVES[n][1] for n in names}}


LAYOUTS = {
    "fewshot": {"pairs": [["resnet32", "resnet8"]], "methods": ["kd"], "fractions": [0.05, 0.1, 0.25, 0.5]},
    "zeroshot": {"pairs": [["resnet32", "resnet8"]], "methods": ["kd"], "omitted": [[3], [1, 3]],
                 "class_names": CLASSES[:5]},  # 5 classes keep the test fast
    "temperature": {"pairs": [["resnet32", "resnet8"]], "methods": ["kd"], "temperatures": [1.0, 2.0, 4.0, 8.0]},
}
FIGURES = {"fewshot": "mcmikd.experiments.fewshot:figure", "zeroshot_bars": "mcmikd.experiments.zeroshot:bars_figure",
           "zeroshot_confusion": "mcmikd.experiments.zeroshot:confusion_figure",
           "temperature": "mcmikd.experiments.temperature:figure", "main_delta": "mcmikd.experiments.main:delta_figure",
           "cam": "mcmikd.experiments.cam:figure", "teachers_finetuning": "mcmikd.plots:teachers_finetuning_figure"}
RECALL = {"mll": 0.3, "mcmi": 0.5, "ce_finetune": 0.35}
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
           "resnet32", "teacher_objective": kind, "teacher_variant": kind, "student": "resnet8",
           "method": method, "setting": "full", "fraction": fraction, "omitted": ".".join(map(str, omitted)),
           "temperature": None if method == "ce" else temperature, "seed": seed,
           "status": "skipped" if skipped else "ok", "reason": "collapsed teacher: ..." if skipped else None}
    if skipped:
        return row
    recall = 0.0 if method == "ce" else RECALL[kind] + rng.uniform(-0.1, 0.1)
    conf = _confusion(rng, n, set(omitted), recall)
    per_class = (100 * np.diag(conf) / conf.sum(1)).tolist()
    acc = 100 * np.trace(conf) / conf.sum() - 10 * (1 - fraction) ** 2 - abs(np.log(temperature / 4))
    return {**row, "best_acc": acc + 0.3, "last_acc": acc, "best_epoch": 10,
            "per_class_acc_best": json.dumps(per_class), "per_class_acc_last": json.dumps(per_class),
            "confusion_best": json.dumps(conf.tolist()), "confusion_last": json.dumps(conf.tolist())}


def _teacher(kind, collapsed=False):
    scale = 1.3 if kind == "mcmi" else 1.0
    return {"experiment": "x", "role": "teacher", "teacher_arch": "resnet32", "teacher_objective": kind,
            "teacher_variant": kind, "teacher_label": OBJECTIVES[kind][0], "status": "collapsed" if collapsed else "ok",
            "best_acc": 97.0, "last_acc": 96.8, "model_acc": 96.8,
            **{f"cmi_T{t}": scale * 0.2 * t * np.exp(-t / 3) for t in TEMPS}}


def write_runs(path, experiment, collapsed=False, n=5, seeds=(0, 1)):
    rng = np.random.default_rng(0)
    rows = [_teacher("mll"), _teacher("mcmi", collapsed), _teacher("ce_finetune")]
    kinds = list(OBJECTIVES)
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
            if kind == "mcmi":
                out[-1]["teacher"] = {"cmi": 0.1 + 0.01 * e, "frozen_kl": 0.1 + 0.03 * e, "drift": 0.02 * e}
            elif kind == "ce_finetune":
                out[-1]["teacher"] = {"cmi": 0.1 + 0.005 * e, "frozen_kl": None, "drift": None}
        if collapsed and kind == "mcmi":
            out[-1]["train"]["ce"] = None  # strict JSON writes a non-finite value as null
        return out

    def teacher(objective, variant, hp):
        return {"arch": "resnet32", "objective": objective, "variant": variant, "hp": hp}

    mll = {"teacher": teacher("mll", "mll", {}), "model_acc": 96.9, "collapsed": False, "collapse_reason": None,
           "history": history("mll")}
    control = {"teacher": teacher("ce_finetune", "ce_finetune", {}), "model_acc": 96.5, "collapsed": False,
               "collapse_reason": None, "history": history("ce_finetune")}
    files = [folder / "mll.json", folder / "ce_finetune.json"]
    files[0].write_text(json.dumps(mll))
    files[1].write_text(json.dumps(control))
    for lam in (0.25, 2.0):
        bad = collapsed and lam == 2.0
        m = {"teacher": teacher("mcmi", f"mcmi-{lam:g}", {"lambda": lam, "centroids": "eval"}),
             "model_acc": 50.0 if bad else 96.0, "start_acc": 96.9, "collapsed": bad,
             "collapse_reason": "test accuracy 50.00% is below 0.5 × ..." if bad else None,
             "history": history("mcmi", lam)}
        path = folder / f"mcmi-{lam:g}.json"
        path.write_text(json.dumps(m))
        files.append(path)
    return [str(f) for f in files]


def write_cam(path, channels=1, n=4, size=16, teachers=("mll", "mcmi")):
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    maps = torch.stack([torch.exp(-((yy - 4 - i) ** 2 + (xx - 8) ** 2) / 12.0) for i in range(n)])
    cam = {"indices": torch.arange(n), "images": torch.randint(0, 256, (n, channels, size, size), generator=gen,
                                                                 dtype=torch.uint8),
           "labels": torch.arange(n) % 10, "class_names": CLASSES, "center": True,
           "teachers": {k: {"maps": maps.flip(1) if k == "mcmi" else maps, "pred": torch.arange(n).roll(i),
                            "layer": "layer3", "arch": "resnet32", "objective": k, "variant": k, "hp": {}}
                        for i, k in enumerate(teachers)}}
    torch.save(cam, path)
    return str(path)


def _written(tmp_path, name):
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    return str(png), str(pdf)


def _check(png, pdf):
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(pdf).read_bytes()[:5] == b"%PDF-"
    assert not list(Path(png).parent.glob(".*.tmp"))  # atomic writes leave no temporary file behind


def draw(figure, inputs, layout, metric="best", tmp_path=None):
    png, pdf = _written(tmp_path, figure)
    plots.draw(FIGURES[figure], [str(i) for i in inputs], layout, metric, png, pdf)
    _check(png, pdf)


@pytest.mark.parametrize("names", [("mll", "mcmi"), ("mll", "mcmi", "ce_finetune")])
@pytest.mark.parametrize("collapsed", [False, True])
@pytest.mark.parametrize("figure,experiment", [("fewshot", "fewshot"), ("zeroshot_bars", "zeroshot"),
                                               ("zeroshot_confusion", "zeroshot"), ("temperature", "temperature")])
def test_runs_figures(tmp_path, figure, experiment, collapsed, names):
    runs = write_runs(tmp_path / "runs.csv", experiment, collapsed)
    draw(figure, [runs], {**LAYOUTS[experiment], **compared(names)}, tmp_path=tmp_path)


def test_runs_figures_survive_an_empty_table(tmp_path):
    empty = tmp_path / "runs.csv"
    empty.write_text("")
    for figure, experiment in [("fewshot", "fewshot"), ("zeroshot_bars", "zeroshot"),
                               ("zeroshot_confusion", "zeroshot"), ("temperature", "temperature")]:
        draw(figure, [empty], {**LAYOUTS[experiment], **compared()}, "last", tmp_path)


def test_omitted_classes_stay_text(tmp_path):
    runs = plots.read_runs(write_runs(tmp_path / "runs.csv", "zeroshot"))
    assert {o for o in runs["omitted"] if o} == {"3", "1.3"}


def test_fine_tuning_curves_with_a_collapsed_teacher_and_the_control(tmp_path):
    layout = {**compared(), "start_from": {"mcmi": "mll", "ce_finetune": "mll"}}
    draw("teachers_finetuning", write_metrics(tmp_path, collapsed=True), layout, tmp_path=tmp_path)


def test_fine_tuning_figure_shows_the_teacher_check(tmp_path, monkeypatch):
    """The last panel of each fine-tuned teacher's row: its true CMI, the KL to its loss's centroids and the drift
    (three lines for MCMI; only the CMI for the control, whose loss has no centroids)."""
    saved = []
    monkeypatch.setattr(plots, "save", lambda fig, png, pdf: saved.append(fig))
    layout = {**compared(), "start_from": {"mcmi": "mll", "ce_finetune": "mll"}}
    plots.draw(FIGURES["teachers_finetuning"], write_metrics(tmp_path), layout, "best", *_written(tmp_path, "f"))
    checks = [ax for ax in saved[0].get_axes() if ax.get_title() == plots._CHECK_TITLE]
    assert sorted(len(ax.get_lines()) for ax in checks) == [1, 3, 3]
    mcmi = next(ax for ax in checks if len(ax.get_lines()) == 3)
    cmi, kl, drift = (line.get_ydata() for line in mcmi.get_lines())
    assert np.allclose(kl - cmi, drift)


@pytest.mark.parametrize("channels,teachers", [(1, ("mll", "mcmi", "ce_finetune")), (3, ("mll", "mcmi")),
                                               (1, ("mll",))])
def test_cam(tmp_path, channels, teachers):
    cam = write_cam(tmp_path / "cam.pt", channels, n=7, teachers=teachers)
    draw("cam", [cam], {**compared(("mll", "mcmi", "ce_finetune")), "arch": "resnet32"}, tmp_path=tmp_path)


@pytest.mark.parametrize("collapsed", [False, True])
def test_main_delta(tmp_path, collapsed):
    rng = np.random.default_rng(1)
    rows = [_teacher("mll"), _teacher("mcmi", collapsed), _teacher("ce_finetune")]
    for seed in (0, 1):
        rows.append(_student(rng, "none", "ce", seed))
        rows += [_student(rng, k, m, seed, skipped=collapsed and k == "mcmi") for m in ("kd", "crd")
                 for k in OBJECTIVES]
    runs = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(runs, index=False)
    layout = {"pairs": [["resnet32", "resnet8"], ["resnet32", "ShuffleV1"]], "methods": ["ce", "kd", "crd", "fsp"],
              **compared()}
    draw("main_delta", [runs], layout, tmp_path=tmp_path)
