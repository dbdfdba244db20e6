"""Knowledge-distillation frameworks as plug-ins (mdistiller's shape).

`METHODS` maps each config name to "module:Class"; the names can be read without importing torch (the
Snakefile validates the config at parse time). A new method is one file in `methods/` plus one line here.
"""

from __future__ import annotations

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
    "hsakd": "mcmikd.distill.methods.hsakd:HSAKD",
}


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str):
    """The Distiller class registered under `name`."""
    from mcmikd.registry import lookup

    return lookup(METHODS, name, "method")


def method_source_files(name: str) -> tuple[str, ...]:
    """Files whose code decides what method `name` computes (Snakemake inputs, so an edit reruns its jobs).

    The static import closure of the method's module (`mcmikd.codedeps`: its imports, also lazy ones, and
    theirs; read without importing torch), relative to the working directory. A plug-in may live in any
    importable module.
    """
    from mcmikd.codedeps import code_inputs, registry_module

    return tuple(code_inputs(registry_module(METHODS[name]), base=Path(__file__).parents[2]))
