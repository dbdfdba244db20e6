"""Config validation and the experiment grid, without importing torch (the Snakefile uses this at parse time).

`load_grid(config, schema)` validates the config against the JSON schema (filling defaults), checks what the
schema cannot (model and method names, milestones, class ids, ...), and returns a `Grid`: every teacher,
student, CAM and aggregation job the config asks for, with each job's own slice of the config.

Output layout (all under results/<name>/):
  data.pt
  teachers/<arch>/<kind>/{model.pt, metrics.json, cmi.json}       kind = mll | mcmi-<λ>
  students/<t_arch>/<t_kind>/<student>/<method>/<setting>/seed<s>.json
        t_arch = t_kind = none for teacher-free runs (method ce)
        setting = full | frac<f> (few-shot) | omit<c1>.<c2>... (zero-shot) | T<t> (KD temperature sweep)
  cam/<arch>.pt, runs/<experiment>.csv, tables/<experiment>.{csv,md,tex}, figures/<figure>.{png,pdf}
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mcmikd.datasets import DATASETS, get_dataset
from mcmikd.distill import METHODS
from mcmikd.errors import ConfigError
from mcmikd.models import MODELS, SMALL_LR_MODELS

EXPERIMENTS = ("main", "fewshot", "zeroshot", "temperature", "cam")
NO_TEACHER = "none"


# --------------------------------------------------------------------------------------------- validation
def _key_path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Check `config` against the JSON schema, filling in defaults; one-line ConfigError on the first problem."""
    import jsonschema
    import yaml
    from jsonschema import validators

    schema = yaml.safe_load(Path(schema_path).read_text())
    base = validators.validator_for(schema)

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, subschema)

    validator = validators.extend(base, {"properties": set_defaults})(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        key = _key_path(error)
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            allowed = ", ".join(error.schema.get("properties", {}))
            raise ConfigError(f"config key '{key}': unknown key(s) {extra}; allowed here: {allowed}")
        if error.validator == "required":
            raise ConfigError(f"config key '{key}': {error.message}; see config/README.md")
        if error.validator == "enum":
            raise ConfigError(f"config key '{key}': {error.instance!r} is not allowed; use one of {error.validator_value}")
        raise ConfigError(f"config key '{key}': {error.message}")
    return config


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


def check_class_ids(config: dict, num_classes: int | None) -> None:
    """Zero-shot omitted classes and Eigen-CAM classes must be ids of the dataset (0..num_classes-1); skipped
    while `num_classes` is unknown (None: an image folder not there yet, checked again by the preflight).
    Raises a one-line ConfigError."""
    exps = config["experiments"]
    if not num_classes:
        return
    if "zeroshot" in exps:
        for i, omitted in enumerate(exps["zeroshot"]["omitted"]):
            bad = [c for c in omitted if c >= num_classes]
            if bad:
                raise ConfigError(f"config key 'experiments.zeroshot.omitted[{i}]': class ids {bad} do not exist "
                                  f"in {config['dataset']['name']} (0..{num_classes - 1})")
            if len(omitted) >= num_classes:
                raise ConfigError(f"config key 'experiments.zeroshot.omitted[{i}]': cannot omit every class")
    if "cam" in exps:
        bad = [c for c in (exps["cam"].get("classes") or []) if c >= num_classes]
        if bad:
            raise ConfigError(f"config key 'experiments.cam.classes': class ids {bad} do not exist "
                              f"(0..{num_classes - 1})")


def check_config(config: dict) -> None:
    """Rules the schema cannot express. Raises a one-line ConfigError."""
    for name in config["methods"]:
        _check_method(name, f"methods.{name}")
    _check_recipe(config["teachers"]["training"], "teachers.training")
    _check_recipe(config["teachers"]["mcmi"], "teachers.mcmi")
    _check_recipe(config["students"]["training"], "students.training")
    for arch in config["teachers"]["mcmi"].get("lambda_per_teacher", {}):
        _check_model(arch, f"teachers.mcmi.lambda_per_teacher.{arch}")
    spec = _check_dataset(config["dataset"])
    exps = config["experiments"]
    for exp, body in exps.items():
        if exp == "cam":
            for i, arch in enumerate(body["teachers"]):
                _check_model(arch, f"experiments.cam.teachers[{i}]")
            continue
        pairs = body.get("pairs") or [body["pair"]]
        for i, pair in enumerate(pairs):
            where = f"experiments.{exp}.pairs[{i}]" if "pairs" in body else f"experiments.{exp}.pair"
            _check_model(pair["teacher"], f"{where}.teacher")
            _check_model(pair["student"], f"{where}.student")
        for i, method in enumerate(body.get("methods", [])):
            _check_method(method, f"experiments.{exp}.methods[{i}]")
        for i, rule in enumerate(body.get("exclude", [])):
            _check_method(rule["method"], f"experiments.{exp}.exclude[{i}].method")
    check_class_ids(config, spec.num_classes_of(config["dataset"]))
    if "temperature" in exps and "kd" not in METHODS:  # pragma: no cover - kd is built in
        raise ConfigError("the temperature experiment needs the kd method")


# --------------------------------------------------------------------------------------------- the grid
def fmt_num(value: float) -> str:
    """Canonical short text for a number in a path (0.25 -> '0.25', 4.0 -> '4')."""
    return f"{float(value):g}"


def mcmi_kind(lam: float) -> str:
    return f"mcmi-{fmt_num(lam)}"


@dataclass(frozen=True)
class StudentRun:
    t_arch: str
    t_kind: str
    student: str
    method: str
    setting: str
    seed: int

    @property
    def teacher_id(self) -> str:
        return NO_TEACHER if self.t_arch == NO_TEACHER else f"{self.t_arch}/{self.t_kind}"


@dataclass
class Grid:
    config: dict
    teachers: dict[str, set[str]] = field(default_factory=dict)  # arch -> {mll, mcmi-λ, ...}
    runs: dict[str, list[StudentRun]] = field(default_factory=dict)  # experiment -> its student runs

    # ---------------- construction
    @classmethod
    def from_config(cls, config: dict) -> "Grid":
        grid = cls(config=config)
        exps = config["experiments"]
        default_seeds = config["students"]["seeds"]
        for exp in ("main", "fewshot", "zeroshot", "temperature"):
            body = exps.get(exp)
            if not body or not body.get("enabled", True):
                continue
            seeds = body.get("seeds", default_seeds)
            pairs = body.get("pairs") or [body["pair"]]
            methods = list(body.get("methods", ["kd"]))
            settings = grid._settings(exp, body)
            runs: list[StudentRun] = []
            for pair in pairs:
                kinds = ["mll", mcmi_kind(grid.lambda_for(pair["teacher"], body))]
                for method in methods + (["ce"] if exp in ("main", "zeroshot") and "ce" not in methods else []):
                    if _excluded(body.get("exclude", []), method, pair):
                        continue
                    for setting in settings:
                        for seed in seeds:
                            if method == "ce":
                                runs.append(StudentRun(NO_TEACHER, NO_TEACHER, pair["student"], "ce", setting, seed))
                                continue
                            for kind in kinds:
                                grid.teachers.setdefault(pair["teacher"], set()).add(kind)
                                runs.append(StudentRun(pair["teacher"], kind, pair["student"], method, setting, seed))
            grid.runs[exp] = list(dict.fromkeys(runs))  # drop duplicates (ce runs shared by pairs), keep order
        cam = exps.get("cam")
        if cam and cam.get("enabled", True):
            for arch in cam["teachers"]:
                grid.teachers.setdefault(arch, set()).update({"mll", mcmi_kind(grid.lambda_for(arch, cam))})
        return grid

    def _settings(self, exp: str, body: dict) -> list[str]:
        if exp == "fewshot":
            return [f"frac{fmt_num(f)}" for f in body["fractions"]]
        if exp == "zeroshot":
            return ["omit" + ".".join(str(c) for c in sorted(set(o))) for o in body["omitted"]]
        if exp == "temperature":
            return [self._temperature_setting(t) for t in body["temperatures"]]
        return ["full"]

    def _temperature_setting(self, t: float) -> str:
        # the sweep's run at the configured KD temperature is the main experiment's KD run: share it
        return "full" if float(t) == float(self.method_hp("kd").get("temperature", 4.0)) else f"T{fmt_num(t)}"

    def lambda_for(self, arch: str, body: dict | None = None) -> float:
        if body and "lambda" in body:
            return float(body["lambda"])
        mcmi = self.config["teachers"]["mcmi"]
        return float(mcmi.get("lambda_per_teacher", {}).get(arch, mcmi["lambda"]))

    # ---------------- queries used by the rules
    def all_runs(self) -> list[StudentRun]:
        return list(dict.fromkeys(r for runs in self.runs.values() for r in runs))

    def teacher_dirs(self) -> list[tuple[str, str]]:
        return sorted((arch, kind) for arch, kinds in self.teachers.items() for kind in kinds)

    def method_hp(self, method: str) -> dict:
        return dict(self.config["methods"].get(method) or {})

    # ---------------- each job's params (only what that job depends on)
    def runtime(self) -> dict:
        # threads are left out: they come through the rule's `threads:` and must not rerun jobs when changed
        return {k: v for k, v in self.config["runtime"].items() if k != "threads"}

    def data_params(self) -> dict:
        # only the keys the dataset uses (its spec's config_keys): changing another one reruns nothing
        return get_dataset(self.config["dataset"]["name"]).params(self.config["dataset"])

    def _recipe(self, recipe: dict, arch: str) -> dict:
        recipe = dict(recipe)
        small = recipe.pop("lr_small_models", None)
        recipe.pop("checkpoint", None)
        if small is not None and arch in SMALL_LR_MODELS:
            recipe["lr"] = small
        return recipe

    def teacher_params(self, arch: str) -> dict:
        t = self.config["teachers"]
        return {"arch": arch, "seed": t["seed"], "recipe": self._recipe(t["training"], arch),
                "checkpoint": t["training"].get("checkpoint", "last"), "augment": dict(self.config["augment"]),
                "runtime": self.runtime()}

    def mcmi_params(self, arch: str, kind: str) -> dict:
        m = self.config["teachers"]["mcmi"]
        lam = float(kind.split("-", 1)[1])
        recipe = self._recipe({k: m[k] for k in ("epochs", "batch_size", "lr", "lr_small_models", "momentum",
                                                 "weight_decay", "schedule", "milestones", "gamma") if k in m}, arch)
        params = {"arch": arch, "lambda": lam, "seed": self.config["teachers"]["seed"], "recipe": recipe,
                  "centroids": m["centroids"], "checkpoint": m["checkpoint"], "collapse_ratio": m["collapse_ratio"],
                  "augment": dict(self.config["augment"]), "runtime": self.runtime()}
        if m["centroids"] == "ema":
            params["ema_decay"] = m["ema_decay"]
        return params

    def cmi_temperatures(self) -> list[float]:
        temps = set(float(t) for t in self.config["teachers"]["cmi_temperatures"])
        sweep = self.config["experiments"].get("temperature")
        if sweep and sweep.get("enabled", True):
            temps.update(float(t) for t in sweep["temperatures"])
        return sorted(temps)

    def cmi_params(self) -> dict:
        return {"temperatures": self.cmi_temperatures(), "runtime": self.runtime()}

    def student_params(self, run: StudentRun) -> dict:
        hp = self.method_hp(run.method)
        setting = parse_setting(run.setting)
        if "temperature" in setting:
            hp["temperature"] = setting.pop("temperature")
        if "fraction" in setting:
            fewshot = self.config["experiments"]["fewshot"]
            setting.update(subset=fewshot.get("subset", "first_n"), epoch_length=fewshot.get("epoch_length", "full"))
        teacher = None
        if run.t_arch != NO_TEACHER:
            lam = float(run.t_kind.split("-", 1)[1]) if run.t_kind.startswith("mcmi") else None
            teacher = {"arch": run.t_arch, "kind": run.t_kind.split("-")[0], "lambda": lam}
        return {"teacher": teacher, "student": run.student, "method": run.method, "hp": hp,
                "recipe": self._recipe(self.config["students"]["training"], run.student), "setting": setting,
                "seed": run.seed, "augment": dict(self.config["augment"]), "runtime": self.runtime()}

    def cam_params(self, arch: str) -> dict:
        cam = self.config["experiments"]["cam"]
        return {"arch": arch, "kinds": ["mll", mcmi_kind(self.lambda_for(arch, cam))],
                "indices": list(cam.get("indices") or []), "per_class": cam["per_class"],
                "classes": cam.get("classes"), "layer": cam["layer"], "center": cam["center"],
                "runtime": self.runtime()}

    def enabled(self, exp: str) -> bool:
        body = self.config["experiments"].get(exp)
        return bool(body) and body.get("enabled", True)


def _excluded(rules: list[dict], method: str, pair: dict) -> bool:
    return any(rule["method"] == method and all(rule[k] == pair[k] for k in ("teacher", "student") if k in rule)
               for rule in rules)


_SETTING = re.compile(r"^(full|frac(?P<frac>[0-9.e-]+)|omit(?P<omit>[0-9]+(\.[0-9]+)*)|T(?P<temp>[0-9.e-]+))$")


def parse_setting(text: str) -> dict:
    """'full' -> {}, 'frac0.1' -> {'fraction': 0.1}, 'omit3.8' -> {'omitted': [3, 8]}, 'T2' -> {'temperature': 2.0}."""
    m = _SETTING.match(text)
    if not m:
        raise ConfigError(f"unknown student setting '{text}'")
    if m["frac"]:
        return {"fraction": float(m["frac"])}
    if m["omit"]:
        return {"omitted": [int(c) for c in m["omit"].split(".")]}
    if m["temp"]:
        return {"temperature": float(m["temp"])}
    return {}


def load_grid(config: dict, schema_path: str | Path) -> Grid:
    validate_config(config, schema_path)
    check_config(config)
    return Grid.from_config(config)
