"""End to end: the real Snakefile on a tiny config in a temporary directory, and exact incremental reruns.

The module's finished run uses a private copy of the workflow (Snakefile, rules, scripts and the package), so
tests may edit its code and check, with Snakemake's dry run, that exactly the dependent jobs would rerun."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, assert_tiny_outputs_exist, reverse_every_mapping, small_grid

pytestmark = pytest.mark.slow
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_FILES = ("Snakefile", "rules", "workflow", "src", "profiles", "environment.yml", "pyproject.toml")  # the
# Snakefile reads its min_version from pyproject.toml


@dataclass
class Workspace:
    """A working directory (config.yaml, results/) and the workflow it runs (the checkout or a private copy)."""

    work: Path
    repo: Path = ROOT


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def snakemake(ws, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    cmd = [SNAKEMAKE, "-s", str(ws.repo / "Snakefile"), "--directory", str(ws.work), "--configfile",
           str(ws.work / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(ws, *args: str) -> Counter:
    """Jobs a dry run would execute, per rule (parsed from Snakemake's job stats table)."""
    out = snakemake(ws, "-n", *args)
    return job_stats(out.stdout + out.stderr)


def job_stats(text: str) -> Counter:
    """The jobs per rule in Snakemake's output `text` (its job stats table; empty when nothing is to be done)."""
    if "Nothing to be done" in text:
        return Counter()
    stats = text.split("Job stats:", 1)[1]
    counts = Counter()
    for line in stats.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match[1] != "total":
            counts[match[1]] = int(match[2])
    return counts


def write_config(ws, mutate=None) -> None:
    work = ws.work if isinstance(ws, Workspace) else ws
    cfg = yaml.safe_load((ROOT / "tests" / "tiny.yaml").read_text())
    if mutate:
        mutate(cfg)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    ws = Workspace(work=tmp_path_factory.mktemp("wf"), repo=copy_workflow(tmp_path_factory.mktemp("repo")))
    write_config(ws)
    snakemake(ws)
    return ws


@pytest.fixture
def edited(finished_run):
    """Edit a file of the private workflow copy for one test: edit(relative_path, new_text); restored after."""
    saved = {}

    def edit(relative: str, text: str) -> None:
        path = finished_run.repo / relative
        saved.setdefault(path, (path.read_text(), path.stat()))
        path.write_text(text)

    yield edit
    for path, (text, stat) in saved.items():
        path.write_text(text)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_every_table_and_figure_exists_with_the_expected_rows(finished_run):
    res = finished_run.work / "results" / "tiny"
    assert_tiny_outputs_exist(res)
    main = pd.read_csv(res / "tables" / "main.csv")
    assert set(main["row"]) == {"teacher", "ce", "kd", "at"}
    kd = main[main["row"] == "kd"].set_index("teacher_objective")
    assert set(kd.index) == {"mll", "mcmi", "ce_finetune"} and (kd["n"] == 2).all()  # two seeds each
    # teachers.seeds [0, 1]: every teacher trained per seed, its table row the mean over both; student seed s
    # learned from teacher seed s (recorded in its result and read from that seed's model)
    assert (main[main["row"] == "teacher"]["n"] == 2).all()
    runs = pd.read_csv(res / "runs" / "main.csv")
    teachers, students = runs[runs["role"] == "teacher"], runs[(runs["role"] == "student") & (runs["method"] != "ce")]
    assert teachers.groupby("teacher_variant")["teacher_seed"].apply(sorted).map(tuple).to_dict() == {
        v: (0, 1) for v in ("mll", "mcmi-0.25", "ce_finetune")}
    assert (students["teacher_seed"] == students["seed"]).all() and set(students["seed"]) == {0, 1}
    temperature = pd.read_csv(res / "tables" / "temperature.csv")
    assert (temperature["teacher_cmi_n"] == 2).all()  # its students use teacher seed 0 only; its CMI spans both
    one = json.loads((res / "students/resnet8/mcmi-0.25/resnet8/kd/full/seed1.json").read_text())
    assert one["teacher_seed"] == 1 and one["teacher"]["seed"] == 1
    mcmi1 = json.loads((res / "teachers/resnet8/mcmi-0.25/seed1/metrics.json").read_text())
    assert mcmi1["seed"] == 1 and mcmi1["provenance"]["config"]["seed"] == 1
    assert ((res / "teachers/resnet8/mll/seed1/model.pt").read_bytes()
            != (res / "teachers/resnet8/mll/seed0/model.pt").read_bytes())  # two teachers, not one twice
    md = (res / "tables" / "main.md").read_text()
    for label in ("Teacher acc. (MLL)", "Teacher CMI (MCMI)", "Teacher CMI (CE-FT)", "Student (no KD)",
                  "KD + MCMI teacher", "KD + CE-FT teacher"):
        assert label in md
    assert "\\toprule" in (res / "tables" / "main.tex").read_text()
    zero = pd.read_csv(res / "tables" / "zeroshot.csv")
    ce = zero[zero["method"] == "ce"]
    assert list(ce["class"]) == [3] and float(ce["mean"].iloc[0]) == 0.0  # never saw a 3: 0 % by construction
    # the zero-shot t-SNE: every model of the first seed embedded, the dataset's 0-based ids, class 3 flagged
    tsne = pd.read_csv(res / "tsne" / "zeroshot" / "omit3.csv")
    assert set(tsne["panel"]) == {f"{who}/{o}" for who in ("teacher", "kd") for o in ("mll", "mcmi", "ce_finetune")} | {
        "ce"}
    assert sorted(set(tsne["label"])) == list(range(10)) and ((tsne["omitted"] == 1) == (tsne["label"] == 3)).all()
    assert (tsne.groupby("panel").size() == 450).all()  # every test image of the tiny split
    assert (res / "students/none/none/resnet8/ce/omit3/seed0.pt").stat().st_size > 0  # the students' models
    assert set(pd.read_csv(res / "tables" / "fewshot.csv")["fraction"]) == {0.1}
    assert set(pd.read_csv(res / "tables" / "temperature.csv")["temperature"]) == {1.0, 4.0}


def test_second_invocation_is_a_no_op(finished_run):
    assert planned_jobs(finished_run) == Counter()
    start = time.perf_counter()
    out = snakemake(finished_run)
    assert "Nothing to be done" in out.stdout + out.stderr
    assert time.perf_counter() - start < 30  # generous here; the benchmark measures the real number


def test_changing_one_experiment_setting_reruns_only_its_students_and_aggregates(finished_run):
    work = finished_run
    write_config(work, lambda c: c["experiments"]["fewshot"].update(epoch_length="subset"))
    try:
        jobs = planned_jobs(work)
        assert jobs == Counter({"train_student": 3, "collect_runs": 1, "make_table": 1, "plot_figure": 1,
                                "all": 1}), jobs
    finally:
        write_config(work)


def test_a_config_rewritten_without_changing_its_meaning_reruns_nothing(finished_run):
    """Every mapping's keys in reverse order (an editor's formatter), whole numbers written as floats, and a
    method's default written out: the same meaning, so no job reruns (its params are a canonical form)."""
    cfg = yaml.safe_load((ROOT / "tests" / "tiny.yaml").read_text())
    cfg["students"]["training"]["epochs"] = float(cfg["students"]["training"]["epochs"])
    cfg["methods"].setdefault("kd", {})["temperature"] = 4.0  # KD's class default
    (finished_run.work / "config.yaml").write_text(yaml.safe_dump(reverse_every_mapping(cfg), sort_keys=False))
    try:
        assert planned_jobs(finished_run) == Counter()
    finally:
        write_config(finished_run)


def test_a_key_given_twice_in_the_config_file_stops_before_any_job(tmp_path):
    """PyYAML keeps the last of two `experiments:` blocks; the file check refuses it in one line (also under -n)."""
    write_config(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(path.read_text() + "experiments:\n  cam: {teachers: [resnet8]}\n")
    for args in (("-n",), ()):
        out = snakemake(Workspace(work=tmp_path), *args, check=False)
        assert out.returncode != 0
        errors = [line for line in out.stderr.splitlines() if line.startswith("Error: ")]
        assert errors and "key 'experiments' is given twice" in errors[0], out.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def _fsp_across_architectures(c):
    c["experiments"]["main"].update(methods=["fsp"], pairs=[{"teacher": "resnet8", "student": "MobileNetV2"}])


# Each bad config: the mutation of tests/tiny.yaml and the start of its one error line. The first ones are refused
# while the Snakefile is parsed, the last ones by the torch-needing pre-flight (onstart, or before a dry run).
BAD_CONFIGS = {
    "unknown method": (lambda c: c["experiments"]["main"].update(methods=["kd", "kdd"]),
                       "config key 'experiments.main.methods[1]': unknown method 'kdd'; choose one of: "),
    "empty list": (lambda c: c["experiments"]["main"].update(methods=[]),
                   "config key 'experiments.main.methods': [] should be non-empty; list at least one entry"),
    "misspelt resources rule": (lambda c: c.update(resources={"train_techer": {"mem_mb": 100}}),
                                "config key 'resources.train_techer': no rule is named 'train_techer'; use one of: "
                                "default, cam_measure, eigen_cam, finetune_teacher, "),
    "resources of a rule without any": (lambda c: c.update(resources={"make_table": {"mem_mb": 100}}),
                                        "config key 'resources.make_table': 'make_table' takes no resources"),
    "name leaving results/": (lambda c: c.update(name=".."), "config key 'name': '..' is not allowed; "),
    "dataset root outside": (lambda c: c.update(dataset={"name": "cifar10", "root": "../elsewhere"}),
                             "config key 'dataset.root': '../elsewhere' leads outside the project folder"),
    "method hyper-parameter typo": (lambda c: c["methods"]["kd"].update(tempreature=4),
                                    "config key 'methods.kd': unknown key(s) ['tempreature'] for method 'kd'; known: "),
    "FSP across architectures": (_fsp_across_architectures,
                                 "config key 'experiments.main.pairs[0]': method 'fsp' cannot distil resnet8 → "
                                 "MobileNetV2: fsp needs feature maps with the same channels"),
    "CAM layer the model lacks": (lambda c: c["experiments"]["cam"].update(layer="layer9"),
                                  "config key 'experiments.cam.layer': resnet8 has no layer 'layer9'; use 'auto' "
                                  "(= layer3) or another layer of resnet8, e.g. layer3, "),
    "CAM layer without a map": (lambda c: c["experiments"]["cam"].update(layer="fc"),
                                "config key 'experiments.cam.layer': layer 'fc' of resnet8 gives no (N, C, H, W) map"),
    "a few-shot subset smaller than the class count": (
        lambda c: c["experiments"]["fewshot"].update(fractions=[1e-9]),
        "config key 'experiments.fewshot.fractions[0]': 1e-09 keeps 0 of "),
    "a KD temperature the softmax cannot resolve": (
        lambda c: c["methods"].update(kd={"temperature": 1000}),
        "config key 'methods.kd.temperature': 1000 is out of range; use a value in (0, 100]"),
    "the old single teacher seed": (lambda c: (c["teachers"].pop("seeds"), c["teachers"].update(seed=0)),
                                    "config key 'teachers.seed': replaced by 'teachers.seeds', a list of teacher "
                                    "seeds (each teacher is trained per seed); write seeds: [0]"),
}


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_stops_before_any_job_with_one_line(tmp_path, case, dry_run):
    """A dry run refuses exactly what the run refuses, with the same single line, and neither starts a job."""
    mutate, expected = BAD_CONFIGS[case]
    write_config(tmp_path, mutate)
    out = snakemake(tmp_path, *(["-n"] if dry_run else []), check=False)
    assert out.returncode != 0
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {expected}"), out.stderr[-3000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_a_dry_run_says_which_checks_it_skipped_without_the_data_folder(tmp_path):
    write_config(tmp_path, lambda c: c.update(dataset={"name": "imagefolder", "root": "images", "image_size": 8}))
    out = snakemake(tmp_path, "-n")
    notes = [line for line in out.stderr.splitlines() if line.startswith("Note: dry run")]
    assert notes == ["Note: dry run: data folder images not found, so the checks that need it were skipped (its "
                     "contents and the class ids; networks built for 10 classes); a real run makes them before any "
                     "job"]
    assert "preflight: 3 teacher–student–method combinations and 1 CAM layers build" in out.stderr
    run = snakemake(tmp_path, check=False)
    assert [line for line in run.stderr.splitlines() if line.startswith("Error")] == [
        "Error: image folder images/train not found; expected images/train/<class>/*.png and "
        "images/val/<class>/*.png"]
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------------------------- exact reruns
AT_STUDENTS = 6  # main experiment: 1 pair × {MLL, MCMI, CE-FT} teacher × 2 seeds
MAIN_AGGREGATES = {"collect_runs": 1, "make_table": 1, "plot_figure": 1, "reading": 1, "all": 1}


def test_changing_one_methods_weight_reruns_only_its_students_and_their_tables(finished_run):
    write_config(finished_run, lambda c: c["methods"]["at"].update(beta=500))
    try:
        assert planned_jobs(finished_run) == Counter({"train_student": AT_STUDENTS, **MAIN_AGGREGATES})
    finally:
        write_config(finished_run)


def test_editing_one_methods_code_reruns_only_that_methods_jobs(finished_run, edited):
    source = (finished_run.repo / "src/mcmikd/distill/methods/at.py").read_text()
    edited("src/mcmikd/distill/methods/at.py", source + "\n# a change to the attention-transfer code\n")
    jobs = planned_jobs(finished_run)
    assert jobs == Counter({"train_student": AT_STUDENTS, **MAIN_AGGREGATES}), jobs


def test_touching_code_without_changing_it_reruns_nothing(finished_run):
    path = finished_run.repo / "src/mcmikd/distill/methods/kd.py"
    stat = path.stat()
    try:
        os.utime(path)  # newer mtime, same content: the checksum says nothing changed
        assert planned_jobs(finished_run) == Counter()
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_editing_the_plotting_code_reruns_only_figures_and_tables(finished_run, edited):
    source = (finished_run.repo / "src/mcmikd/plots.py").read_text()
    edited("src/mcmikd/plots.py", source + "\n# a change to the plotting code\n")
    jobs = planned_jobs(finished_run)
    # every figure, and the tables (each experiment kind's file holds its table and its figures, and its figures
    # use plots.py), and the reading that reads the main table: no training or measuring job, no runs table
    assert jobs == Counter({"plot_figure": 8, "make_table": 4, "reading": 1, "all": 1}), jobs


@pytest.mark.parametrize("mutate, expected", [
    # a fraction: its MLL, MCMI and control students (1 seed), the few-shot table and figure
    (lambda c: c["experiments"]["fewshot"]["fractions"].append(0.25),
     {"train_student": 3, "collect_runs": 1, "make_table": 1, "plot_figure": 1}),
    # an omitted-class set: CE-only and three KD students, the zero-shot table, its two figures, and the new set's
    # t-SNE and its figure
    (lambda c: c["experiments"]["zeroshot"]["omitted"].append([5]),
     {"train_student": 4, "collect_runs": 1, "make_table": 1, "plot_figure": 3, "tsne_logits": 1}),
    # a seed of the zero-shot experiment: the same four students for the new seed (the t-SNE shows the first seed's)
    (lambda c: c["experiments"]["zeroshot"].update(seeds=[0, 1]),
     {"train_student": 4, "collect_runs": 1, "make_table": 1, "plot_figure": 2}),
    # a λ for the CAM experiment: one more MCMI teacher per teacher seed (fine-tuned from the existing MLL one of
    # its seed), its Eigen-CAM panel, and the fine-tuning curves that show every fine-tuned teacher
    (lambda c: c["experiments"]["cam"].update(hp={"mcmi": {"lambda": 0.5}}),
     {"finetune_teacher": 2, "eigen_cam": 1, "plot_figure": 2}),
    # the control teacher dropped from the comparisons: nothing to train, every table and figure redrawn, the
    # zero-shot t-SNE without its panels, and the reading of the main table
    (lambda c: c["teachers"].update(objectives=["mll", "mcmi"]),
     {"collect_runs": 4, "make_table": 4, "eigen_cam": 1, "plot_figure": 8, "tsne_logits": 1, "reading": 1}),
])
def test_adding_to_the_grid_adds_only_the_new_jobs(finished_run, mutate, expected):
    write_config(finished_run, mutate)
    try:
        assert planned_jobs(finished_run) == Counter({**expected, "all": 1})
    finally:
        write_config(finished_run)


def test_every_result_records_its_provenance(finished_run):
    import json

    result = json.loads(next((finished_run.work / "results/tiny/students").rglob("seed0.json")).read_text())
    prov = result["provenance"]
    assert {"config", "seed", "versions", "git", "host", "device", "wall_time_s"} <= set(prov)
    assert prov["seed"] == 0 and prov["config"]["seed"] == 0 and prov["device"] == "cpu"
    assert prov["wall_time_s"] > 0 and prov["versions"]["torch"]


def test_a_failed_job_keeps_its_log_and_every_other_result(tmp_path):
    """A runtime failure (here an Eigen-CAM image index outside the test set) fails only that job: with
    keep-going (the default profile) every independent job finishes, the failed job's log says why, and the next
    run plans only what is missing."""
    ws = Workspace(work=tmp_path)

    def mutate(c):  # the main experiment's grid with the MLL teacher alone, and the failing CAM
        small_grid(c)
        c["teachers"]["objectives"] = ["mll"]
        c["experiments"]["cam"].update(enabled=True, indices=[100000])

    write_config(ws, mutate)
    out = snakemake(ws, check=False)
    assert out.returncode != 0
    res = tmp_path / "results" / "tiny"
    assert (res / "tables" / "main.md").exists() and (res / "figures" / "main_delta.png").exists()
    assert not (res / "cam" / "resnet8.pt").exists()
    log = (tmp_path / "logs/tiny/eigen_cam/resnet8.log").read_text()
    assert "Error: cam.indices [100000] are outside the test set (0..449)" in log
    assert planned_jobs(ws) == Counter({"eigen_cam": 1, "plot_figure": 1, "all": 1})


def test_retries_rerun_a_job_that_failed_once(tmp_path):
    """`--retries 1` (the SLURM profile's setting for node failures) reruns a job whose first attempt failed; the
    failure here is injected into a private copy of the teacher-training script and happens only once."""
    ws = Workspace(work=tmp_path / "work", repo=copy_workflow(tmp_path / "repo"))
    ws.work.mkdir()
    write_config(ws)
    marker = tmp_path / "first-attempt-failed"
    script = ws.repo / "workflow" / "scripts" / "train_teacher.py"
    script.write_text(f"import pathlib\nmarker = pathlib.Path({str(marker)!r})\nif not marker.exists():\n"
                      f"    marker.touch()\n    raise RuntimeError('injected transient failure')\n"
                      + script.read_text())
    target = "results/tiny/teachers/resnet8/mll/seed0/metrics.json"
    failed = snakemake(ws, target, check=False)
    assert failed.returncode != 0 and marker.exists() and not (ws.work / target).exists()
    marker.unlink()
    retried = snakemake(ws, target, "--retries", "1")
    assert marker.exists() and (ws.work / target).exists()
    assert "injected transient failure" in retried.stderr and "Trying to restart job" in retried.stderr
