"""Config rejection messages (one line, naming the key and the fix) and the experiment grid."""

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, SCHEMA
from mcmikd.config import split_setting
from mcmikd.errors import ConfigError


def _error(load, mutate) -> str:
    with pytest.raises(ConfigError) as info:
        load(mutate)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_config_is_valid_and_plans_every_experiment(load):
    grid = load()
    assert set(grid.runs) == {"main", "fewshot", "zeroshot", "temperature"}
    assert grid.teachers == {"resnet20": {"mll", "mcmi-0.35", "ce_finetune"}}


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["students"].update(epochs_typo=3), "config key 'students': unknown key(s) ['epochs_typo']"),
    (lambda c: c["students"]["training"].update(epochs="ten"),
     "config key 'students.training.epochs': 'ten' is not of type 'integer'"),
    (lambda c: c["dataset"].update(name="mnist"), "config key 'dataset.name': 'mnist' is not allowed; use one of"),
    (lambda c: c["teachers"]["hp"]["mcmi"].update({"lambda": -0.25}), "config key 'teachers.hp.mcmi.lambda'"),
    (lambda c: c["teachers"].update(objectives=["mll", "mcmj"]),
     "config key 'teachers.objectives[1]': unknown teacher objective 'mcmj'; choose one of: mll, mcmi, ce_finetune"),
    (lambda c: c["experiments"]["fewshot"].update(hp={"mcmi": {"ema_decay": 0.9}}),
     "config key 'experiments.fewshot.hp.mcmi': ['ema_decay'] can only be set in teachers.hp.mcmi"),
    (lambda c: c["experiments"].update(fig2={"pairs": []}),
     "config key 'experiments.fig2': unknown experiment kind 'fig2'; choose one of: main, fewshot"),
    (lambda c: c["experiments"]["zeroshot"].update(omited=[[3]]),
     "config key 'experiments.zeroshot': unknown key(s) ['omited']"),
    (lambda c: c["experiments"]["main"]["pairs"].append({"teacher": "resnet1000", "student": "resnet8"}),
     "config key 'experiments.main.pairs[1].teacher': unknown model 'resnet1000'; choose one of: resnet8"),
    (lambda c: c["experiments"]["main"].update(methods=["kd", "kdd"]),
     "config key 'experiments.main.methods[1]': unknown method 'kdd'; choose one of: ce, kd"),
    (lambda c: c["methods"].update(kdd={}), "config key 'methods.kdd': unknown method 'kdd'"),
    (lambda c: c["students"]["training"].update(milestones=[150, 180]),
     "config key 'students.training.milestones': [150, 180] not below epochs (15)"),
    (lambda c: c["experiments"]["zeroshot"].update(omitted=[[3], [12]]),
     "class ids [12] do not exist in digits (0..9)"),
    (lambda c: c["experiments"]["fewshot"].update(fractions=[0.1, 1.5]),
     "config key 'experiments.fewshot.fractions[1]': 1.5 is greater than or equal to the maximum of 1; "
     "lower the value"),
    (lambda c: c["experiments"]["main"].update(methods=[]),
     "config key 'experiments.main.methods': [] should be non-empty; list at least one entry"),
    (lambda c: c["experiments"]["zeroshot"].update(omitted=[[3], []]),
     "config key 'experiments.zeroshot.omitted[1]': [] should be non-empty; list at least one entry"),
    (lambda c: c["experiments"]["fewshot"].update(fractions=[0.1, 0.1]),
     "config key 'experiments.fewshot.fractions': [0.1, 0.1] has non-unique elements; remove the repeated entries"),
    (lambda c: c["experiments"]["cam"].update(teachers=[]),
     "config key 'experiments.cam.teachers': [] should be non-empty"),
    (lambda c: c["experiments"]["temperature"].update(temperatures=[]),
     "config key 'experiments.temperature.temperatures': [] should be non-empty"),
    (lambda c: c["experiments"]["temperature"].update(temperatures=[1, float("inf")]),
     "config key 'experiments.temperature.temperatures[1]': inf is not a finite number; give a finite value"),
    (lambda c: c["teachers"]["hp"]["mcmi"].update({"lambda": float("nan")}),
     "config key 'teachers.hp.mcmi.lambda': nan is not a finite number"),
    (lambda c: [b.update(enabled=False) for b in c["experiments"].values()],
     "config key 'experiments': no experiment is enabled, so nothing would run; enable one of: main, fewshot"),
    (lambda c: c.update(name=".."), "config key 'name': '..' is not allowed; use letters, digits"),
    (lambda c: c.update(name="."), "config key 'name': '.' is not allowed"),
    (lambda c: c.update(name="a/b"), "config key 'name': 'a/b' is not allowed"),
    (lambda c: c["experiments"]["cam"].update(classes=[10]), "config key 'experiments.cam.classes': class ids [10]"),
    (lambda c: c.update(reference={"experiments": {"mainn": [{"row": "kd", "value": 70.0, "source": "x"}]}}),
     "config key 'reference.experiments.mainn': the config has no experiment 'mainn'"),
    (lambda c: c.update(reference={"experiments": {"main": [{"value": 70.0, "source": "x"}]}}),
     "config key 'reference.experiments.main[0]': needs value, source and at least one column to match"),
    (lambda c: c["runtime"].update(device="gpu0"), "config key 'runtime.device'"),
    (lambda c: c.pop("students"), "'students' is a required property"),
])
def test_bad_config_gives_one_clear_line(load, mutate, expected):
    assert expected in _error(load, mutate)


def test_settings_name_their_experiment_and_round_trip(load):
    grid = load()
    assert split_setting("full") == (None, "") and split_setting("omit3.8") == ("omit", "3.8")
    for setting, owner, parsed in [("frac0.05", "fewshot", {"fraction": 0.05}), ("omit3.8", "zeroshot",
                                   {"omitted": [3, 8]}), ("T2", "temperature", {"temperature": 2.0})]:
        exp = grid.setting_owner(setting)
        assert exp.name == owner and exp.parse_setting(split_setting(setting)[1]) == parsed
    assert grid.setting_owner("full") is None
    import re
    pattern = re.compile(f"^({grid.setting_pattern()})$")
    assert all(pattern.match(s) for s in ("full", "frac0.05", "omit3.8", "T2")) and not pattern.match("half")


def test_student_params_hold_only_the_jobs_own_slice(load):
    grid = load()
    fewshot = next(r for r in grid.runs["fewshot"] if r.t_variant == "mll")
    p = grid.student_params(fewshot)
    assert set(p) == {"teacher", "student", "method", "hp", "recipe", "setting", "seed", "augment", "runtime"}
    assert p["setting"] == {"fraction": 0.05, "subset": "first_n", "epoch_length": "full"}
    assert "threads" not in p["runtime"]  # thread counts must never trigger reruns
    sweep = next(r for r in grid.runs["temperature"] if r.setting == "T2")
    assert grid.student_params(sweep)["hp"]["temperature"] == 2.0
    # the sweep's T=4 run is the main experiment's KD run
    assert any(r.setting == "full" for r in grid.runs["temperature"])
    # a small-lr architecture gets its own learning rate
    assert grid._recipe({"epochs": 2, "lr": 0.05, "lr_small_models": 0.01}, "ShuffleV1")["lr"] == 0.01


def test_every_comparison_gets_its_fine_tuning_control_and_the_start_teacher(load):
    grid = load()
    for exp in ("main", "fewshot", "zeroshot", "temperature"):
        assert {r.t_variant for r in grid.runs[exp] if r.method == "kd"} == {"mll", "mcmi-0.35", "ce_finetune"}
    params = grid.teacher_params("resnet20", "ce_finetune", 0)
    assert params["objective"] == "ce_finetune" and params["hp"] == {} and params["collapse_ratio"] == 0.5
    assert params["recipe"] == grid.teacher_params("resnet20", "mcmi-0.35", 0)["recipe"]  # the same fine-tuning
    assert grid.start_variant("resnet20", "ce_finetune") == "mll" and grid.start_variant("resnet20", "mll") is None
    # a comparison without the control trains none
    only = load(lambda c: c["teachers"].update(objectives=["mll", "mcmi"]))
    assert only.teachers == {"resnet20": {"mll", "mcmi-0.35"}}
    # an experiment's own λ: its own MCMI teacher, fine-tuned from the shared MLL teacher
    own = load(lambda c: c["experiments"]["fewshot"].update(hp={"mcmi": {"lambda": 0.15}}))
    assert own.teachers == {"resnet20": {"mll", "mcmi-0.35", "mcmi-0.15", "ce_finetune"}}
    assert own.teacher_params("resnet20", "mcmi-0.15", 0)["hp"] == {"lambda": 0.15, "centroids": "eval"}


def test_teachers_are_planned_per_teacher_seed_and_student_seed_s_learns_from_teacher_seed_s(load):
    grid = load()
    assert grid.teacher_seeds() == [0, 1, 2]
    assert grid.teacher_jobs() == [("resnet20", v, t) for v in ("ce_finetune", "mcmi-0.35", "mll") for t in (0, 1, 2)]
    assert [grid.teacher_params("resnet20", "mcmi-0.35", t)["seed"] for t in (0, 1, 2)] == [0, 1, 2]
    for run in (r for runs in grid.runs.values() for r in runs if r.t_arch != "none"):
        assert grid.student_params(run)["teacher"]["seed"] == run.seed  # seeds [0, 1, 2]: s -> s
    # value-based and the same in every experiment: seeds [4, 7] -> student 0, 1, 2 learn from 4, 7, 4
    other = load(lambda c: c["teachers"].update(seeds=[4, 7]))
    assert [other.teacher_seed(s) for s in (0, 1, 2)] == [4, 7, 4]
    assert {t for _, _, t in other.teacher_jobs()} == {4, 7}
    # the student grid does not grow with the teacher seeds
    one = load(lambda c: c["teachers"].update(seeds=[0]))
    assert one.all_runs() == grid.all_runs() and len(one.teacher_jobs()) * 3 == len(grid.teacher_jobs())
    assert {one.student_params(r)["teacher"]["seed"] for r in one.all_runs() if r.t_arch != "none"} == {0}


def test_the_old_single_teacher_seed_key_names_the_fix(load):
    message = _error(load, lambda c: (c["teachers"].pop("seeds"), c["teachers"].update(seed=3)))
    assert message.startswith("config key 'teachers.seed': replaced by 'teachers.seeds'") and "seeds: [3]" in message
    assert "teachers.seeds" in _error(load, lambda c: c["teachers"].update(seeds=[1, 1]))


def test_zero_shot_and_main_get_a_ce_baseline(load):
    grid = load()
    assert any(r.method == "ce" and r.t_arch == "none" for r in grid.runs["main"])
    assert {r.setting for r in grid.runs["zeroshot"] if r.method == "ce"} == {"omit3", "omit3.8"}


def test_parsing_the_config_does_not_import_torch():
    code = ("import sys, yaml; from mcmikd.config import load_grid; "
            f"load_grid(yaml.safe_load(open('{ROOT}/config/config.yaml')), "
            f"'{ROOT}/workflow/schemas/config.schema.yaml'); "
            "assert 'torch' not in sys.modules, 'torch imported at parse time'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_paper_configs_are_valid(load):
    from mcmikd.config import load_grid

    grids = {name: load_grid(yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text()), SCHEMA)
             for name in ("cifar100", "cifar10")}
    assert len(grids["cifar100"].config["experiments"]["main"]["pairs"]) == 13
    assert {r.setting for r in grids["cifar10"].runs["zeroshot"]} == {
        "omit9", "omit7.9", "omit5.7.9", "omit1.3.5.7.9", "omit0.1.3.5.7.9", "omit0.3"}
    fewshot = grids["cifar100"].runs["fewshot"]
    assert {r.t_variant for r in fewshot} == {"mll", "mcmi-0.15", "ce_finetune"} and len({r.seed for r in fewshot}) == 5


def test_excluded_method_pair_combinations_are_not_planned(load):
    def mutate(c):
        c["experiments"]["main"]["pairs"].append({"teacher": "resnet20", "student": "ShuffleV1"})
        c["experiments"]["main"]["methods"] = ["kd", "fsp"]
        c["experiments"]["main"]["exclude"] = [{"method": "fsp", "teacher": "resnet20", "student": "ShuffleV1"}]

    runs = load(mutate).runs["main"]
    planned = {(r.t_arch, r.student, r.method) for r in runs if r.method != "ce"}
    assert ("resnet20", "resnet8", "fsp") in planned and ("resnet20", "ShuffleV1", "kd") in planned
    assert ("resnet20", "ShuffleV1", "fsp") not in planned
    with pytest.raises(ConfigError, match=r"experiments.main.exclude\[0\].method': unknown method 'fps'"):
        load(lambda c: c["experiments"]["main"].update(exclude=[{"method": "fps"}]))


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_passes_the_schema_and_plans_its_grid(path):
    """Each config a user is told to run (config/*.yaml) validates and plans jobs (the parse-time part of
    `snakemake -n`; the torch pre-flight and Snakemake's own DAG are covered by the dry-run tests)."""
    from mcmikd.config import load_grid

    grid = load_grid(yaml.safe_load(path.read_text()), SCHEMA)
    assert grid.runs and all(grid.runs.values())


def test_an_experiments_teacher_rows_are_the_teachers_of_its_own_pairs_over_every_teacher_seed(load):
    grid = load(lambda c: c["experiments"]["main"]["pairs"].append({"teacher": "resnet32", "student": "resnet8"}))
    assert {a for a, _, _ in grid.teacher_jobs()} == {"resnet20", "resnet32"}
    assert grid.experiment_teachers("main") == grid.teacher_jobs()
    # few-shot distils from resnet20 only: no resnet32 row, although resnet32 is trained for main
    assert grid.experiment_teachers("fewshot") == [t for t in grid.teacher_jobs() if t[0] == "resnet20"]
    # every teacher seed, not only those the experiment's student seeds learn from
    other = load(lambda c: (c["teachers"].update(seeds=[4, 7]), c["experiments"]["zeroshot"].update(seeds=[0])))
    assert {t for _, _, t in other.experiment_teachers("zeroshot")} == {4, 7}
    assert grid.experiment_teachers("no_such_experiment") == []
