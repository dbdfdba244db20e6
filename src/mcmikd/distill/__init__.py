"""Knowledge-distillation frameworks as plug-ins (mdistiller's shape).

`METHODS` maps each config name to "module:Class"; the names can be read without importing torch (the
Snakefile validates the config at parse time). A new method is one file in `methods/` plus one line here.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

METHODS: dict[str, str] = {
    "ce": "mcmikd.distill.methods.ce:CE",
    "kd": "mcmikd.distill.methods.kd:KD",
    "fitnet": "mcmikd.distill.methods.fitnet:FitNet",
    "at": "mcmikd.distill.methods.at:AT",
    "sp": "mcmikd.distill.methods.sp:SP",
    "cc": "mcmikd.distill.methods.cc:CC",
    "vid": "mcmikd.distill.methods.vid:VID",
    "rkd": "mcmikd.distill.methods.rkd:RKD",
    "pkt": "mcmikd.distill.methods.pkt:PKT",
    "ab": "mcmikd.distill.methods.ab:AB",
    "ft": "mcmikd.distill.methods.ft:FT",
    "fsp": "mcmikd.distill.methods.fsp:FSP",
    "nst": "mcmikd.distill.methods.nst:NST",
    "crd": "mcmikd.distill.methods.crd:CRD",
    "dkd": "mcmikd.distill.methods.dkd:DKD",
    "reviewkd": "mcmikd.distill.methods.reviewkd:ReviewKD",
    "dist": "mcmikd.distill.methods.dist:DIST",
}


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str):
    """The Distiller class registered under `name`."""
    if name not in METHODS:
        from mcmikd.errors import ConfigError

        raise ConfigError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


@functools.lru_cache(maxsize=None)
def method_source_files(name: str) -> tuple[str, ...]:
    """Files whose code decides what method `name` computes (Snakemake inputs, so an edit reruns its jobs).

    The method's own module plus the shared base class; a method whose module imports another method's
    module lists it in its `USES = [...]` module attribute (module names in `mcmikd.distill.methods`), read
    here without importing torch. A plug-in may live in any importable module.
    """
    files = [Path(__file__).parent / "base.py"]
    pending = [METHODS[name].split(":")[0]]
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        files.append(path)
        pending.extend(f"mcmikd.distill.methods.{used}" for used in _declared_uses(path))
    return tuple(str(p) for p in files)


def _module_file(module: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)  # locates the file without executing the module
    if spec is None or spec.origin is None:
        from mcmikd.errors import ConfigError

        raise ConfigError(f"the module '{module}' of a registered method cannot be found; check mcmikd.distill.METHODS")
    return Path(spec.origin)


def _declared_uses(path: Path) -> list[str]:
    import ast

    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "USES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []
