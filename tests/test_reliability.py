"""Reliability of the config path (issue 17): the same meaning gives the same job params, a config file that YAML
or JSON would read wrongly is refused in one line, every number has a range the code honours, fractions of counts
are exact, and helpers leave what they borrow as they found it."""

import copy
import json
import os
import re
import time

import pytest
import torch

from mcmikd.canonical import canonical, fraction_of, same, static_defaults
from mcmikd.configfile import check_config_file
from mcmikd.errors import ConfigError


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------ same meaning, same params
def _every_params(grid):
    out = [grid.data_params(), grid.cmi_params()]
    out += [grid.teacher_params(arch, variant, seed) for arch, variant in grid.teacher_dirs()
            for seed in grid.teacher_seeds()]
    out += [grid.student_params(run) for run in grid.all_runs()]
    out += [grid.cam_params(arch) for e in grid.cam_experiments() for arch in e.teacher_archs()]
    return sorted(repr(p) for p in out)  # the set of jobs, whatever order the config lists them in


def test_a_config_with_its_keys_reordered_gives_every_job_the_same_params(load, default_config):
    from conftest import SCHEMA, reverse_every_mapping
    from mcmikd.config import load_grid

    reordered = load_grid(reverse_every_mapping(copy.deepcopy(default_config)), SCHEMA)
    assert _every_params(load()) == _every_params(reordered)


def test_a_whole_number_written_as_a_float_and_a_default_written_out_change_no_params(load):
    before = _every_params(load())

    def respell(c):
        c["methods"].setdefault("kd", {})
        c["methods"]["kd"]["temperature"] = 4.0  # the class default (4.0), written out
        c["methods"]["kd"]["gamma"] = 0.1
        c["students"]["training"]["epochs"] = float(c["students"]["training"]["epochs"])

    assert _every_params(load(respell)) == before
    # while a change of meaning still changes them
    assert _every_params(load(lambda c: c["methods"].setdefault("kd", {}).update(temperature=3))) != before


def test_the_canonical_form_sorts_keys_unifies_whole_numbers_and_keeps_list_order():
    assert repr(canonical({"b": 4.0, "a": [2, 1.5, True]})) == repr({"a": [2, 1.5, True], "b": 4})
    assert same({"x": 1, "y": 2}, {"y": 2.0, "x": 1.0}) and not same(True, 1) and not same([1, 2], [2, 1])
    assert canonical(1e300) == 1e300 and isinstance(canonical(2.0 ** 60), float)  # beyond exact ints: unchanged


def test_static_defaults_equal_every_registered_methods_class_defaults():
    from mcmikd.distill import METHODS, get_method

    for name, entry in METHODS.items():
        assert static_defaults(entry) == get_method(name).defaults, name


# ------------------------------------------------------------------------------- config files read correctly
@pytest.mark.parametrize("suffix, text, expected", [
    (".yaml", "name: a\nexperiments:\n  main: {}\nlr: 1\nexperiments:\n  cam: {}\n",
     "key 'experiments' is given twice (lines 2 and 5)"),
    (".yaml", "methods:\n  kd:\n    temperature: 4\n    temperature: 8\n",
     "key 'methods.kd.temperature' is given twice"),
    (".json", '{"name": "a", "methods": {"kd": {"alpha": 0.9, "alpha": 0.5}}}',
     "key 'methods.kd.alpha' is given twice"),
])
def test_a_key_given_twice_is_refused_in_one_line_naming_it(tmp_path, suffix, text, expected):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        check_config_file(path)
    assert expected in _one_line(info)


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("name: a\n" + "\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        check_config_file(path)
    assert time.perf_counter() - start < 5
    assert "its YAML aliases expand to 12,345,679,023 values (more than 100,000)" in _one_line(info)
    # a modest alias (a repeated block) is fine
    path.write_text("base: &b {lr: 0.1, epochs: 2}\nteachers: {training: *b, finetuning: *b}\n")
    check_config_file(path)


def test_every_shipped_config_file_passes_the_file_check():
    from conftest import ROOT

    for path in list((ROOT / "config").glob("*.yaml")) + [ROOT / "tests" / "tiny.yaml"]:
        check_config_file(path)


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["methods"].setdefault("kd", {}).update(temperature=1e300),
     "config key 'methods.kd.temperature': 1e+300 is out of range"),
    (lambda c: c["students"]["training"].update(epochs=1e23),
     "config key 'students.training.epochs': 1e+23 is greater than the maximum of 10000"),
    (lambda c: c["dataset"].update(split_seed=10 ** 23),
     "config key 'dataset.split_seed': 100000000000000000000000 is greater than the maximum"),
    (lambda c: c["teachers"].update(seeds=[0, 10 ** 30]), "config key 'teachers.seeds[1]'"),
    (lambda c: c["augment"].update(crop_padding=16),
     "config key 'augment.crop_padding': 16 is not below the image size (16 px)"),
    (lambda c: c.update(name="tiny\n"), "config key 'name': 'tiny\\n' is not allowed"),
])
def test_numbers_and_names_the_code_cannot_honour_are_refused_in_one_line(load, mutate, expected):
    with pytest.raises(ConfigError) as info:
        load(mutate)
    assert expected in _one_line(info)


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["students"]["training"].update(epochs=20_000),
     "config key 'students.training.epochs': 20000 is greater than the maximum of 10000"),
    (lambda c: c["students"].update(seeds=[0, 1_000_000_001]), "config key 'students.seeds[1]': 1000000001 is greater"),
    (lambda c: c["teachers"].update(cmi_temperatures=[1, 1000]),
     "config key 'teachers.cmi_temperatures[1]': 1000 is greater than the maximum of 100"),
    (lambda c: c["runtime"].update(threads=4096), "config key 'runtime.threads': 4096 is greater than the maximum"),
])
def test_every_schema_number_has_a_range_the_code_honours(load, mutate, expected):
    with pytest.raises(ConfigError) as info:
        load(mutate)
    assert expected in _one_line(info)


@pytest.mark.parametrize("hp, expected", [
    ({"temperature": 1000}, "config key 'methods.kd.temperature': 1000 is out of range; use a value in (0, 100]"),
    ({"temperature": 0}, "config key 'methods.kd.temperature': 0 is out of range"),
    ({"alpha": -0.5}, "config key 'methods.kd.alpha': -0.5 is out of range; use a value in [0, inf)"),
    ({"temperature": "4"}, "config key 'methods.kd.temperature': '4' is not a number"),
    ({"gamma": True}, "config key 'methods.kd.gamma': True is not a number"),
])
def test_a_method_hyper_parameter_of_the_wrong_type_or_out_of_range_is_refused_before_any_job(load, hp, expected):
    from mcmikd.checks import check_methods

    grid = load(lambda c: c["methods"].update(kd=hp))
    with pytest.raises(ConfigError) as info:
        check_methods(grid, 10, 1, 16)
    assert expected in _one_line(info)


def test_whole_number_method_keys_refuse_fractions_and_take_whole_floats():
    from mcmikd.distill import get_method

    crd = get_method("crd")
    crd.check_hp({"feat_dim": 64.0, "nce_k": 100}, "methods.crd")
    with pytest.raises(ConfigError) as info:
        crd.check_hp({"feat_dim": 64.5}, "methods.crd")
    assert "config key 'methods.crd.feat_dim': 64.5 is not a whole number" in _one_line(info)


# ------------------------------------------------------------------------------------------- exact fractions
@pytest.mark.parametrize("fraction, n, expected", [(0.29, 50_000, 14_500), (0.57, 50_000, 28_500),
                                                   (0.58, 50_000, 29_000), (0.05, 1347, 67), (0.1, 1347, 134)])
def test_a_fraction_of_a_count_is_exact(fraction, n, expected):
    assert int(fraction * n) != expected or fraction in (0.05, 0.1)  # the float product is what went wrong
    assert fraction_of(n, fraction) == expected


def test_the_validation_split_holds_out_an_exact_fraction_of_each_class():
    from mcmikd.data import DatasetTensors
    from mcmikd.datasets import hold_out_validation

    labels = torch.arange(200) % 2  # 100 images per class; 0.07 × 100 is 7.000000000000001 in floats (ceil: 8)
    images = torch.zeros(200, 1, 8, 8, dtype=torch.uint8)
    data = DatasetTensors(name="toy", train_images=images, train_labels=labels, test_images=images[:2],
                          test_labels=labels[:2], mean=(0.5,), std=(0.5,), class_names=["a", "b"], hflip=False)
    held = hold_out_validation(data, 0.07, seed=0, recompute_stats=False)
    assert torch.bincount(held.test_labels).tolist() == [7, 7]
    assert len(held.train_labels) == 186


def test_a_few_shot_subset_smaller_than_the_class_count_is_refused():
    from mcmikd.data import fewshot_subset

    labels = torch.arange(1000) % 10
    assert len(fewshot_subset(labels, 0.01)) == 10
    with pytest.raises(ConfigError) as info:
        fewshot_subset(labels, 1e-9)
    assert "keeps 0 of 1000 training images, fewer than the 10 classes" in _one_line(info)


# ------------------------------------------------------------------------------------- large class counts
def test_a_result_record_at_1000_classes_stays_small_and_reads_back_its_confusion(tmp_path):
    from mcmikd.augment import Normalizer
    from mcmikd.confusion import decode
    from mcmikd.engine import FitResult, Runtime, evaluate, summarize
    from mcmikd.io import read_json, write_json

    classes, per_class = 1000, 10  # 10,000 test images, as CIFAR's and ImageNet-scale test sets have per 1,000
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * per_class, 1, 4, 4), dtype=torch.uint8, generator=gen)
    labels = torch.arange(classes).repeat_interleave(per_class)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, classes))
    runtime = Runtime(device=torch.device("cpu"), channels_last=False, precision="fp32", deterministic=True)
    ev = evaluate(model, images, labels, Normalizer((0.5,), (0.5,), runtime.device, False), runtime, classes)
    record = {"epoch": 1, "test_acc": ev.acc, "test_cmi": ev.cmi, "per_class_acc": ev.per_class_acc,
              "confusion": ev.confusion}
    write_json(tmp_path / "seed0.json", summarize(FitResult(history=[], best=record, last=record, best_state=None)))
    size = (tmp_path / "seed0.json").stat().st_size
    assert size < 1_000_000, size  # the dense matrices alone were 2 × 10⁶ cells (38 MB written indented)
    back = read_json(tmp_path / "seed0.json")
    assert decode(back["confusion_last"]) == ev.confusion  # exactly the matrix the evaluation counted
    assert sum(n for *_, n in back["confusion_last"]["counts"]) == classes * per_class


@pytest.mark.parametrize("value, expected", [
    ({"classes": 2, "counts": [[0, 2, 1]]}, "lies outside a 2 × 2 matrix"),
    ({"classes": 2, "counts": [[0, 1, -1]]}, "a confusion count must be a whole number ≥ 0"),
    ({"classes": 2, "counts": [[0, 1, 1.5]]}, "a confusion count must be a whole number ≥ 0"),
    ([[1, 0], [0]], "a dense confusion matrix must be 2 lists of 2 counts"),
    ("not json", "Expecting value"),
])
def test_a_damaged_confusion_record_is_refused(value, expected):
    from mcmikd.confusion import decode

    with pytest.raises(ValueError, match=re.escape(expected)):
        decode(value)


def test_old_dense_and_new_sparse_confusion_records_read_alike():
    from mcmikd.confusion import decode, encode

    dense = [[3, 0, 1], [0, 0, 0], [2, 0, 5]]
    assert encode(dense) == {"classes": 3, "counts": [[0, 0, 3], [0, 2, 1], [2, 0, 2], [2, 2, 5]]}
    assert decode(encode(dense)) == decode(json.dumps(encode(dense))) == decode(dense) == dense


# ------------------------------------------------------------------------------- the config a job runs
def test_a_job_runs_the_planned_config_when_the_file_was_edited_after_planning(tmp_path, monkeypatch):
    from mcmikd import planned

    monkeypatch.delenv(planned.ENV, raising=False)
    config = {"name": "tiny", "students": {"training": {"epochs": 3, "lr": 0.05}}}
    planned.announce(config)  # the head process
    planned.save(config, tmp_path)
    reformatted = {"students": {"training": {"lr": 0.05, "epochs": 3.0}}, "name": "tiny"}
    assert planned.for_job(reformatted, tmp_path) == (None, None)  # the same meaning: nothing to do
    edited = {"name": "tiny", "students": {"training": {"epochs": 4, "lr": 0.05}}}
    run, note = planned.for_job(edited, tmp_path)
    assert run == config and "this job runs the planned config" in note and "\n" not in note


def test_a_job_whose_planned_config_is_lost_refuses_in_one_line(tmp_path, monkeypatch):
    from mcmikd import planned

    config = {"name": "tiny", "seed": 0}
    monkeypatch.setenv(planned.ENV, planned.digest(config))  # planned, but never stored (or the file was removed)
    with pytest.raises(ConfigError) as info:
        planned.for_job({"name": "tiny", "seed": 1}, tmp_path)
    assert "the config files changed after this run was planned" in _one_line(info)
    path = planned.save(config, tmp_path)
    path.write_text(path.read_text().replace("0", "7"))  # a damaged store is no plan either
    with pytest.raises(ConfigError):
        planned.for_job({"name": "tiny", "seed": 1}, tmp_path)


def test_a_job_started_by_hand_takes_its_own_config_as_the_plan(tmp_path, monkeypatch):
    from mcmikd import planned

    monkeypatch.delenv(planned.ENV, raising=False)
    assert planned.for_job({"name": "x"}, tmp_path) == (None, None)
    assert planned.ENV in os.environ


# ------------------------------------------------------------------------------------ helpers leave no trace
def test_eigen_cam_leaves_the_model_in_the_mode_it_found():
    from mcmikd.cam import model_eigen_cam
    from mcmikd.models import create_model

    model = create_model("resnet8", 10, 3)
    model.train()
    model_eigen_cam(model, torch.randn(2, 3, 32, 32), "layer3")
    assert all(m.training for m in model.modules())
    model.eval()
    model_eigen_cam(model, torch.randn(2, 3, 32, 32), "layer3")
    assert not any(m.training for m in model.modules())


# --------------------------------------------------------------------------- what the tables read back is checked
@pytest.mark.parametrize("field, value, expected", [
    ("last_acc", float("nan"), "field 'last_acc' is None, not a finite number in [0, 100]"),  # NaN is written null
    ("best_acc", "97.5", "field 'best_acc' is '97.5', not a finite number in [0, 100]"),
    ("last_acc", 170.3, "field 'last_acc' is 170.3, not a finite number in [0, 100]"),
    ("seed", 1.5, "field 'seed' is 1.5, not an integer"),
])
def test_a_result_record_with_a_wrong_field_is_damaged_not_dropped(tmp_path, field, value, expected):
    from mcmikd.aggregate import collect_runs
    from mcmikd.errors import DamagedFileError
    from mcmikd.io import write_json

    record = {"student": "resnet8", "method": "kd", "seed": 0, "status": "ok", "best_acc": 90.0, "last_acc": 89.0,
              "best_epoch": 3, "per_class_acc_best": [], "per_class_acc_last": [], "confusion_best": [],
              "confusion_last": [], "provenance": {"config": {"hp": {}}}, field: value}
    path = tmp_path / "full" / "seed0.json"
    write_json(path, record)
    with pytest.raises(DamagedFileError) as info:
        collect_runs([str(path)], [], "main")
    assert f"{path} is damaged ({expected}); repair it with `snakemake --forcerun {path}`" in _one_line(info)


def test_a_full_disk_is_one_line_whatever_words_the_writer_uses(tmp_path, monkeypatch):
    """torch.save on a full file system fails with `RuntimeError: basic_ios::clear: iostream error`; it reads as
    the one-line 'cannot write … (No space left on device)', and nothing is left behind."""
    import mcmikd.io as io
    from mcmikd.errors import OutputError

    def full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(io, "_low_space", lambda folder: True)
    out = tmp_path / "teachers" / "model.pt"
    with pytest.raises(OutputError) as info:
        io.torch_save({"w": torch.zeros(2)}, out)
    assert _one_line(info).startswith(f"cannot write {out} (No space left on device); make ")
    assert list(out.parent.iterdir()) == []
    # with space left, the same error is the writer's own bug, not hidden
    monkeypatch.setattr(io, "_low_space", lambda folder: False)
    with pytest.raises(RuntimeError):
        io.torch_save({"w": torch.zeros(2)}, out)
