# Config validation, the experiment grid and the input/params functions every rule file uses.
# Nothing here imports torch: a SLURM job step parses this file again for each job, so parsing stays cheap.
import copy
import importlib.util
import os
import re
import sys
from pathlib import Path

# The package next to this Snakefile, whatever `mcmikd` is installed, at parse time and in `onstart` (the same
# process); every job's script does the same by importing workflow/scripts/_src.py.
_SRC_SPEC = importlib.util.spec_from_file_location("_src", Path(workflow.basedir) / "workflow/scripts/_src.py")
_SRC_SPEC.loader.exec_module(importlib.util.module_from_spec(_SRC_SPEC))
from mcmikd.codedeps import code_inputs, registry_module
from mcmikd.config import NO_TEACHER, load_grid, resource, split_teacher_folder, teacher_dir
from mcmikd.configfile import check_config_file
from mcmikd import planned
from mcmikd.distill import METHODS
from mcmikd.errors import McmiError
from mcmikd.io import resume_path  # epoch checkpoints live beside the outputs (not among them)
from mcmikd.experiments import EXPERIMENTS
from mcmikd.experiments.lambda_sweep import LambdaSweep
from mcmikd.experiments.main import Main
from mcmikd.experiments.method_weights import MethodWeights
from mcmikd.models import MODELS
from mcmikd.teachers import OBJECTIVES
from snakemake.utils import validate

try:
    # the files themselves first: a key given twice, an alias bomb (mcmikd.configfile); then their values
    for _configfile in workflow.configfiles:
        check_config_file(_configfile)
    # every job runs the config the head planned, even after a config file was edited while jobs were queued
    # (mcmikd.planned: a cluster job re-reads the files)
    if workflow.is_main_process:
        planned.announce(config)
        PLANNED_CONFIG = copy.deepcopy(config)  # stored for the jobs by `onstart`, before any job
    else:
        _planned, _note = planned.for_job(config)
        if _planned is not None:
            print(_note, file=sys.stderr)
            config.clear()
            config.update(_planned)
    GRID = load_grid(config, workflow.source_path("../workflow/schemas/config.schema.yaml"))
except McmiError as err:
    sys.exit(f"Error: {err}")


envvars:
    planned.ENV,


# the same schema through Snakemake's own validator (fills the same defaults; it cannot fail after load_grid)
validate(config, "../workflow/schemas/config.schema.yaml")


def _alternatives(names):
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    arch=_alternatives(GRID.teachers),
    variant=_alternatives(GRID.variant_names(False) + GRID.variant_names(True)),
    t_arch=r"[A-Za-z0-9_]+",
    t_variant=f"none|(?:{_alternatives(GRID.variant_names(False))})|(?:{_alternatives(GRID.variant_names(True))})(?:@best)?",
    student=r"[A-Za-z0-9_]+",
    method=r"[a-z0-9_]+",
    setting=GRID.setting_pattern(),
    seed=r"[0-9]+",
    tseed=_alternatives(str(t) for t in GRID.teacher_seeds()),
    experiment=_alternatives(GRID.runs),
    figure=_alternatives(GRID.figures()),


# ----------------------------------------------------------------------------------------------- code inputs
# Snakemake's code trigger sees only a script's own mtime, not the package it imports. The package files a
# job's result depends on are therefore declared as inputs (small files: compared by checksum), so editing a
# module reruns exactly the jobs that import it: the static import closure (mcmikd.codedeps) of the rule's
# script and of the registry modules its wildcards select, as paths relative to the working directory (a
# moved or copied project reruns nothing).
SRC = Path(workflow.basedir) / "src"


def job_code(script, select=None):
    """Code inputs of the jobs that run workflow/scripts/<script>.py. A list, or, when `select(wildcards)` names
    the registry entries ("module:attr" strings: a model, a method, a teacher objective, a figure's drawing
    function) the job's wildcards choose, an input function adding those modules' closures."""
    entries = (str(Path(workflow.basedir) / "workflow" / "scripts" / f"{script}.py"),)
    if select is None:
        return code_inputs(*entries, base=SRC)

    def inputs(wildcards):
        return code_inputs(*entries, *map(registry_module, select(wildcards)), base=SRC)

    return inputs


def student_modules(wildcards):
    models = [wildcards.student] + ([wildcards.t_arch] if wildcards.t_arch != NO_TEACHER else [])
    return [MODELS[m] for m in models] + [METHODS[wildcards.method]]


def teacher_modules(wildcards):
    return [MODELS[wildcards.arch], OBJECTIVES[GRID.variants[(wildcards.arch, wildcards.variant)][0]]]


# ----------------------------------------------------------------------------------------------- resources
def res(rule, key, fallback):
    """A rule's resource from the config's `resources` section (`default`, then the rule's own block).

    `cpus_per_task` becomes the rule's `threads:` (torch's thread count in the job, and what the SLURM plugin
    requests as --cpus-per-task, for GPU jobs too); `gpu` becomes --gpus on SLURM."""
    RESOURCE_RULES.add(rule)
    return resource(config, rule, key, fallback)


RESOURCE_RULES = set()  # rules that read the `resources` section (rules/checks.smk refuses any other name there)


THREADS = config["runtime"]["threads"]
PROCESSES = config["runtime"]["processes"]  # processes per training job (mcmikd.distributed)


# the training rules' extra resources: with several processes, one node (--nodes=1 on SLURM); none otherwise, so a
# one-process job asks for what it always did (and groups of them, whose numeric resources add up, stay valid)
ONE_NODE = {"nodes": 1} if PROCESSES > 1 else {}


def train_res(rule, key, fallback):
    """A training rule's `cpus_per_task` or `gpu`: the config's value (`res`) is per process, so the job asks for
    runtime.processes times as many, on one node (`ONE_NODE`)."""
    return res(rule, key, fallback) * PROCESSES


# ----------------------------------------------------------------------------------------------- paths
def teacher_files(arch, variant, tseed):
    base = f"<results>/{teacher_dir(arch, variant, tseed)}"
    return {
        "model": f"{base}/model.pt",
        "metrics": f"{base}/metrics.json",
        "cmi": f"{base}/cmi.json",
        "best": f"{base}/best.pt",
    }


def start_inputs(wildcards):
    """A fine-tuned teacher's start model and metrics (the teacher of the objective it starts from, same seed)."""
    start = GRID.start_variant(wildcards.arch, wildcards.variant)
    files = teacher_files(wildcards.arch, start, wildcards.tseed)
    return {"start_model": files["model"], "start_metrics": files["metrics"]}


def weights_inputs(wildcards):
    """An MLL teacher's weight file when `teachers.weights` loads it instead of training it; none otherwise."""
    path = GRID.teacher_weights(wildcards.arch, wildcards.variant, int(wildcards.tseed))
    return {} if path is None else {"weights": path}


def student_teacher_inputs(wildcards):
    """The teacher of a student run (teacher seed `GRID.teacher_seed(student seed)`): its metrics and the model file
    the student distils from: model.pt, or best.pt (the best-on-test state of a fine-tuned teacher) when its folder
    is `<variant>@best` (an experiment's teacher_checkpoint: best)."""
    if wildcards.t_arch == NO_TEACHER:
        return {}
    variant, model = split_teacher_folder(wildcards.t_variant)
    files = teacher_files(wildcards.t_arch, variant, GRID.teacher_seed(int(wildcards.seed)))
    return {"teacher_model": files[model], "teacher_metrics": files["metrics"]}


def student_file(run):
    return f"<results>/{run.path()}"


def student_params(wildcards):
    from mcmikd.config import StudentRun

    variant, model = split_teacher_folder(wildcards.t_variant)
    run = StudentRun(
        wildcards.t_arch,
        variant,
        wildcards.student,
        wildcards.method,
        wildcards.setting,
        int(wildcards.seed),
        t_model=model,
    )
    return GRID.student_params(run)


def experiment_runs(wildcards):
    return [student_file(run) for run in GRID.runs.get(wildcards.experiment, [])]


def experiment_teachers(wildcards):
    """Teacher metrics and CMI files of the pairs of an experiment, every teacher seed (teacher rows, Fig. 1)."""
    files = []
    for arch, variant, tseed in GRID.experiment_teachers(wildcards.experiment):
        f = teacher_files(arch, variant, tseed)
        files += [f["metrics"], f["cmi"]]
    return sorted(files)


def cam_models(wildcards):
    params = GRID.cam_params(wildcards.arch)
    return [teacher_files(wildcards.arch, v, params["teacher_seed"])["model"] for v in params["variants"].values()]


def cam_measure_models(wildcards):
    params = GRID.cam_measure_params(wildcards.arch, int(wildcards.tseed))
    return [teacher_files(wildcards.arch, v, int(wildcards.tseed))["model"] for v in params["variants"].values()]


def tsne_experiment(wildcards):
    """The experiment whose t-SNE job this is (one with `tsne_params`: the zero-shot kind)."""
    return GRID.experiments[wildcards.experiment]


def tsne_models(wildcards):
    """The teacher and student model files of one t-SNE job, in its panel order."""
    return [f"<results>/{path}" for path in tsne_experiment(wildcards).tsne_models(wildcards.setting)]


def figure_spec(wildcards):
    return GRID.figures()[wildcards.figure]


def figure_caption(wildcards):
    """The figure's declared caption with its Jinja fields filled ({{ snakemake.params.metric }}, its layout's
    values): the report renders the caption file once, not the text it includes."""
    from types import SimpleNamespace

    import jinja2

    spec = figure_spec(wildcards)
    params = SimpleNamespace(metric=config["tables"]["metric"], layout=spec.layout)
    return jinja2.Template(spec.caption).render(snakemake=SimpleNamespace(params=params))


def figure_inputs(wildcards):
    return [f"<results>/{path}" for path in figure_spec(wildcards).inputs]


# ----------------------------------------------------------------------------------------------- choices, reading
# Inputs of rules/choices.smk. The experiment kinds are named through their classes, so no rule spells a kind's name
# (tests/test_registries.py).
WEIGHTS_KIND, SWEEP_KIND, MAIN_KIND = MethodWeights.name, LambdaSweep.name, Main.name
# the static workflow description (the report: directive's fallback), relative to the working directory like every
# code input (a moved or copied project reruns nothing)
STATIC_REPORT = os.path.relpath(
    os.path.realpath(Path(workflow.basedir) / "workflow" / "report" / "workflow.rst"),
    os.path.realpath(os.getcwd()),
)


def choice_targets():
    """The choice files (YAML and Markdown) of the enabled experiments that have a choice rule."""
    kinds = [k for k in (WEIGHTS_KIND, SWEEP_KIND) if k in GRID.experiments]
    return expand("<results>/tables/{kind}_choice.{ext}", kind=kinds, ext=("yaml", "md"))


def evaluated_on(kind):
    """'validation' when the run evaluates on held-out training data (dataset.validation), else 'test'."""
    return table_layout(kind).get("evaluated_on", "test")


def reading_inputs(wildcards):
    """The main experiment's table and gains (when enabled) and the choice records the run makes."""
    inputs = {}
    if MAIN_KIND in GRID.runs:
        inputs["table"] = f"<results>/tables/{MAIN_KIND}.csv"
        inputs["gains"] = f"<results>/tables/{MAIN_KIND}_gains.csv"
    if WEIGHTS_KIND in GRID.experiments:
        inputs["weights"] = f"<results>/tables/{WEIGHTS_KIND}_choice.yaml"
    if SWEEP_KIND in GRID.experiments:
        inputs["lam"] = f"<results>/tables/{SWEEP_KIND}_choice.yaml"
    return inputs


# ----------------------------------------------------------------------------------------------- targets
def get_final_output():
    """Every table and figure the enabled experiments produce, the choices of those that choose something (method
    weights, λ) and the run's reading for the report's first page (rules/choices.smk)."""
    targets = expand("<results>/tables/{exp}.{ext}", exp=list(GRID.runs), ext=("csv", "md", "tex"))
    targets += expand("<results>/figures/{fig}.{ext}", fig=list(GRID.figures()), ext=("png", "pdf"))
    if GRID.cam_measure_files():
        targets += expand("<results>/tables/cam.{ext}", ext=("csv", "md", "tex"))
    targets += choice_targets()
    targets += ["<results>/report/reading.rst", "<results>/report/first_page.rst"]
    return targets


def table_layout(experiment):
    """Row and column order of an experiment's table (from the config, so tables follow it)."""
    return GRID.experiments[experiment].layout()


# The torch-needing checks (mcmikd.checks.preflight) run once before any job, dry runs included: Snakemake
# evaluates the default target's input functions while it builds the DAG, dry or not, in the main process only (a
# cluster job step builds just its own job), and runs no hook on a dry run. A run of other targets makes them in
# `onstart`. A dry run (Snakemake's read-only `workflow.dryrun`) skips the checks that need a data folder not there
# yet, and says so.
_PREFLIGHT = []


def preflight_checked(wildcards=None):
    """The default target's input function: the pre-flight checks (no file)."""
    if not _PREFLIGHT:
        from mcmikd.checks import preflight

        try:
            _PREFLIGHT.append(preflight(GRID, dry_run=bool(getattr(workflow, "dryrun", False))))
        except McmiError as err:
            sys.exit(f"Error: {err}")
        print(_PREFLIGHT[0], file=sys.stderr)
    return []


onstart:
    preflight_checked()  # when the targets were not the default one
    planned.save(PLANNED_CONFIG)  # what every job of this run runs (mcmikd.planned)
    from mcmikd import termination

    termination.watch()  # after Snakemake's own SIGTERM handler, which it keeps


onerror:
    # a SIGTERM stop is no job failure: say so (mcmikd.termination)
    from mcmikd import termination

    if termination.received():  # the count of missing jobs only then
        try:
            missing = len(list(workflow.dag.needrun_jobs(exclude_finished=True)))
        except Exception:  # Snakemake's DAG API moved: the line without the count
            missing = None
        print(termination.report(missing), file=sys.stderr)


# With --sdm conda every job runs in an environment built from environment.yml (the package itself comes from
# src/ through workflow/scripts/_src.py); without --sdm conda jobs use the current Python.
CONDA_ENV = "../environment.yml"
