"""Knowledge-distillation frameworks as plug-ins (mdistiller's shape).

`METHODS` maps each config name to "module:Class"; the names can be read without importing torch (the
Snakefile validates the config at parse time). A new method is one file in `methods/` plus one line here.
"""

from __future__ import annotations

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


def method_source_files(name: str) -> list[str]:
    """Files whose code decides what method `name` computes (Snakemake inputs, so an edit reruns its jobs).

    The method's own module plus the shared base class; a method whose module imports another method's
    module lists it in its `USES = [...]` module attribute, read here without importing torch.
    """
    here = Path(__file__).parent
    files = [here / "base.py"]
    pending = [METHODS[name].split(":")[0]]
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = here / "methods" / (module.rsplit(".", 1)[1] + ".py")
        files.append(path)
        pending.extend(_declared_uses(path))
    return [str(p) for p in files]


def _declared_uses(path: Path) -> list[str]:
    import ast

    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "USES" for t in node.targets):
            return [f"mcmikd.distill.methods.{name}" for name in ast.literal_eval(node.value)]
    return []
