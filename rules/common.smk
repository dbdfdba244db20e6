# Config validation, the experiment grid and the input/params functions every rule file uses.
# Nothing here imports torch: a SLURM job step parses this file again for each job, so parsing stays cheap.
import importlib.util
import sys
from pathlib import Path

# The package next to this Snakefile, whatever `mcmikd` is installed, at parse time and in `onstart` (the same
# process); every job's script does the same by importing workflow/scripts/_src.py.
_SRC_SPEC = importlib.util.spec_from_file_location("_src", Path(workflow.basedir) / "workflow/scripts/_src.py")
_SRC_SPEC.loader.exec_module(importlib.util.module_from_spec(_SRC_SPEC))
from mcmikd.codedeps import code_inputs, registry_module
from mcmikd.config import NO_TEACHER, load_grid
from mcmikd.distill import METHODS
from mcmikd.errors import McmiError
from mcmikd.models import MODELS
from snakemake.utils import validate

try:
    GRID = load_grid(config, workflow.source_path("../workflow/schemas/config.schema.yaml"))
except McmiError as err:
    sys.exit(f"Error: {err}")
# the same schema through Snakemake's own validator (fills the same defaults; it cannot fail after load_grid)
validate(config, "../workflow/schemas/config.schema.yaml")


wildcard_constraints:
    arch="|".join(GRID.teachers) or "none",
    kind=r"mll|mcmi-[0-9.e+-]+",
    t_arch=r"[A-Za-z0-9_]+",
    t_kind=r"none|mll|mcmi-[0-9.e+-]+",
    student=r"[A-Za-z0-9_]+",
    method=r"[a-z0-9_]+",
    setting=r"full|frac[0-9.e-]+|omit[0-9.]+|T[0-9.e-]+",
    seed=r"[0-9]+",
    experiment="main|fewshot|zeroshot|temperature",


# ----------------------------------------------------------------------------------------------- code inputs
# Snakemake's code trigger sees only a script's own mtime, not the package it imports. The package files a
# job's result depends on are therefore declared as inputs (small files: compared by checksum), so editing a
# module reruns exactly the jobs that import it: the static import closure (mcmikd.codedeps) of the rule's
# script and of the registry modules its wildcards select, as paths relative to the working directory (a
# moved or copied project reruns nothing).
SRC = Path(workflow.basedir) / "src"


def job_code(script, models=(), method=None):
    """Code inputs of the rule running workflow/scripts/<script>.py (a list, or an input function when
    `models` (wildcard names of architectures; a teacher of "none" adds none) or `method` (the wildcard
    name of the method) select registry modules)."""
    entries = (str(Path(workflow.basedir) / "workflow" / "scripts" / f"{script}.py"),)
    if not models and method is None:
        return code_inputs(*entries, base=SRC)

    def inputs(wildcards):
        specs = [MODELS[getattr(wildcards, w)] for w in models if getattr(wildcards, w) != NO_TEACHER]
        specs += [METHODS[getattr(wildcards, method)]] if method else []
        return code_inputs(*entries, *map(registry_module, specs), base=SRC)

    return inputs


# ----------------------------------------------------------------------------------------------- resources
def res(rule, key, fallback):
    """A rule's resource from the config's `resources` section (`default`, then the rule's own block).

    `cpus_per_task` becomes the rule's `threads:` (torch's thread count in the job, and what the SLURM plugin
    requests as --cpus-per-task, for GPU jobs too); `gpu` becomes --gpus on SLURM."""
    table = config.get("resources", {})
    return table.get(rule, {}).get(key, table.get("default", {}).get(key, fallback))


THREADS = config["runtime"]["threads"]


# ----------------------------------------------------------------------------------------------- paths
def teacher_files(t_arch, t_kind):
    base = f"<results>/teachers/{t_arch}/{t_kind}"
    return {"teacher_model": f"{base}/model.pt", "teacher_metrics": f"{base}/metrics.json"}


def student_teacher_inputs(wildcards):
    if wildcards.t_arch == NO_TEACHER:
        return {}
    return teacher_files(wildcards.t_arch, wildcards.t_kind)


def student_file(run):
    return (f"<results>/students/{run.t_arch}/{run.t_kind}/{run.student}/{run.method}/{run.setting}/"
            f"seed{run.seed}.json")


def student_params(wildcards):
    from mcmikd.config import StudentRun

    run = StudentRun(wildcards.t_arch, wildcards.t_kind, wildcards.student, wildcards.method,
                     wildcards.setting, int(wildcards.seed))
    return GRID.student_params(run)


def resume_path(output):
    """Epoch checkpoints live beside the outputs (not among them: Snakemake deletes a failed job's outputs)."""
    out = Path(str(output))
    return str(out.parent / f".{out.stem}.resume.pt")


def experiment_runs(wildcards):
    return [student_file(run) for run in GRID.runs.get(wildcards.experiment, [])]


def experiment_teachers(wildcards):
    """Teacher metrics and CMI files of the pairs of an experiment (for teacher rows and Fig. 1)."""
    files = []
    for run in GRID.runs.get(wildcards.experiment, []):
        if run.t_arch != NO_TEACHER:
            base = f"<results>/teachers/{run.t_arch}/{run.t_kind}"
            files += [f"{base}/metrics.json", f"{base}/cmi.json"]
    return sorted(set(files))


def all_teacher_metrics():
    return [f"<results>/teachers/{arch}/{kind}/metrics.json" for arch, kind in GRID.teacher_dirs()]


# ----------------------------------------------------------------------------------------------- targets
FIGURES = {
    "main": ["main_delta", "teachers_mcmi"],
    "fewshot": ["fewshot"],
    "zeroshot": ["zeroshot_bars", "zeroshot_confusion"],
    "temperature": ["temperature"],
}


def get_final_output():
    """Every table and figure the enabled experiments produce."""
    targets = []
    for exp in ("main", "fewshot", "zeroshot", "temperature"):
        if GRID.enabled(exp):
            targets += expand("<results>/tables/{exp}.{ext}", exp=exp, ext=("csv", "md", "tex"))
            targets += expand("<results>/figures/{fig}.{ext}", fig=FIGURES[exp], ext=("png", "pdf"))
    if GRID.enabled("cam"):
        targets += expand("<results>/figures/cam_{arch}.{ext}", arch=config["experiments"]["cam"]["teachers"],
                          ext=("png", "pdf"))
    return targets


CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


def table_layout(experiment):
    """Row and column order of an experiment's table (from the config, so tables follow it)."""
    body = config["experiments"][experiment]
    pairs = [[p["teacher"], p["student"]] for p in (body.get("pairs") or [body["pair"]])]
    layout = {"pairs": pairs, "methods": list(body.get("methods", ["kd"]))}
    if experiment == "main":
        layout["methods"] = ["ce"] + [m for m in layout["methods"] if m != "ce"]
    elif experiment == "fewshot":
        layout["fractions"] = [float(f) for f in body["fractions"]]
    elif experiment == "zeroshot":
        layout["omitted"] = [sorted(set(o)) for o in body["omitted"]]
        layout["class_names"] = CLASS_NAMES.get(config["dataset"]["name"], [])
    elif experiment == "temperature":
        layout["temperatures"] = [float(t) for t in body["temperatures"]]
    return layout


onstart:
    # torch-dependent checks, once, before any job (not at parse time, not on dry runs)
    from mcmikd.checks import preflight

    try:
        print(preflight(GRID), file=sys.stderr)
    except McmiError as err:
        sys.exit(f"Error: {err}")


# With --sdm conda every job runs in an environment built from environment.yml (the package itself comes from
# src/ through workflow/scripts/_src.py); without --sdm conda jobs use the current Python.
CONDA_ENV = "../environment.yml"
