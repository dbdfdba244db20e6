"""Which hyper-parameter is a KD method's main weight, and its value, read without importing torch.

Every `Distiller` declares `weight_key`: the key of its `defaults` that weights the method's own term in
RepDistiller's γ·CE + α·KL + β·L_method — `beta` for the feature/relation methods (FitNet, AT, SP, CC, VID, RKD,
PKT, AB, FT, FSP, NST, CRD, DIST), and for DKD (NCKD weight) and ReviewKD (HCL weight); `alpha` for KD (the weight
of the KL term, RepDistiller's `-a`; γ, the CE weight, stays); None for the teacher-free CE student. A method whose
default weight is None (DKD, ReviewKD: the official value per teacher–student pair) also declares `weight_table`
= (name of its module-level {(teacher, student): value} dict, name of its fallback value).

The method-weight selection (`mcmikd.experiments.method_weights`) scales that one value; the Snakefile needs it at
parse time, so this module reads the declarations from the method's source with `ast` (literal values only), the
way `mcmikd.codedeps` reads imports.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from mcmikd.errors import ConfigError

BASE_MODULE = "mcmikd.distill.base"
BASE_CLASS = "Distiller"


def _module_file(module: str) -> Path:
    root = Path(__file__).parents[1]  # src/mcmikd
    parts = module.split(".")
    if parts[0] == "mcmikd":
        path = root.joinpath(*parts[1:]).with_suffix(".py")
        if path.exists():
            return path
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:  # pragma: no cover - registry names are checked before
        raise ConfigError(f"cannot locate the source of module '{module}'")
    return Path(spec.origin)


@functools.cache
def _literals(module: str, cls_name: str) -> tuple[dict, dict]:
    """(literal class attributes of `cls_name`, literal module-level assignments) of `module`'s source."""
    tree = ast.parse(_module_file(module).read_text())
    module_values, class_values = {}, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                module_values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            for item in node.body:
                target = (item.targets[0] if isinstance(item, ast.Assign) and len(item.targets) == 1
                          else item.target if isinstance(item, ast.AnnAssign) and item.value is not None else None)
                if isinstance(target, ast.Name):
                    try:
                        class_values[target.id] = ast.literal_eval(item.value)
                    except ValueError:
                        pass
    return class_values, module_values


def declared(method: str) -> dict:
    """{'weight_key', 'defaults', 'weight_table'} of a registered method, the class's own declarations over the
    `Distiller` base's. ConfigError for an unknown method."""
    from mcmikd.distill import METHODS

    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    module, cls_name = METHODS[method].split(":")
    base, _ = _literals(BASE_MODULE, BASE_CLASS)
    own, module_values = _literals(module, cls_name)
    out = {key: own.get(key, base.get(key)) for key in ("weight_key", "defaults", "weight_table")}
    out["module_values"] = module_values
    return out


def weight_key(method: str) -> str | None:
    """The hyper-parameter that weights `method`'s own loss term (None: nothing to weight, e.g. `ce`)."""
    return declared(method)["weight_key"]


def method_weight(method: str, hp: dict, teacher: str = "", student: str = "") -> tuple[str | None, float | None]:
    """(weight key, its value) of `method` with the config's `hp` (`methods.<name>`) over the class defaults; a
    default of None is the official per-pair value (`weight_table`) for `teacher` → `student`. (None, None) for a
    method without a weight. ConfigError when the value cannot be determined."""
    info = declared(method)
    key = info["weight_key"]
    if key is None:
        return None, None
    value = (hp or {}).get(key, (info["defaults"] or {}).get(key))
    if value is None and info["weight_table"]:
        table, fallback = info["weight_table"]
        value = info["module_values"].get(table, {}).get((teacher, student), info["module_values"].get(fallback))
    if value is None:
        raise ConfigError(f"methods.{method}: its weight '{key}' has no value to scale; set it in methods.{method}")
    return key, float(value)
