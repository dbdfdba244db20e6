"""The few-shot run behind +5.72 % (per-experiment teacher checkpoint, CRD's bank over the full training set) and
the early-stopped teachers of the paper's Fig. 2 (experiment kind `early_stopped`, MLL's `stop_epoch`)."""

import json
import subprocess

import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT, SCHEMA, random_dataset
from mcmikd.errors import ConfigError

RUNTIME = {"device": "cpu", "channels_last": False, "precision": "fp32", "deterministic": True}
AUGMENT = {"crop_padding": 1, "hflip": False}
EARLY = {"pairs": [{"teacher": "resnet20", "student": "resnet8"}], "epochs": [5, 10], "seeds": [0]}


def with_early(**changes):
    def mutate(c):
        c["experiments"]["early_stopped"] = {**json.loads(json.dumps(EARLY)), **changes}
    return mutate


def cifar100(mutate=None):
    from mcmikd.config import load_grid

    cfg = yaml.safe_load((ROOT / "config" / "cifar100.yaml").read_text())
    if mutate:
        mutate(cfg)
    return load_grid(cfg, SCHEMA)


# ----------------------------------------------------------------------------------------------- the grid
def test_the_grid_plans_one_stopped_mll_teacher_and_its_students_per_epoch(load):
    grid = load(with_early())
    assert {"mll", "mll-e5", "mll-e10"} <= grid.teachers["resnet20"]
    for e in (5, 10):
        assert grid.variants[("resnet20", f"mll-e{e}")] == ("mll", {"stop_epoch": e})
        assert grid.teacher_params("resnet20", f"mll-e{e}", 0)["hp"] == {"stop_epoch": e}
        assert (grid.teacher_params("resnet20", f"mll-e{e}", 0)["recipe"]
                == grid.teacher_params("resnet20", "mll", 0)["recipe"])
    assert grid.teacher_params("resnet20", "mll", 0)["hp"] == {}  # the full teacher's job parameters are unchanged
    runs = grid.runs["early_stopped"]
    assert [(r.t_variant, r.method, r.setting, r.seed) for r in runs] == [
        ("mll", "kd", "full", 0), ("mll-e5", "kd", "full", 0), ("mll-e10", "kd", "full", 0),
        ("mcmi-0.35", "kd", "full", 0), ("ce_finetune", "kd", "full", 0)]
    # the full MLL, MCMI and control students are the main experiment's
    assert {r for r in runs if "-e" not in r.t_variant} <= set(grid.runs["main"])
    layout = grid.experiments["early_stopped"].layout()
    assert [v for _, v, _ in layout["teachers"]["resnet20"]] == ["mll-e5", "mll-e10", "mll", "mcmi-0.35",
                                                                 "ce_finetune"]
    assert layout["full_epochs"] == 30 and layout["methods"] == ["kd"]
    figure = grid.figures()["early_stopped"]
    assert figure.inputs == ("runs/early_stopped.csv",) and "worse teacher" in figure.caption


@pytest.mark.parametrize("changes, expected", [
    ({"epochs": [5, 30]}, r"experiments.early_stopped.epochs': \[30\] not before the end of the teachers' training"),
    ({"objectives": ["mcmi", "mll"]}, r"experiments.early_stopped.objectives': the first objective \('mcmi'\)"),
    ({"epochs": [0]}, r"experiments.early_stopped.epochs\[0\]': 0 is less than the minimum of 1"),
])
def test_bad_early_stopped_blocks_give_one_line(load, changes, expected):
    with pytest.raises(ConfigError, match=expected):
        load(with_early(**changes))


def test_the_paper_configs_plan_fig2_and_the_official_few_shot_run():
    grid = cifar100()
    assert {f"mll-e{e}" for e in (40, 80, 150, 180, 210)} <= grid.teachers["resnet56"]
    assert "early_stopped" in grid.runs and "early_stopped" in grid.figures()
    few = grid.runs["fewshot"]
    # like with like: every compared fine-tuned teacher's best.pt, the MLL teacher's model.pt
    assert {(r.t_variant, r.t_model) for r in few} == {("mll", "model"), ("mcmi-0.15", "best"),
                                                       ("ce_finetune", "best")}
    crd = next(r for r in few if r.method == "crd" and r.t_variant == "mcmi-0.15")
    params = grid.student_params(crd)
    assert params["teacher"]["checkpoint"] == "best" and params["hp"]["bank"] == "full"
    assert crd.t_folder == "mcmi-0.15@best"
    kd = next(r for r in few if r.method == "kd" and r.t_variant == "mll")
    assert "checkpoint" not in grid.student_params(kd)["teacher"] and "bank" not in grid.student_params(kd)["hp"]
    # the main experiment's students (same teachers, setting full) keep model.pt and their parameters
    main = next(r for r in grid.runs["main"] if r.method == "crd" and r.t_variant == "mcmi-0.25")
    assert main.t_model == "model" and "bank" not in grid.student_params(main)["hp"]
    fewshot = grid.experiments["fewshot"]
    assert "MCMI teacher: best-on-test checkpoint (official), selected on the test set" in " ".join(
        __import__("mcmikd.experiments.fewshot", fromlist=["x"]).setup_footnotes(fewshot.layout()))
    assert "best-on-test checkpoint (official), selected on the test set" in fewshot.report_note()
    digits = yaml.safe_load((ROOT / "config" / "digits-full.yaml").read_text())
    from mcmikd.config import load_grid

    assert "mll-e20" in load_grid(digits, SCHEMA).teachers["resnet56"]


def test_the_default_checkpoint_is_last_and_last_needs_a_last_fine_tuning_checkpoint(load):
    grid = load()
    assert {r.t_model for r in grid.all_runs()} == {"model"}
    assert "teacher_checkpoint" not in grid.experiments["fewshot"].layout()
    best = load(lambda c: c["experiments"]["fewshot"].update(teacher_checkpoint="best")).runs["fewshot"]
    assert {(r.t_variant, r.t_model) for r in best} == {("mll", "model"), ("mcmi-0.35", "best"),
                                                        ("ce_finetune", "best")}
    # when model.pt already is the best state, `best` is model.pt, and `last` cannot be had
    kept = load(lambda c: (c["teachers"]["finetuning"].update(checkpoint="best"),
                           c["experiments"]["fewshot"].update(teacher_checkpoint="best")))
    assert {r.t_model for r in kept.runs["fewshot"]} == {"model"}
    assert {r.t_model for r in load(lambda c: c["teachers"]["finetuning"].update(checkpoint="best")).all_runs()} \
        == {"model"}  # by default an experiment uses what model.pt keeps
    with pytest.raises(ConfigError, match=r"^config key 'experiments.fewshot.teacher_checkpoint': 'last' needs"):
        load(lambda c: (c["teachers"]["finetuning"].update(checkpoint="best"),
                        c["experiments"]["fewshot"].update(teacher_checkpoint="last")))
    with pytest.raises(ConfigError, match=r"method_hp.crd': 'crd' is not one of this experiment's methods"):
        load(lambda c: c["experiments"]["fewshot"].update(method_hp={"crd": {"bank": "full"}}))


def test_the_split_of_a_student_folder():
    from mcmikd.config import StudentRun, split_teacher_folder

    run = StudentRun("resnet56", "mcmi-0.15", "resnet20", "kd", "frac0.05", 0, t_model="best")
    assert split_teacher_folder(run.t_folder) == ("mcmi-0.15", "best")
    assert split_teacher_folder("mll-e20") == ("mll-e20", "model")


@pytest.mark.slow
def test_a_dry_run_of_the_cifar100_config_plans_fig2_and_best_checkpoints(tmp_path):
    """snakemake -n on config/cifar100.yaml (no data needed for a dry run), the grid cut to the new parts."""
    import sys
    from pathlib import Path

    cfg = yaml.safe_load((ROOT / "config" / "cifar100.yaml").read_text())
    for name in ("main", "temperature", "lambda_sweep", "cam"):
        cfg["experiments"][name]["enabled"] = False
    cfg["experiments"]["fewshot"].update(fractions=[0.05], seeds=[0])
    cfg["experiments"]["early_stopped"]["seeds"] = [0]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(ROOT / "Snakefile"),
                          "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "1",
                          "-n"], capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    for e in (40, 80, 150, 180, 210):
        assert f"teachers/resnet56/mll-e{e}/seed0/model.pt" in text
    student = "students/resnet56/mcmi-0.15@best/resnet20/crd/frac0.05/seed0.json"
    job = next(block for block in text.split("rule train_student:") if student in block.split("log:")[0])
    assert "results/cifar100/teachers/resnet56/mcmi-0.15/seed0/best.pt" in job
    assert "students/resnet56/mll-e40/resnet20/kd/full/seed0.json" in text
    assert "tables/early_stopped.md" in text and "figures/early_stopped.png" in text


# ----------------------------------------------------------------------------------------------- teacher jobs
@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    from mcmikd.datasets.digits import load_digits

    path = tmp_path_factory.mktemp("data") / "data.pt"
    load_digits(image_size=8, test_fraction=0.25, split_seed=0).to_file(path)
    return str(path)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this file trains with one torch thread (conftest.one_torch_thread)."""


def _teacher_params(hp, schedule="cosine", epochs=3, objective="mll", checkpoint="last"):
    recipe = {"epochs": epochs, "batch_size": 64, "lr": 0.05, "schedule": schedule, "milestones": [2]}
    return {"arch": "resnet8", "objective": objective, "variant": objective, "hp": hp, "seed": 0, "recipe": recipe,
            "checkpoint": checkpoint, "collapse_ratio": 0.0, "augment": AUGMENT, "runtime": RUNTIME}


def test_a_stopped_teacher_is_the_full_runs_state_after_that_epoch(data_file, tmp_path, monkeypatch):
    from mcmikd.engine import Recipe, ResumeFile, fingerprint
    from mcmikd.jobs import teacher as jobs
    from mcmikd.teachers.mll import MLL

    # the stopped teacher: the 3-epoch cosine recipe stopped after epoch 2
    stopped = jobs.train_teacher(data_file, _teacher_params({"stop_epoch": 2}), str(tmp_path / "s.pt"),
                                 str(tmp_path / "s.json"))
    assert not stopped["collapsed"] and stopped["stop_epoch"] == 2 and stopped["model_epoch"] == 2
    assert [h["epoch"] for h in stopped["history"]] == [1, 2]
    assert stopped["history"][1]["lr"] == Recipe(epochs=3, lr=0.05, schedule="cosine").lr_at(2)
    # (a recipe shortened to 2 epochs would not be the same run under cosine: its epoch-2 lr differs)
    assert Recipe(epochs=2, lr=0.05, schedule="cosine").lr_at(2) != stopped["history"][1]["lr"]
    # the full run, interrupted after epoch 2's checkpoint: its resume file holds the state after epoch 2
    full = _teacher_params({})

    def interrupt(self, record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(MLL, "epoch_check", interrupt)
    with pytest.raises(KeyboardInterrupt):
        jobs.train_teacher(data_file, full, str(tmp_path / "f.pt"), str(tmp_path / "f.json"),
                           resume_path=str(tmp_path / "f.resume.pt"))
    state = ResumeFile(str(tmp_path / "f.resume.pt"), fingerprint(full)).load()
    assert state["next_epoch"] == 3
    after_two = {k.removeprefix("student."): v for k, v in state["objective"].items()}
    saved = torch.load(tmp_path / "s.pt", weights_only=True)["state_dict"]
    assert saved.keys() == after_two.keys() and all(torch.equal(saved[k], after_two[k]) for k in saved)


def test_fine_tuning_writes_the_best_state_and_the_student_records_which_it_used(data_file, tmp_path):
    from mcmikd.io import verify_file
    from mcmikd.jobs import student
    from mcmikd.jobs import teacher as jobs

    jobs.train_teacher(data_file, _teacher_params({}, "multistep", epochs=2), str(tmp_path / "mll.pt"),
                       str(tmp_path / "mll.json"))
    ft = jobs.train_teacher(data_file, {**_teacher_params({}, epochs=3, objective="ce_finetune"),
                                        "recipe": {"epochs": 3, "lr": 0.2, "schedule": "cosine"}},
                            str(tmp_path / "ft.pt"), str(tmp_path / "ft.json"), start_model=str(tmp_path / "mll.pt"),
                            start_metrics=str(tmp_path / "mll.json"), best_out=str(tmp_path / "best.pt"))
    verify_file(tmp_path / "best.pt")  # its sidecar sha256 record, like model.pt's
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "ft.pt", weights_only=True)
    assert best["epoch"] == ft["best_epoch"] == ft["best_checkpoint"]["epoch"] and last["epoch"] == 3
    assert best["test_acc"] == ft["best_acc"] and last["test_acc"] == ft["last_acc"] == ft["model_acc"]
    same = all(torch.equal(best["state_dict"][k], last["state_dict"][k]) for k in best["state_dict"])
    assert same == (ft["best_epoch"] == 3)
    params = {"teacher": {"arch": "resnet8", "objective": "ce_finetune", "variant": "ce_finetune",
                          "checkpoint": "best"}, "student": "resnet8", "method": "kd",
              "hp": {"gamma": 0.1, "alpha": 0.9, "temperature": 4}, "setting": {"fraction": 0.2},
              "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05}, "seed": 0, "augment": AUGMENT,
              "runtime": RUNTIME}
    s = student.train_student(data_file, params, str(tmp_path / "s.json"), str(tmp_path / "best.pt"),
                              str(tmp_path / "ft.json"))
    assert s["teacher_checkpoint"] == {"file": "best.pt", "checkpoint": "best", "epoch": ft["best_epoch"],
                                       "test_acc": ft["best_acc"]}
    from mcmikd.aggregate import collect_runs

    runs = collect_runs([str(tmp_path / "s.json")], [], "fewshot")
    assert runs["teacher_checkpoint"].tolist() == ["best"]


# ----------------------------------------------------------------------------------------------- CRD bank
def _stream(pool=None, omitted=()):
    from mcmikd.engine import Runtime, TrainStream

    data = random_dataset(48)
    runtime = Runtime(device=torch.device("cpu"), channels_last=False, precision="fp32", deterministic=True)
    return data, TrainStream(data, runtime, pool=pool, epoch_length=48, omitted=omitted)


def _crd(stream, data, bank):
    from mcmikd.distill import get_method
    from mcmikd.distill.base import DistillContext
    from mcmikd.jobs.student import full_training_set
    from mcmikd.models import create_model, feature_shapes

    labels, slots = full_training_set(data.train_labels, stream)
    ctx = DistillContext(num_classes=4, num_train=stream.num_visible, train_labels=stream.visible_labels,
                         in_channels=1, image_size=8, epochs=1, student_arch="resnet8", teacher_arch="resnet8",
                         student_shapes=feature_shapes("resnet8", 4, 1, 8),
                         teacher_shapes=feature_shapes("resnet8", 4, 1, 8), full_train_labels=labels,
                         full_train_slots=slots)
    torch.manual_seed(0)
    return get_method("crd")(create_model("resnet8", 4, 1), create_model("resnet8", 4, 1), {"bank": bank}, ctx)


@pytest.mark.parametrize("omitted", [(), (2,)], ids=["few-shot", "few-shot and zero-shot"])
def test_crd_full_bank_spans_the_allowed_training_set_and_draws_negatives_there(omitted, monkeypatch):
    from mcmikd.distill.methods import crd as crd_module

    data, stream = _stream(pool=torch.arange(3, 15), omitted=omitted)
    allowed = torch.nonzero(~torch.isin(data.train_labels, torch.tensor(omitted, dtype=torch.long))).flatten()
    visible = stream.num_visible
    full = _crd(stream, data, "full")
    n = len(allowed)  # 48 without omitted classes, 36 with class 2 left out
    assert full.memory_s.shape == full.memory_t.shape == (n, 128) and full.n_data == n
    assert torch.equal(full.labels, data.train_labels[allowed])  # no image of an omitted class
    assert torch.equal(full.labels[full.slots], stream.visible_labels)  # visible positions -> their own slots
    if not omitted:  # slots are the indices into the full training set (the official few-shot code)
        assert torch.equal(full.slots, torch.arange(3, 15))
    assert full.nce_k == n - 12  # capped: N − largest class count
    visible_bank = _crd(stream, data, "visible")
    assert visible_bank.memory_s.shape == (visible, 128) and visible_bank.n_data == visible

    drawn = []
    sample = crd_module.sample_other_class

    def spy(labels, anchor_labels, k, generator):
        drawn.append(out := sample(labels, anchor_labels, k, generator))
        return out

    monkeypatch.setattr(crd_module, "sample_other_class", spy)
    images, labels, positions = next(stream.batches(torch.Generator().manual_seed(0), 8))
    before = full.memory_s.clone()
    full.train().forward_train(images, labels, epoch=1, indices=positions, generator=torch.Generator())
    negatives = drawn[0]
    assert negatives.shape == (len(labels), n - 12) and int(negatives.max()) < n
    assert (full.labels[negatives] != labels.unsqueeze(1)).all()
    assert int(negatives.max()) >= 15 or n < 16  # drawn beyond the student's subset
    # the same draw made before the step (mcmikd.step's step_inputs) is over the full bank too
    early = full.step_inputs(labels, positions, torch.Generator().manual_seed(1))["negatives"]
    assert early.shape == negatives.shape and (full.labels[early] != labels.unsqueeze(1)).all()
    changed = torch.nonzero((full.memory_s != before).any(1)).flatten()
    assert torch.equal(changed, torch.unique(full.slots[positions]))  # only the batch's own slots move


def test_crd_visible_bank_is_unchanged():
    """`bank: visible` is the code before the option: the recorded run fingerprints of test_distill (crd plain/few)
    pin it; here, the default is visible and its bank is indexed by the visible positions themselves."""
    from mcmikd.distill import get_method

    assert get_method("crd").defaults["bank"] == "visible"
    data, stream = _stream()
    assert not _crd(stream, data, "visible").full_bank


def test_early_stopped_table_and_figure_on_hand_numbers(load, tmp_path):
    from mcmikd.experiments.early_stopped import EarlyStopped, figure

    layout = load(with_early()).experiments["early_stopped"].layout()
    accs = {"mll-e5": 60.0, "mll-e10": 70.0, "mll": 80.0, "mcmi-0.35": 78.0, "ce_finetune": 79.0}
    cmis = {"mll-e5": 0.30, "mll-e10": 0.20, "mll": 0.10, "mcmi-0.35": 0.25, "ce_finetune": 0.12}
    students = {"mll-e5": 70.0, "mll-e10": 72.0, "mll": 71.0, "mcmi-0.35": 74.0, "ce_finetune": 71.5}
    objective = {"mcmi-0.35": "mcmi", "ce_finetune": "ce_finetune"}
    rows = [{"role": "teacher", "teacher_arch": "resnet20", "teacher_variant": v, "status": "ok",
             "teacher_objective": objective.get(v, "mll"), "model_acc": a, "cmi_T1": cmis[v]} for v, a in accs.items()]
    rows += [{"role": "student", "teacher_arch": "resnet20", "teacher_variant": v, "student": "resnet8",
              "method": "kd", "status": "ok", "reason": None, "last_acc": a + d, "seed": s,
              "teacher_objective": objective.get(v, "mll"), "fraction": 1.0, "omitted": ""}
             for v, a in students.items() for s, d in ((0, -0.5), (1, 0.5))]
    runs = pd.DataFrame(rows)
    numbers, display = EarlyStopped.table(runs, layout, "last")
    assert display["Teacher"].tolist() == ["MLL, epoch 5", "MLL, epoch 10", "MLL, epoch 30 (reference)", "MCMI",
                                           "CE-FT"]
    assert display["Teacher acc."].tolist() == ["60.00", "70.00", "80.00", "78.00", "79.00"]
    assert display["KD student"].tolist()[0] == "70.00 ± 0.71" and display["Δ KD"].tolist() == [
        "-1.00", "+1.00", "", "+3.00", "+0.50"]
    assert numbers["teacher_cmi"].tolist() == [0.30, 0.20, 0.10, 0.25, 0.12]
    runs_csv = tmp_path / "runs.csv"
    runs.to_csv(runs_csv, index=False)
    figure([str(runs_csv)], layout, "last", str(tmp_path / "f.png"), str(tmp_path / "f.pdf"))
    assert (tmp_path / "f.png").stat().st_size > 5000
