"""Config validation and the experiment grid, without importing torch (the Snakefile uses this at parse time).

`load_grid(config, schema)` validates the config against the JSON schema (filling defaults) and each experiment
block against its kind's schema fragment (`mcmikd.experiments`), checks what the schemas cannot (model, method and
objective names, milestones, class ids, ...), and returns a `Grid`: every teacher, student, CAM and aggregation
job the config asks for, with each job's own slice of the config.

Output layout (all under results/<name>/):
  data.pt
  teachers/<arch>/<variant>/seed<t>/{model.pt, metrics.json, cmi.json}   variant = objective[-path hyper-parameters],
        e.g. mll, mll-e20, mcmi-0.25, ce_finetune; t = every seed in teachers.seeds (a fine-tuned teacher of seed t
        starts from its start variant's seed-t model)
                              best.pt  (fine-tuned teachers: the best-on-test state)
  students/<t_arch>/<t_variant>[@best]/<student>/<method>/<setting>/seed<s>.json
        @best: distilled from the teacher's best.pt (an experiment's teacher_checkpoint: best)
        t_arch = t_variant = none for teacher-free runs (method ce); the teacher seed is implied by s
        (`Grid.teacher_seed`: teachers.seeds[s % len(teachers.seeds)])
        setting = full | frac<f> | omit<c1>.<c2>... | T<t>; each prefix is owned by one experiment kind
  cam/<arch>.pt, runs/<experiment>.csv, tables/<experiment>.{csv,md,tex}, figures/<figure>.{png,pdf}
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mcmikd.canonical import canonical, static_defaults, without_defaults
from mcmikd.datasets import DATASETS, get_dataset
from mcmikd.distill import METHODS
from mcmikd.errors import ConfigError
from mcmikd.models import MODELS, SMALL_LR_MODELS

NO_TEACHER = "none"


# --------------------------------------------------------------------------------------------- validation
def _key_path(error) -> str:
    key = ""
    for part in error.absolute_path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


# what to do about a schema error of each kind (the schema's own message says what is wrong)
_SCHEMA_FIXES = {
    "minItems": "list at least one entry (or switch an experiment off with enabled: false)",
    "uniqueItems": "remove the repeated entries",
    "type": "see config/README.md for the key's type",
    "minimum": "raise the value",
    "exclusiveMinimum": "raise the value",
    "maximum": "lower the value",
    "exclusiveMaximum": "lower the value",
}


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Check `config` against the JSON schema, filling in defaults; one-line ConfigError on the first problem."""
    import yaml

    _check_renamed(config)
    return validate_block(config, yaml.safe_load(Path(schema_path).read_text()))


def _check_renamed(config: dict) -> None:
    """Keys that were renamed: one line naming the new spelling (before the schema's "unknown key")."""
    teachers = config.get("teachers")
    if isinstance(teachers, dict) and "seed" in teachers:
        old = teachers["seed"]
        fix = f"seeds: [{old}]" if isinstance(old, int) else "seeds: [0]"
        raise ConfigError(f"config key 'teachers.seed': replaced by 'teachers.seeds', a list of teacher seeds "
                          f"(each teacher is trained per seed); write {fix} (one teacher per architecture, as "
                          f"before) or e.g. seeds: [0, 1, 2]")


def validate_block(instance: dict, schema: dict, prefix: str = "") -> dict:
    """Check `instance` against `schema` (filling defaults); errors name the key as `prefix` + its path."""
    import jsonschema
    from jsonschema import validators

    base = validators.validator_for(schema)

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, subschema)

    validator = validators.extend(base, {"properties": set_defaults})(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        key = _key_path(error)
        if prefix:
            key = prefix if key == "(top level)" else f"{prefix}.{key}"
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            allowed = ", ".join(error.schema.get("properties", {}))
            raise ConfigError(f"config key '{key}': unknown key(s) {extra}; allowed here: {allowed}")
        if error.validator == "required":
            raise ConfigError(f"config key '{key}': {error.message}; see config/README.md")
        if error.validator == "enum":
            raise ConfigError(f"config key '{key}': {error.instance!r} is not allowed; "
                              f"use one of {error.validator_value}")
        if error.validator == "pattern":
            raise ConfigError(f"config key '{key}': {error.instance!r} is not allowed; "
                              f"{error.schema.get('description', 'see config/README.md')}")
        fix = _SCHEMA_FIXES.get(error.validator, "see config/README.md")
        raise ConfigError(f"config key '{key}': {error.message}; {fix}")
    return instance


def _check_model(name: str, key: str) -> None:
    if name not in MODELS:
        raise ConfigError(f"config key '{key}': unknown model '{name}'; choose one of: {', '.join(MODELS)}")


def _check_method(name: str, key: str) -> None:
    if name not in METHODS:
        raise ConfigError(f"config key '{key}': unknown method '{name}'; choose one of: {', '.join(METHODS)}")


def _check_recipe(recipe: dict, key: str) -> None:
    late = [m for m in recipe.get("milestones", []) if m >= recipe["epochs"]]
    if late:
        raise ConfigError(f"config key '{key}.milestones': {late} not below epochs ({recipe['epochs']}); "
                          f"lower them or raise {key}.epochs")


def _check_dataset(ds: dict):
    """The dataset's spec, after checking its name (against the registry) and that its root stays inside the
    project."""
    if ds["name"] not in DATASETS:
        raise ConfigError(f"config key 'dataset.name': {ds['name']!r} is not allowed; use one of: "
                          f"{', '.join(DATASETS)}")
    spec = get_dataset(ds["name"])
    root = ds.get("root")
    if "root" in spec.config_keys and root is not None and not os.path.isabs(root):
        if os.path.normpath(root).split(os.sep)[0] == "..":
            raise ConfigError(f"config key 'dataset.root': '{root}' leads outside the project folder; use a path "
                              f"inside it (e.g. data) or an absolute path")
    return spec


def check_config(config: dict) -> None:
    """Rules the schema cannot express; experiment blocks against their kind's schema. Raises a one-line
    ConfigError."""
    from mcmikd.experiments import EXPERIMENTS, get_experiment

    _check_finite(config, "")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(config["name"])):  # the schema's `$` lets a trailing newline in
        raise ConfigError(f"config key 'name': {config['name']!r} is not allowed; use letters, digits, '_', '.' and "
                          f"'-' only")
    padding, size = config.get("augment", {}).get("crop_padding", 0), config["dataset"].get("image_size")
    if config["dataset"]["name"] in DATASETS:  # datasets that fix their image size (CIFAR, cluttered digits)
        size = get_dataset(config["dataset"]["name"]).fixed_image_size or size
    if size is not None and padding >= size:
        raise ConfigError(f"config key 'augment.crop_padding': {padding} is not below the image size ({size} px); "
                          f"use a smaller padding")
    for name in config["methods"]:
        _check_method(name, f"methods.{name}")
    teachers = config["teachers"]
    _check_recipe(teachers["training"], "teachers.training")
    _check_recipe(teachers["finetuning"], "teachers.finetuning")
    _check_recipe(config["students"]["training"], "students.training")
    _check_dataset(config["dataset"])
    for i, name in enumerate(teachers["objectives"]):
        _objective(name, f"teachers.objectives[{i}]")
    for name, hp in teachers["hp"].items():
        cls = _objective(name, f"teachers.hp.{name}")
        cls.check_hp(hp, f"teachers.hp.{name}")
        for arch in (hp.get("lambda_per_teacher") or {}):
            _check_model(arch, f"teachers.hp.{name}.lambda_per_teacher.{arch}")
    _check_weights(teachers)
    from mcmikd.references import check as check_references

    check_references(config)
    for exp, body in config["experiments"].items():
        where = f"experiments.{exp}"
        kind = get_experiment(exp)
        if not isinstance(body, dict):
            raise ConfigError(f"config key '{where}': expected a mapping of its settings, got {body!r}")
        validate_block(body, kind.schema(), where)
        for i, name in enumerate(body.get("objectives") or []):
            _objective(name, f"{where}.objectives[{i}]")
        for name, hp in (body.get("hp") or {}).items():
            cls = _objective(name, f"{where}.hp.{name}")
            cls.check_hp(hp, f"{where}.hp.{name}")
            extra = sorted(set(hp) - set(cls.path_keys))
            if extra:
                raise ConfigError(f"config key '{where}.hp.{name}': {extra} can only be set in teachers.hp.{name}; "
                                  f"an experiment may override only {list(cls.path_keys) or 'nothing'}")
        for i, arch in enumerate(body.get("teachers") or []):
            _check_model(arch, f"{where}.teachers[{i}]")
        pairs = body.get("pairs") or ([body["pair"]] if "pair" in body else [])
        for i, pair in enumerate(pairs):
            at = f"{where}.pairs[{i}]" if "pairs" in body else f"{where}.pair"
            _check_model(pair["teacher"], f"{at}.teacher")
            _check_model(pair["student"], f"{at}.student")
        for i, method in enumerate(body.get("methods", [])):
            _check_method(method, f"{where}.methods[{i}]")
        for i, rule in enumerate(body.get("exclude", [])):
            _check_method(rule["method"], f"{where}.exclude[{i}].method")
    if not any(body.get("enabled", True) for body in config["experiments"].values()):
        raise ConfigError(f"config key 'experiments': no experiment is enabled, so nothing would run; enable one "
                          f"of: {', '.join(EXPERIMENTS)}")


def _check_weights(teachers: dict) -> None:
    """`teachers.weights`: known architectures, seeds among `teachers.seeds`, and files that are there (so a dry
    run names a missing file before any job starts)."""
    seeds = set(teachers.get("seeds") or [0])
    for arch, spec in (teachers.get("weights") or {}).items():
        where = f"teachers.weights.{arch}"
        _check_model(str(arch), where)
        files = spec if isinstance(spec, dict) else {None: spec}
        for seed, path in files.items():
            at = where if seed is None else f"{where}.{seed}"
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed not in seeds):
                raise ConfigError(f"config key '{at}': {seed!r} is not one of teachers.seeds {sorted(seeds)}; key each "
                                  f"file by a teacher seed, or give one file for every seed")
            if not Path(path).is_file():
                raise ConfigError(f"config key '{at}': weights file {path} not found (paths are relative to the "
                                  f"working directory); put the file there or remove the key to train the teacher")


_SHA256: dict[tuple, str] = {}


def weights_sha256(path: str) -> str:
    """sha256 of a weights file, computed once per (path, size, mtime) in a process (the Snakefile asks per job)."""
    from mcmikd.io import sha256_file

    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = sha256_file(path)
    return _SHA256[key]


MAX_MAGNITUDE = 1e9  # no config number means anything beyond this (epochs, seeds, weights, temperatures, sizes)


def _check_finite(value, key: str) -> None:
    """Numbers become folder names (temperatures, fractions, λ), loop bounds and seeds: `.inf`, `.nan` and any
    number beyond ±1e9 (`MAX_MAGNITUDE`: e.g. `epochs: 1e23`, a KD temperature of 1e300, a seed Snakemake cannot
    put in a path) are refused, so no value passes the checks and then fails or never ends inside a job."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}': {value!r} is not a finite number; give a finite value")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MAGNITUDE:
        raise ConfigError(f"config key '{key}': {value!r} is out of range; config numbers must lie within "
                          f"±{MAX_MAGNITUDE:.0e}")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        _check_finite(v, f"{key}[{k}]" if isinstance(k, int) else (f"{key}.{k}" if key else str(k)))


def _objective(name: str, key: str):
    from mcmikd.registry import lookup
    from mcmikd.teachers import OBJECTIVES

    return lookup(OBJECTIVES, name, "teacher objective", key=key)


# --------------------------------------------------------------------------------------------- the grid
def fmt_num(value: float) -> str:
    """Canonical short text for a number in a path (0.25 -> '0.25', 4.0 -> '4')."""
    return f"{float(value):g}"


BEST_SUFFIX = "@best"  # a student folder's teacher part when it distils from the teacher's best.pt


@dataclass(frozen=True)
class StudentRun:
    t_arch: str
    t_variant: str
    student: str
    method: str
    setting: str
    seed: int
    t_model: str = "model"  # the teacher file it distils from: "model" (model.pt) or "best" (best.pt)

    @property
    def teacher_id(self) -> str:
        return NO_TEACHER if self.t_arch == NO_TEACHER else f"{self.t_arch}/{self.t_variant}"

    @property
    def t_folder(self) -> str:
        """The teacher part of its result path: the variant, '<variant>@best' when it uses best.pt."""
        return self.t_variant + (BEST_SUFFIX if self.t_model == "best" else "")

    def path(self, ext: str = "json") -> str:
        """Its result file under results/<name>/ (the module docstring's layout): students/<t_arch>/<t_folder>/
        <student>/<method>/<setting>/seed<s>.<ext>, ext "json" (the result) or "pt" (the model)."""
        return (f"students/{self.t_arch}/{self.t_folder}/{self.student}/{self.method}/{self.setting}/"
                f"seed{self.seed}.{ext}")


def teacher_dir(arch: str, variant: str, tseed: int) -> str:
    """A teacher's folder under results/<name>/ (the module docstring's layout): teachers/<arch>/<variant>/seed<t>."""
    return f"teachers/{arch}/{variant}/seed{tseed}"


def split_teacher_folder(text: str) -> tuple[str, str]:
    """'<variant>@best' -> ('<variant>', 'best'); '<variant>' -> ('<variant>', 'model') (`StudentRun.t_folder`)."""
    if text.endswith(BEST_SUFFIX):
        return text[: -len(BEST_SUFFIX)], "best"
    return text, "model"


@dataclass
class Grid:
    config: dict
    teachers: dict[str, set[str]] = field(default_factory=dict)  # arch -> {variant, ...}
    variants: dict[tuple[str, str], tuple[str, dict]] = field(default_factory=dict)  # (arch, variant) -> objective, hp
    runs: dict[str, list[StudentRun]] = field(default_factory=dict)  # experiment -> its student runs
    experiments: dict[str, object] = field(default_factory=dict)  # enabled experiment name -> Experiment
    _figures: dict | None = field(default=None, repr=False)  # built once (the rules ask for it per job)

    # ---------------- construction
    @classmethod
    def from_config(cls, config: dict) -> Grid:
        from mcmikd.experiments import get_experiment

        grid = cls(config=config)
        for name, body in config["experiments"].items():
            if body.get("enabled", True):
                grid.experiments[name] = get_experiment(name)(body, grid)
        for name, exp in grid.experiments.items():
            exp.check(f"experiments.{name}")
        grid.check_class_ids(grid.num_classes())
        for name, exp in grid.experiments.items():
            if exp.has_students:
                grid.runs[name] = grid._student_runs(exp)
            for arch in exp.teacher_archs():
                for objective in exp.objectives():
                    grid.teacher_variant(arch, objective, exp)
        owners = {}
        for name, exp in grid.experiments.items():
            if not exp.has_students or exp.setting_prefix is None:
                continue
            if exp.setting_prefix in owners:
                raise ConfigError(f"experiment kinds '{owners[exp.setting_prefix]}' and '{name}' both own student "
                                  f"settings '{exp.setting_prefix}...'; give one of them another setting_prefix")
            owners[exp.setting_prefix] = name
        unused = sorted(set((config.get("teachers") or {}).get("weights") or {}) - set(grid.teachers))
        if unused:
            raise ConfigError(f"config key 'teachers.weights.{unused[0]}': no experiment has a {unused[0]} teacher, so "
                              f"the file would not be used; remove the key or add a pair with that teacher")
        grid.check_processes()
        return grid

    def check_processes(self) -> None:
        """With `runtime.processes` = N > 1 (training jobs as N processes, `mcmikd.distributed`): refuse, in one line,
        `runtime.compile: graphs`, a training batch_size below N, a teacher objective whose `multiprocess_problem`
        names one (e.g. MCMI with `ema` centroids), and a student method that is not marked `multiprocess = True` in
        its class (a loss that couples the images of a batch, state across batches, an init stage)."""
        from mcmikd.canonical import static_attribute
        from mcmikd.distributed import processes_of

        n = processes_of(self.config)
        if n <= 1:
            return
        if self.config["runtime"].get("compile") == "graphs":
            raise ConfigError(f"config key 'runtime.compile': graphs cannot run with runtime.processes = {n} (no CUDA "
                              f"graphs around DistributedDataParallel); use auto (eager under several processes) "
                              f"or none")
        for key in ("teachers.training", "teachers.finetuning", "students.training"):
            section, block = key.split(".")
            size = self.config[section][block]["batch_size"]
            if size < n:
                raise ConfigError(f"config key '{key}.batch_size': {size} cannot be split over runtime.processes = "
                                  f"{n}; use a batch_size of at least {n} or fewer processes")
        for (arch, variant), (objective, hp) in sorted(self.variants.items()):
            problem = self.objective_class(objective).multiprocess_problem(hp)
            if problem:
                raise ConfigError(f"config key 'runtime.processes': teacher {arch}/{variant} (objective '{objective}') "
                                  f"cannot train as {n} processes: {problem}; use runtime.processes: 1")
        for method in sorted({run.method for run in self.all_runs()}):
            if METHODS.get(method) is None or static_attribute(METHODS[method], "multiprocess") is not True:
                raise ConfigError(f"config key 'runtime.processes': method '{method}' cannot train as {n} processes "
                                  f"(its loss couples the images of a batch, keeps state across batches or has an init "
                                  f"stage, or its class does not say multiprocess = True); use runtime.processes: 1 "
                                  f"or the methods ce, kd, dkd")

    def _student_runs(self, exp) -> list[StudentRun]:
        runs: list[StudentRun] = []
        methods = exp.methods()
        if exp.ce_baseline and "ce" not in methods:
            methods = methods + ["ce"]
        for pair in exp.pairs():
            variants = [(self.teacher_variant(pair["teacher"], o, exp, override), self.teacher_model(o, exp))
                        for o, override in exp.compared_teachers(pair)]
            for method in methods:
                if _excluded(exp.body.get("exclude", []), method, pair):
                    continue
                for setting in exp.settings():
                    for seed in exp.seeds():
                        if method == "ce":
                            runs.append(StudentRun(NO_TEACHER, NO_TEACHER, pair["student"], "ce", setting, seed))
                            continue
                        runs += [StudentRun(pair["teacher"], v, pair["student"], method, setting, seed, t_model=m)
                                 for v, m in variants]
        return list(dict.fromkeys(runs))  # drop duplicates (ce runs shared by pairs), keep order

    def teacher_variant(self, arch: str, objective: str, exp=None, override: dict | None = None) -> str:
        """Register the teacher (and, for a fine-tuning objective, the teacher it starts from) that `exp` compares
        for `arch` under `objective`; returns its variant (result-folder name).

        Its hyper-parameters are `teachers.hp.<objective>` (defaults filled in, per architecture), then `exp`'s
        `hp.<objective>` override, then `override` (e.g. one value of a sweep). Both overrides may set only the
        objective's `path_keys`, which name the variant, so two differently trained teachers never share a
        folder; another key is a one-line ConfigError."""
        cls = self.objective_class(objective)
        hp = cls.resolve_hp(dict(self.config["teachers"]["hp"].get(objective) or {}), arch)
        if exp is not None:
            hp.update((exp.body.get("hp") or {}).get(objective) or {})
        if override:
            extra = sorted(set(override) - set(cls.path_keys))
            if extra:
                raise ConfigError(f"teacher objective '{objective}': {extra} cannot be overridden per teacher; only "
                                  f"its path hyper-parameters {list(cls.path_keys) or '(none)'} can")
            hp.update(override)
        variant = cls.variant(hp)
        known = self.variants.setdefault((arch, variant), (objective, hp))
        if known != (objective, hp):  # pragma: no cover - overrides are limited to path keys
            raise ConfigError(f"teacher {arch}/{variant} is asked for with two settings: {known[1]} and {hp}")
        self.teachers.setdefault(arch, set()).add(variant)
        if cls.start_from is not None:
            self.teacher_variant(arch, cls.start_from)
        return variant

    def teacher_model(self, objective: str, exp) -> str:
        """The teacher file ('model' or 'best') `exp`'s students of `objective` distil from.

        `exp`'s `teacher_checkpoint` (last | best, default: the one teachers.finetuning.checkpoint keeps, last
        unless set: no model selection on the test set; docs/paper.md) applies to every compared *fine-tuned* teacher
        alike (MCMI and its λ = 0 control: like with like); a
        teacher trained from scratch (MLL) is always its model.pt (`teachers.training.checkpoint`). model.pt is
        already the state `teachers.finetuning.checkpoint` chooses; `best` otherwise reads best.pt, which every
        fine-tuning job also writes (no teacher is retrained for it). ConfigError: `last` while fine-tuned
        teachers keep their best state (no last state is kept then)."""
        if self.objective_class(objective).start_from is None:
            return "model"
        choice = exp.teacher_checkpoint()
        kept = self.config["teachers"]["finetuning"].get("checkpoint", "last")
        if choice == kept:
            return "model"
        if choice == "best":
            return "best"
        raise ConfigError(f"config key 'experiments.{exp.name}.teacher_checkpoint': 'last' needs "
                          f"teachers.finetuning.checkpoint: last (model.pt now holds the best-on-test state and no "
                          f"last state is kept); set one of them")

    @staticmethod
    def objective_class(name: str):
        from mcmikd.teachers import get_objective

        return get_objective(name)

    # ---------------- queries used by the rules
    def all_runs(self) -> list[StudentRun]:
        return list(dict.fromkeys(r for runs in self.runs.values() for r in runs))

    def teacher_dirs(self) -> list[tuple[str, str]]:
        return sorted((arch, variant) for arch, variants in self.teachers.items() for variant in variants)

    def teacher_seeds(self) -> list[int]:
        """`teachers.seeds`: every teacher (arch, variant) is trained once per seed, all of them (whether or not a
        student run uses it), so teacher rows span the same seeds in every experiment."""
        return list(self.config["teachers"]["seeds"])

    def experiment_teachers(self, experiment: str) -> list[tuple[str, str, int]]:
        """The teachers (arch, variant, teacher seed) whose rows an experiment's table shows: every teacher of its
        pairs, every teacher seed (`teacher_seeds`); [] for an experiment without runs or without a teacher."""
        pairs = {(r.t_arch, r.t_variant) for r in self.runs.get(experiment, []) if r.t_arch != NO_TEACHER}
        return [(a, v, t) for a, v in sorted(pairs) for t in self.teacher_seeds()]

    def teacher_seed(self, student_seed: int) -> int:
        """The teacher seed a student run of seed `student_seed` is distilled from: `teachers.seeds[s % len]`
        (value-based, the same in every experiment; seeds [0, 1, 2] and student seeds [0, 1, 2]: s -> s), so the
        grid does not grow and a mean over student seeds spans teacher seeds too."""
        seeds = self.teacher_seeds()
        return seeds[student_seed % len(seeds)]

    def teacher_jobs(self) -> list[tuple[str, str, int]]:
        """Every teacher job (arch, variant, teacher seed)."""
        return [(a, v, t) for a, v in self.teacher_dirs() for t in self.teacher_seeds()]

    def start_variant(self, arch: str, variant: str) -> str | None:
        """The variant a fine-tuned teacher starts from (None for one trained from scratch)."""
        cls = self.objective_class(self.variants[(arch, variant)][0])
        return None if cls.start_from is None else self.teacher_variant(arch, cls.start_from)

    def variant_names(self, fine_tuned: bool) -> list[str]:
        """Every variant trained from scratch (False) or by fine-tuning (True), for the rules' wildcards."""
        return sorted({v for (_, v), (o, _) in self.variants.items()
                       if (self.objective_class(o).start_from is not None) == fine_tuned})

    def trained_objectives(self) -> list[str]:
        from mcmikd.teachers import OBJECTIVES

        used = {o for o, _ in self.variants.values()}
        return [o for o in OBJECTIVES if o in used]

    def method_hp(self, method: str) -> dict:
        return dict(self.config["methods"].get(method) or {})

    def num_classes(self) -> int | None:
        """Classes of the configured dataset (`mcmikd.datasets`); None while unknown (image folder not there yet)."""
        from mcmikd.datasets import num_classes

        return num_classes(self.config["dataset"])

    def class_names(self) -> list[str] | None:
        from mcmikd.datasets import class_names

        return class_names(self.config["dataset"])

    def check_class_ids(self, num_classes: int | None) -> None:
        """Every experiment's class ids against the dataset's `num_classes` (None: skipped, checked again by the
        preflight once an image folder exists). Raises a one-line ConfigError."""
        if num_classes:
            for name, exp in self.experiments.items():
                exp.check_classes(f"experiments.{name}", num_classes)

    # ---------------- each job's params (only what that job depends on)
    def runtime(self) -> dict:
        # threads are left out: they come through the rule's `threads:` and must not rerun jobs when changed;
        # compile only when set (its default "none" is the engine as before, so existing results keep their params)
        # processes only in the training jobs' params (`train_runtime`)
        return {k: v for k, v in self.config["runtime"].items()
                if k not in ("threads", "processes") and not (k == "compile" and v == "none")}

    def train_runtime(self) -> dict:
        """The runtime params of a training job: `runtime()`, with `processes` when above 1 (a one-process job's
        params, and so its results, stay as they were; a multi-process one is not bit-identical to it)."""
        from mcmikd.distributed import processes_of

        n = processes_of(self.config)
        return {**self.runtime(), **({"processes": n} if n > 1 else {})}

    def data_params(self) -> dict:
        # only the keys the dataset uses (its spec's config_keys): changing another one reruns nothing
        return canonical(get_dataset(self.config["dataset"]["name"]).params(self.config["dataset"]))

    def _recipe(self, recipe: dict, arch: str) -> dict:
        recipe = dict(recipe)
        small = recipe.pop("lr_small_models", None)
        for key in ("checkpoint", "collapse_ratio"):
            recipe.pop(key, None)
        if recipe.get("last_batch") == "keep":  # the default: jobs that keep it keep their params (and results)
            recipe.pop("last_batch")
        if small is not None and arch in SMALL_LR_MODELS:
            recipe["lr"] = small
        return recipe

    def teacher_weights(self, arch: str, variant: str, seed: int) -> str | None:
        """The file `teachers.weights` loads teacher (arch, variant, seed) from, or None (trained). Only a teacher
        trained from scratch under its objective's plain name (MLL's `mll`, not a stopped `mll-e<k>`) is loaded."""
        objective = self.variants[(arch, variant)][0]
        if self.objective_class(objective).start_from is not None or variant != objective:
            return None
        spec = (self.config["teachers"].get("weights") or {}).get(arch)
        if isinstance(spec, dict):
            return spec.get(int(seed))
        return spec

    def teacher_params(self, arch: str, variant: str, seed: int) -> dict:
        """The params of teacher job (arch, variant, seed); `seed` (one of `teachers.seeds`) seeds its training.
        A teacher loaded from `teachers.weights` has no recipe: its params name the file and its sha256."""
        objective, hp = self.variants[(arch, variant)]
        weights = self.teacher_weights(arch, variant, seed)
        if weights is not None:
            return canonical({"arch": arch, "objective": objective, "variant": variant, "hp": hp, "seed": int(seed),
                              "weights": {"path": str(weights), "sha256": weights_sha256(weights)},
                              "runtime": self.runtime()})
        fine_tuned = self.objective_class(objective).start_from is not None
        t = self.config["teachers"]
        block = t["finetuning" if fine_tuned else "training"]
        params = {"arch": arch, "objective": objective, "variant": variant, "hp": hp, "seed": int(seed),
                  "recipe": self._recipe(block, arch), "checkpoint": block.get("checkpoint", "last"),
                  "augment": dict(self.config["augment"]), "runtime": self.train_runtime()}
        if fine_tuned:
            params["collapse_ratio"] = block["collapse_ratio"]
        return canonical(params)

    def cmi_temperatures(self) -> list[float]:
        temps = set(float(t) for t in self.config["teachers"]["cmi_temperatures"])
        for exp in self.experiments.values():
            temps.update(exp.cmi_temperatures())
        return sorted(temps)

    def cmi_params(self) -> dict:
        return canonical({"temperatures": self.cmi_temperatures(), "augment": dict(self.config["augment"]),
                          "runtime": self.runtime()})

    def setting_owner(self, setting: str):
        """The experiment that owns a student setting's prefix ('frac', 'omit', 'T', ...); None for 'full'."""
        prefix, _ = split_setting(setting)
        return next((e for e in self.experiments.values() if e.has_students and e.setting_prefix == prefix
                     and prefix is not None), None)

    def setting_pattern(self) -> str:
        """Regular expression of every student setting the enabled experiments produce (a wildcard constraint)."""
        prefixes = sorted({e.setting_prefix for e in self.experiments.values() if e.has_students and e.setting_prefix})
        return "|".join(["full", *(f"{re.escape(p)}[0-9][0-9.e+-]*" for p in prefixes)])

    def student_params(self, run: StudentRun) -> dict:
        hp = self.method_hp(run.method)
        setting: dict = {}
        owner = self.setting_owner(run.setting)
        if owner is not None:
            parsed = owner.parse_setting(split_setting(run.setting)[1])
            setting, overrides = owner.setting_params(parsed)
            hp.update(overrides)
            hp.update(owner.method_overrides(run.method))
            hp.update(owner.run_hp(run, parsed))
        teacher = None
        if run.t_arch != NO_TEACHER:
            teacher = {"arch": run.t_arch, "objective": self.variants[(run.t_arch, run.t_variant)][0],
                       "variant": run.t_variant, "seed": self.teacher_seed(run.seed)}
            if run.t_model == "best":  # only then: the parameters of every other student stay as they were
                teacher["checkpoint"] = "best"
        # a hyper-parameter written out at its method's default means the same as one left out (mcmikd.canonical)
        hp = without_defaults(hp, static_defaults(METHODS[run.method]) if run.method in METHODS else None)
        return canonical({"teacher": teacher, "student": run.student, "method": run.method, "hp": hp,
                          "recipe": self._recipe(self.config["students"]["training"], run.student),
                          "setting": setting, "seed": run.seed, "augment": dict(self.config["augment"]),
                          "runtime": self.train_runtime()})

    def cam_experiments(self) -> list:
        return [e for e in self.experiments.values() if hasattr(e, "job_params")]

    def _cam_teachers(self, arch: str):
        """(the CAM experiment that shows teacher architecture `arch`, {objective: variant} of its teachers)."""
        exp = next(e for e in self.cam_experiments() if arch in e.teacher_archs())
        return exp, {o: self.teacher_variant(arch, o, exp) for o in exp.objectives()}

    def cam_params(self, arch: str) -> dict:
        exp, variants = self._cam_teachers(arch)
        return canonical({**exp.job_params(arch, variants), "runtime": self.runtime()})

    def cam_measure_params(self, arch: str, teacher_seed: int) -> dict:
        """The params of the CAM measurement job of teacher architecture `arch` and teacher seed `teacher_seed`."""
        exp, variants = self._cam_teachers(arch)
        return canonical({**exp.measure_params(arch, variants, teacher_seed), "runtime": self.runtime()})

    def tsne_params(self, experiment: str, setting: str) -> dict:
        """The params of the t-SNE job of `experiment`'s student setting `setting` (`mcmikd.jobs.tsne`)."""
        return canonical({**self.experiments[experiment].tsne_params(setting), "runtime": self.runtime()})

    def cam_measure_files(self) -> list[str]:
        """Result paths (relative to results/<name>/) of every CAM measurement job; [] when none measures."""
        return [f for e in self.cam_experiments() if hasattr(e, "measure_files") for f in e.measure_files()]

    def cam_measure_layout(self) -> dict:
        exp = next(e for e in self.cam_experiments() if getattr(e, "measures", lambda: False)())
        return exp.measure_layout()

    def figures(self) -> dict:
        """Every figure of the enabled experiments, and the fine-tuning curves of the fine-tuned teachers (built
        once, after the grid is complete: the figure rule's input and params functions ask for it for every job)."""
        if self._figures is None:
            self._figures = self._build_figures()
        return self._figures

    def _build_figures(self) -> dict:
        from mcmikd.experiments.base import Figure
        from mcmikd.teachers import FINETUNING_CAPTION

        figures = {f.name: f for exp in self.experiments.values() for f in exp.figures()}
        objectives = self.trained_objectives()
        starts = {o: self.objective_class(o).start_from for o in objectives}
        starts = {o: s for o, s in starts.items() if s is not None}
        if starts:
            layout = {"start_from": starts, "labels": {o: self.objective_class(o).label for o in objectives},
                      "colors": {o: self.objective_class(o).color for o in objectives}}
            inputs = tuple(f"{teacher_dir(a, v, t)}/metrics.json" for a, v, t in self.teacher_jobs())
            figures["teachers_finetuning"] = Figure("teachers_finetuning", "mcmikd.plots:teachers_finetuning_figure",
                                                    inputs, FINETUNING_CAPTION, "Teachers", "fine-tuning", layout)
        return figures


def _excluded(rules: list[dict], method: str, pair: dict) -> bool:
    return any(rule["method"] == method and all(rule[k] == pair[k] for k in ("teacher", "student") if k in rule)
               for rule in rules)


def split_setting(text: str) -> tuple[str | None, str]:
    """'frac0.1' -> ('frac', '0.1'); 'full' -> (None, ''). The prefix names the experiment kind that owns it."""
    m = re.match(r"^([A-Za-z]+)([0-9][0-9.e+-]*)$", text)
    if text == "full" or not m:
        return None, ""
    return m[1], m[2]


def load_grid(config: dict, schema_path: str | Path) -> Grid:
    validate_config(config, schema_path)
    check_config(config)
    return Grid.from_config(config)


def schema_path() -> Path:
    """The workflow's config schema, shipped as package data (`mcmikd/schemas/config.schema.yaml`, so a non-editable
    install has it; a checkout's workflow/schemas/config.schema.yaml, which rules/common.smk validates every config
    with, is a link to it)."""
    return Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


def resource(config: dict, rule: str, key: str, fallback):
    """A rule's resource from the config's `resources` section: the rule's own block, then `default`, then
    `fallback` (rules/common.smk's `res`; `cpus_per_task` is the rule's `threads:`)."""
    table = config.get("resources", {})
    return table.get(rule, {}).get(key, table.get("default", {}).get(key, fallback))
