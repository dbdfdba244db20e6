"""Canonical forms: a job's params as the meaning of its config slice, and exact fractions of counts.

Snakemake reruns a job when the `repr` of its params changes (its persistence compares them as text), so two
spellings of one config — keys in another order, `4` written `4.0`, a default written out or left out — must give
the same params, or an editor's YAML formatter reruns a whole grid. `canonical` is that form; every training,
measuring and Eigen-CAM job's params go through it (`mcmikd.config.Grid`), and the method hyper-parameters drop the
entries equal to the method's class default (`static_defaults`), so writing a default out changes nothing.

Torch-free: used at parse time.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from fractions import Fraction
from functools import cache
from pathlib import Path

EXACT_INT = 2 ** 53  # floats above this are not all integers of their own; they stay floats


def canonical(value):
    """`value` with every mapping's keys sorted (by their text), every float that is a whole number (|x| < 2**53)
    written as an int, and tuples as lists; booleans, strings and None unchanged. Two configs that mean the same
    give equal `repr`s. Lists keep their order (it can mean something: a table's rows)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() and abs(value) < EXACT_INT else value
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def same(a, b) -> bool:
    """Whether two config values mean the same (`canonical` forms equal; 4 and 4.0 alike, True and 1 not)."""
    return repr(canonical(a)) == repr(canonical(b))


@cache
def static_defaults(entry: str) -> dict | None:
    """The `defaults = {...}` literal of the class a registry entry ("module:Class") names, read from the module's
    source without importing it (methods import torch; the Snakefile parses without it). None when the module or a
    literal `defaults` cannot be found (then nothing is dropped). `tests/test_registries.py` checks that it equals
    the imported class's `defaults` for every registered method."""
    value = static_attribute(entry, "defaults")
    return value if isinstance(value, dict) else None


def static_attribute(entry: str, name: str):
    """The literal value of class attribute `name` assigned in the body of the class a registry entry
    ("module:Class") names, read from the module's source without importing it; None when the module, the
    assignment or a literal value cannot be found (an inherited value is not seen)."""
    module, cls_name = entry.split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return None
    tree = ast.parse(Path(spec.origin).read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            for stmt in node.body:
                target = (stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else
                          stmt.target if isinstance(stmt, ast.AnnAssign) else None)
                if isinstance(target, ast.Name) and target.id == name and stmt.value is not None:
                    try:
                        return ast.literal_eval(stmt.value)
                    except ValueError:
                        return None
    return None


def without_defaults(hp: dict, defaults: dict | None) -> dict:
    """`hp` less the entries whose value means the same as the default (`same`)."""
    if not defaults:
        return dict(hp)
    return {k: v for k, v in hp.items() if not (k in defaults and same(v, defaults[k]))}


def fraction_of(n: int, fraction: float) -> int:
    """⌊fraction · n⌋ in exact arithmetic on the decimal the config wrote (0.29 × 50,000 = 14,500, where the float
    product gives 14,499.999… and `int()` 14,499)."""
    return math.floor(Fraction(repr(float(fraction))) * int(n))


def ceil_fraction_of(n: int, fraction: float) -> int:
    """⌈fraction · n⌉ in the same exact arithmetic."""
    return math.ceil(Fraction(repr(float(fraction))) * int(n))
