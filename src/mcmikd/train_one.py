"""`mcmikd train`: train ONE teacher or ONE student outside the workflow's DAG, from a config (as mdistiller's
`tools/train.py --cfg` does), with exactly what the workflow's job would run.

The job's params are the slice the rule passes (`mcmikd.config.Grid.teacher_params` / `Grid.student_params`, the
functions rules/teachers.smk and rules/students.smk call), and the job function is the rule's
(`mcmikd.jobs.teacher.train_teacher`, `mcmikd.jobs.student.train_student`), so the files written are the job's
files, with the same JSON keys and content records. The dataset is prepared by the `prepare_data` job's function
into OUT/data.pt (once per dataset config; `--data` uses a prepared file instead).

Scope, and where it differs from the DAG:
  * teacher: the variant of `--objective` under `teachers.hp` (`--variant` picks any variant the config's
    experiments plan, e.g. one λ of a sweep); a fine-tuned objective (mcmi, ce_finetune) needs `--start`, the
    folder of the teacher it fine-tunes (the DAG: the start objective's teacher of the same seed);
  * student: any method and any setting the config's enabled experiments own (default `full`); its teacher is the
    folder (or model file) given, and its params record that teacher's own seed where the DAG would record
    `teachers.seeds[seed % n]`;
  * no CMI measurement, CAMs, tables or figures: those are the workflow's (`snakemake`).

Nothing here is imported by a workflow job (editing it reruns nothing).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from mcmikd.config import resource
from mcmikd.errors import ConfigError, McmiError
from mcmikd.io import resume_path

EPILOG = """\
examples (the tiny test config; results in /tmp/t and /tmp/s):
  mcmikd train teacher --config tests/tiny.yaml --arch resnet8 --objective mll --seed 0 --out /tmp/t
  mcmikd train student --config tests/tiny.yaml --student resnet8 --method kd --teacher /tmp/t --seed 0 --out /tmp/s
"""


# --------------------------------------------------------------------------------------------- the rule's inputs
def load_config(config_path: str | Path):
    """The grid (`mcmikd.config.Grid`) of a config file, checked as the workflow checks it at parse time: the file
    itself (`mcmikd.configfile.check_config_file`), then the schema and every config check (`load_grid`). Raises
    a one-line McmiError (ConfigError) for a bad file, ConfigError for a missing one."""
    import yaml

    from mcmikd.config import load_grid, schema_path
    from mcmikd.configfile import check_config_file

    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    check_config_file(path)
    return load_grid(yaml.safe_load(path.read_text()), schema_path())


def rule_threads(config: dict, rule: str) -> int:
    """The training rule's `threads:` (rules/common.smk's `train_res`): `resources.<rule>.cpus_per_task`, then
    `resources.default.cpus_per_task`, then `runtime.threads`, times `runtime.processes` (per process; each of the
    job's processes gets its share)."""
    from mcmikd.distributed import processes_of

    per_process = int(resource(config, rule, "cpus_per_task", config["runtime"]["threads"]))
    return per_process * processes_of(config)


def prepared_data(grid, out: Path, data: str | None = None) -> str:
    """The prepared dataset file the job reads: `data` when given (it must exist), else OUT/data.pt, written by
    the `prepare_data` job's function unless it is already there for the same dataset params (recorded beside it
    in OUT/.data.pt.params.json, a file of this command only). Raises DataError for a missing `data`."""
    from mcmikd.errors import DataError
    from mcmikd.io import write_json

    if data is not None:
        if not Path(data).is_file():
            raise DataError(f"prepared dataset {data} does not exist; leave out --data to prepare one in --out")
        return str(data)
    params = grid.data_params()
    path, stamp = out / "data.pt", out / ".data.pt.params.json"
    try:
        same = path.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(params))
    except (OSError, ValueError):
        same = False
    if not same:
        from mcmikd.jobs.prepare import prepare_data

        prepare_data(params, str(path))
        write_json(stamp, params, record=False)
    return str(path)


def _teacher_folder(path: str) -> tuple[Path, Path, str]:
    """(model file, metrics.json, 'model' | 'best') of a teacher given as its folder or one of its model files."""
    p = Path(path)
    model = p / "model.pt" if p.is_dir() else p
    kind = "best" if model.name == "best.pt" else "model"
    if not model.is_file():
        raise ConfigError(f"teacher model {model} does not exist; give a teacher folder written by "
                          f"`mcmikd train teacher` or the workflow (results/<name>/teachers/<arch>/<variant>/seed<s>)")
    metrics = model.parent / "metrics.json"
    if not metrics.is_file():
        raise ConfigError(f"teacher {model} has no metrics.json beside it")
    return model, metrics, kind


# --------------------------------------------------------------------------------------------- the two jobs
def train_teacher(config: str, arch: str, seed: int, out: str, objective: str | None = None, variant: str | None = None,
                  start: str | None = None, data: str | None = None, threads: int | None = None) -> dict:
    """Train one teacher as the `train_teacher` (or, for a fine-tuned objective, `finetune_teacher`) job of
    `config` would: OUT/model.pt and OUT/metrics.json (and OUT/best.pt when fine-tuned). `objective` defaults to
    the config's reference objective (the first of `teachers.objectives`); `variant` (one the
    config plans for `arch`) replaces `objective`; `start` is the folder of the teacher a fine-tuned objective
    starts from; `threads` defaults to the rule's. Returns the metrics written. Raises a one-line ConfigError for
    an unknown architecture, objective or variant, a missing or mismatched `start`, and what the job raises."""
    from mcmikd.io import read_json
    from mcmikd.jobs.teacher import train_teacher as job
    from mcmikd.models import MODELS

    grid = load_config(config)
    if arch not in MODELS:
        raise ConfigError(f"unknown model '{arch}'; choose one of: {', '.join(MODELS)}")
    if variant is None:
        variant = grid.teacher_variant(arch, objective or grid.config["teachers"]["objectives"][0])
    elif (arch, variant) not in grid.variants:
        planned = sorted(v for a, v in grid.variants if a == arch)
        raise ConfigError(f"{config} plans no teacher variant '{variant}' for {arch}; choose one of: "
                          f"{', '.join(planned) or '(none: use --objective)'}")
    params = grid.teacher_params(arch, variant, seed)
    start_variant = grid.start_variant(arch, variant)
    start_model = start_metrics = None
    if start_variant is not None:
        if start is None:
            raise ConfigError(f"teacher {arch}/{variant} fine-tunes the {start_variant} teacher: give its folder with "
                              f"--start (train it first with --objective {grid.variants[(arch, start_variant)][0]})")
        start_model, start_metrics, _ = _teacher_folder(start)
        begun = read_json(start_metrics).get("teacher") or {}
        if (begun.get("arch"), begun.get("variant")) != (arch, start_variant):
            raise ConfigError(f"--start {start} is teacher {begun.get('arch')}/{begun.get('variant')}; "
                              f"{arch}/{variant} starts from {arch}/{start_variant}")
    elif start is not None:
        raise ConfigError(f"teacher {arch}/{variant} is trained from scratch: leave out --start")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = prepared_data(grid, out_dir, data)
    model_out = out_dir / "model.pt"
    return job(data_path=data_path, params=params, model_out=str(model_out), metrics_out=str(out_dir / "metrics.json"),
               start_model=start_model and str(start_model), start_metrics=start_metrics and str(start_metrics),
               resume_path=resume_path(model_out),
               threads=threads or rule_threads(grid.config, "finetune_teacher" if start_variant else "train_teacher"),
               best_out=str(out_dir / "best.pt") if start_variant else None)


def train_student(config: str, student: str, method: str, teacher: str, seed: int, out: str,
                  setting: str = "full", data: str | None = None, threads: int | None = None) -> dict:
    """Train one student as the `train_student` job of `config` would: OUT/seed<seed>.json. `teacher` is a
    teacher folder (its model.pt), one of its model files (best.pt: the best-on-test state), or 'none' (method
    ce only, as in the DAG); `setting` is 'full' or one the config's enabled experiments own (frac0.1, omit3, …);
    `threads` defaults to the rule's. Returns the result written. Raises a one-line ConfigError for an unknown
    model, method or setting, a teacher that is missing or not allowed, and what the job raises."""
    from mcmikd.config import NO_TEACHER, StudentRun
    from mcmikd.distill import get_method
    from mcmikd.io import read_json
    from mcmikd.jobs.student import train_student as job
    from mcmikd.models import MODELS

    grid = load_config(config)
    if student not in MODELS:
        raise ConfigError(f"unknown model '{student}'; choose one of: {', '.join(MODELS)}")
    get_method(method)  # a one-line ConfigError for an unknown method
    if not re.fullmatch(grid.setting_pattern(), setting):
        raise ConfigError(f"{config} has no student setting '{setting}': 'full' or one its enabled experiments "
                          f"own (pattern {grid.setting_pattern()})")
    no_teacher = teacher == NO_TEACHER
    if (method == "ce") != no_teacher:
        raise ConfigError("method ce trains the student alone: give --teacher none" if method == "ce" else
                          f"method {method} distils from a teacher: give its folder with --teacher")
    model = metrics = None
    if no_teacher:
        run = StudentRun(NO_TEACHER, NO_TEACHER, student, method, setting, seed)
        t_seed = None
    else:
        model, metrics, kind = _teacher_folder(teacher)
        record = read_json(metrics)
        info, t_seed = record.get("teacher") or {}, record.get("seed")
        if record.get("role") != "teacher" or not info.get("arch") or not info.get("variant"):
            raise ConfigError(f"{metrics} is no teacher's metrics.json")
        run = StudentRun(info["arch"], info["variant"], student, method, setting, seed, t_model=kind)
        grid.variants.setdefault((info["arch"], info["variant"]), (info["objective"], info.get("hp") or {}))
    params = grid.student_params(run)
    if t_seed is not None and params["teacher"]["seed"] != t_seed:
        print(f"Note: the workflow distils student seed {seed} from teacher seed {params['teacher']['seed']}; this "
              f"teacher has seed {t_seed}, recorded as its teacher seed", file=sys.stderr)
        params["teacher"]["seed"] = t_seed
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = prepared_data(grid, out_dir, data)
    metrics_out = out_dir / f"seed{seed}.json"
    return job(data_path=data_path, params=params, metrics_out=str(metrics_out),
               teacher_model=model and str(model), teacher_metrics=metrics and str(metrics),
               resume_path=resume_path(metrics_out), threads=threads or rule_threads(grid.config, "train_student"))


# --------------------------------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    """The `mcmikd train` argument parser (subcommands `teacher` and `student`)."""
    doc = __doc__.split("\n\n")
    ap = argparse.ArgumentParser(prog="mcmikd train", description="\n\n".join(doc[:3]), epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="role", required=True, metavar="{teacher,student}")

    def common(p):
        p.add_argument("--config", required=True, help="the workflow config (e.g. config/config.yaml)")
        p.add_argument("--seed", type=int, required=True, help="the job's seed")
        p.add_argument("--out", required=True, help="folder to write into (created)")
        p.add_argument("--data", help="a prepared data.pt to read (default: OUT/data.pt, prepared when missing)")
        p.add_argument("--threads", type=int, help="torch threads (default: the rule's, runtime.threads)")

    t = sub.add_parser("teacher", prog="mcmikd train teacher", help="one teacher: OUT/model.pt, OUT/metrics.json",
                       description="Train one teacher as its workflow job would: OUT/model.pt and OUT/metrics.json "
                                   "(and OUT/best.pt for a fine-tuned objective).", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common(t)
    t.add_argument("--arch", required=True, help="teacher architecture (a model name: resnet56, wrn_40_2, ...)")
    which = t.add_mutually_exclusive_group()
    which.add_argument("--objective", help="teacher objective (a name of teachers.objectives; default: the first, "
                                           "the config's reference), with its teachers.hp")
    which.add_argument("--variant", help="a teacher variant the config's experiments plan (e.g. mcmi-0.5 of a λ sweep)")
    t.add_argument("--start", help="fine-tuned objectives: the folder of the teacher it starts from")

    s = sub.add_parser("student", prog="mcmikd train student", help="one student: OUT/seed<SEED>.json",
                       description="Train one student as its workflow job would: OUT/seed<SEED>.json.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(s)
    s.add_argument("--student", required=True, help="student architecture (resnet20, wrn_16_2, ...)")
    s.add_argument("--method", required=True, help="KD method (kd, crd, dkd, ...; ce: no teacher)")
    s.add_argument("--teacher", required=True,
                   help="teacher folder (its model.pt) or model file (best.pt), or 'none' for --method ce")
    s.add_argument("--setting", default="full",
                   help="student setting: full (default) or one the config's experiments own (frac0.1, omit3, ...)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """`mcmikd train teacher|student ...`: returns 0 when the job finished, 1 after a one-line error (a config or
    data problem, a damaged input), 130 when interrupted (the epoch checkpoint stays: the same command resumes)."""
    args = parser().parse_args(argv)
    try:
        if args.role == "teacher":
            result = train_teacher(args.config, args.arch, args.seed, args.out, args.objective, args.variant,
                                   args.start, args.data, args.threads)
            written = Path(args.out) / "metrics.json"
            summary = f"teacher {result['teacher']['arch']}/{result['teacher']['variant']}: {result['model_acc']:.2f}%"
        else:
            result = train_student(args.config, args.student, args.method, args.teacher, args.seed, args.out,
                                   args.setting, args.data, args.threads)
            written = Path(args.out) / f"seed{args.seed}.json"
            summary = f"student {result['student']} ({result['method']}): {result['status']}"
            if "last_acc" in result:
                summary += f", last {result['last_acc']:.2f}% (best {result['best_acc']:.2f}%)"
    except McmiError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted (Ctrl-C); the same command resumes from the last epoch checkpoint", file=sys.stderr)
        return 130
    print(f"{summary}; wrote {written}")
    return 0
