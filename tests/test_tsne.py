"""The zero-shot t-SNE: its config block, its job (test-set logits of each model embedded with scikit-learn's t-SNE,
seeded, 0-based class ids, omitted classes flagged) and its figure."""

import csv
import json

import numpy as np
import pytest
import torch

from mcmikd.errors import ConfigError
from mcmikd.jobs.tsne import COLUMNS, embed, embedded_indices, tsne_logits

RUNTIME = {"device": "cpu", "channels_last": "auto", "precision": "fp32", "deterministic": True}


# ----------------------------------------------------------------------------------------------- config
def test_defaults_are_the_official_perplexity_and_every_test_image(load):
    grid = load()
    zero = grid.experiments["zeroshot"]
    assert zero.body["tsne"] == {"enabled": True, "perplexity": 15, "max_images": None}
    # one figure per omitted set, drawn from its own embedding files
    figures = grid.figures()
    for setting in ("omit3", "omit3.8"):
        fig = figures[f"zeroshot_tsne_{setting}"]
        assert fig.inputs == (f"tsne/zeroshot/{setting}.csv", f"tsne/zeroshot/{setting}.json")
        assert fig.draw == "mcmikd.experiments.zeroshot:tsne_figure"
    params = grid.tsne_params("zeroshot", "omit3.8")
    assert params["omitted"] == [3, 8] and params["seed"] == 0 and params["perplexity"] == 15.0
    assert params["max_images"] is None and "runtime" in params


def test_panels_are_each_teacher_then_its_students_and_last_the_ce_student(load):
    zero = load().experiments["zeroshot"]
    params = zero.tsne_params("omit3")
    assert [p["name"] for p in params["panels"]] == ["teacher/mll", "kd/mll", "teacher/mcmi", "kd/mcmi",
                                                     "teacher/ce_finetune", "kd/ce_finetune", "ce"]
    # the models of the first student seed and of the teacher seed it learned from, in the same order
    assert zero.tsne_models("omit3") == [
        "teachers/resnet20/mll/seed0/model.pt", "students/resnet20/mll/resnet8/kd/omit3/seed0.pt",
        "teachers/resnet20/mcmi-0.35/seed0/model.pt", "students/resnet20/mcmi-0.35/resnet8/kd/omit3/seed0.pt",
        "teachers/resnet20/ce_finetune/seed0/model.pt", "students/resnet20/ce_finetune/resnet8/kd/omit3/seed0.pt",
        "students/none/none/resnet8/ce/omit3/seed0.pt"]
    assert len(zero.tsne_student_models()) == 8  # 4 students × 2 omitted sets


def test_disabled_tsne_has_no_figure_and_a_perplexity_above_the_cap_is_refused(load):
    grid = load(lambda c: c["experiments"]["zeroshot"].update(tsne={"enabled": False}))
    assert not [f for f in grid.figures() if "tsne" in f]
    with pytest.raises(ConfigError, match=r"experiments.zeroshot.tsne.perplexity': 15 must be below tsne.max_images"):
        load(lambda c: c["experiments"]["zeroshot"].update(tsne={"max_images": 10}))
    with pytest.raises(ConfigError, match="tsne"):
        load(lambda c: c["experiments"]["zeroshot"].update(tsne={"perplexity": 0}))


# ----------------------------------------------------------------------------------------------- embedding
def _blobs(n_per=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, 5))
    return np.concatenate([c + rng.normal(0, 1, (n_per, 5)) for c in centres])


def test_the_embedding_is_seeded():
    logits = _blobs()
    a, kl, params = embed(logits, 10, seed=0)
    b, _, _ = embed(logits, 10, seed=0)
    assert a.shape == (60, 2) and kl >= 0
    np.testing.assert_array_equal(a, b)
    assert params["perplexity"] == 10 and params["init"] == "pca" and params["random_state"] == 0
    # well separated clusters stay apart: each point's nearest embedded neighbour is of its own cluster
    cluster = np.repeat(np.arange(3), 20)
    d = ((a[:, None] - a[None]) ** 2).sum(-1) + np.eye(60) * 1e12
    assert (cluster[d.argmin(1)] == cluster).all()


def test_a_perplexity_not_below_the_number_of_images_is_one_line():
    from mcmikd.errors import DataError

    with pytest.raises(DataError, match="perplexity 15 needs more than 15 images, got 10"):
        embed(_blobs(n_per=5, k=2), 15, seed=0)


def test_the_cap_draws_a_seeded_sorted_subset():
    np.testing.assert_array_equal(embedded_indices(7, None, 0), np.arange(7))
    np.testing.assert_array_equal(embedded_indices(7, 50, 0), np.arange(7))
    a = embedded_indices(100, 30, seed=3)
    assert len(set(a)) == 30 and (np.diff(a) > 0).all() and a.max() < 100
    np.testing.assert_array_equal(a, embedded_indices(100, 30, seed=3))
    assert not np.array_equal(a, embedded_indices(100, 30, seed=4))


# ----------------------------------------------------------------------------------------------- the job
@pytest.fixture(scope="module")
def tsne_run(tmp_path_factory):
    """The job on a hand-made 3-class set of 40 test images: two tiny models and a skipped student."""
    from mcmikd.data import DatasetTensors
    from mcmikd.io import torch_save
    from mcmikd.jobs.common import save_model
    from mcmikd.models import create_model

    tmp = tmp_path_factory.mktemp("tsne")
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 3
    images = (torch.rand(40, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    DatasetTensors(name="t", train_images=images, train_labels=labels, test_images=images, test_labels=labels,
                   mean=(0.5,), std=(0.25,), class_names=["zero", "one", "two"], hflip=False).to_file(tmp / "data.pt")
    models = []
    for i, name in enumerate(("teacher.pt", "student.pt")):
        torch.manual_seed(i)
        save_model(create_model("resnet8", 3, 1), tmp / name, num_classes=3, in_channels=1, epoch=1)
        models.append(str(tmp / name))
    torch_save({"status": "skipped", "reason": "collapsed teacher: x"}, tmp / "skipped.pt")
    models.append(str(tmp / "skipped.pt"))
    params = {"setting": "omit1", "omitted": [1], "seed": 0, "perplexity": 5.0, "max_images": 30, "runtime": RUNTIME,
              "panels": [{"name": "teacher/mll", "role": "teacher", "objective": "mll", "method": None,
                          "arch": "resnet8", "seed": 0},
                         {"name": "kd/mll", "role": "student", "objective": "mll", "method": "kd",
                          "arch": "resnet8", "seed": 0},
                         {"name": "kd/mcmi", "role": "student", "objective": "mcmi", "method": "kd",
                          "arch": "resnet8", "seed": 0}]}
    outs = []
    for run in ("a", "b"):
        tsne_logits(str(tmp / "data.pt"), models, params, str(tmp / f"{run}.csv"), str(tmp / f"{run}.json"),
                    threads=1)
        outs.append((tmp / f"{run}.csv", tmp / f"{run}.json"))
    return outs, labels


def test_the_job_embeds_each_model_with_0_based_ids_and_the_omitted_classes_flagged(tsne_run):
    outs, labels = tsne_run
    csv_path, record_path = outs[0]
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert {r["panel"] for r in rows} == {"teacher/mll", "kd/mll"}  # the skipped student has no points
    teacher = [r for r in rows if r["panel"] == "teacher/mll"]
    assert len(teacher) == 30  # the cap
    for r in teacher:
        assert int(r["label"]) == int(labels[int(r["test_index"])])  # the dataset's own 0-based ids
        assert r["omitted"] == ("1" if r["label"] == "1" else "0")
    assert {r["label"] for r in teacher} == {"0", "1", "2"}
    record = json.loads(record_path.read_text())
    assert record["tsne"]["perplexity"] == 5.0 and record["tsne"]["init"] == "pca"
    assert record["tsne"]["random_state"] == 0 and record["tsne"]["sklearn_version"]
    assert record["omitted"] == [1] and record["num_images"] == 30 and record["num_test"] == 40
    assert record["panels"]["kd/mcmi"]["status"] == "skipped"
    assert record["panels"]["kd/mcmi"]["reason"] == "collapsed teacher: x"
    assert record["panels"]["teacher/mll"]["status"] == "ok" and record["panels"]["teacher/mll"]["kl_divergence"] >= 0


def test_the_job_is_deterministic(tsne_run):
    (a, _), (b, _) = tsne_run[0]
    assert a.read_text() == b.read_text()  # the same models and seed: the same embedding, to the digit


def test_the_figure_is_drawn_from_the_jobs_files(tsne_run, tmp_path):
    from mcmikd.experiments.zeroshot import tsne_figure

    csv_path, record_path = tsne_run[0][0]
    layout = {"objectives": ["mll", "mcmi"], "labels": {"mll": "MLL", "mcmi": "MCMI"},
              "colors": {"mll": "#0173B2", "mcmi": "#DE8F05"}, "methods": ["ce", "kd"],
              "class_names": ["zero", "one", "two"]}
    png, pdf = tmp_path / "t.png", tmp_path / "t.pdf"
    tsne_figure([str(csv_path), str(record_path)], layout, "last", str(png), str(pdf))
    assert png.stat().st_size > 10_000 and pdf.stat().st_size > 1000


def test_many_classes_get_a_legend_of_the_omitted_ones_only(tmp_path):
    """100 classes (cluttered_numbers): a hue per class and a legend naming only the omitted classes."""
    from mcmikd.experiments.zeroshot import tsne_figure

    rng = np.random.default_rng(0)
    labels = np.arange(300) % 100
    rows = [("teacher/mll", i, c, int(c in (5, 50)), c, *rng.normal(size=2)) for i, c in enumerate(labels)]
    with open(tmp_path / "p.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([COLUMNS, *rows])
    record = {"omitted": [5, 50], "class_names": [str(c) for c in range(100)], "num_images": 300, "num_test": 300,
              "tsne": {"perplexity": 15.0, "random_state": 0},
              "panels": {"teacher/mll": {"role": "teacher", "objective": "mll", "method": None, "arch": "resnet8",
                                         "status": "ok", "acc": 100.0, "acc_omitted": 100.0}}}
    (tmp_path / "r.json").write_text(json.dumps(record))
    layout = {"objectives": ["mll"], "labels": {"mll": "MLL"}, "colors": {"mll": "#0173B2"}, "methods": ["kd"]}
    tsne_figure([str(tmp_path / "p.csv"), str(tmp_path / "r.json")], layout, "last", str(tmp_path / "f.png"),
                str(tmp_path / "f.pdf"))
    assert (tmp_path / "f.png").stat().st_size > 10_000
