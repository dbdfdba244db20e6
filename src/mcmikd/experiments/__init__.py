"""Experiment kinds as plug-ins (torchdistill's "experiments as data", mdistiller's registry shape).

`EXPERIMENTS` maps each config key under `experiments:` to "module:Class". An experiment module imports pandas,
matplotlib and torch only inside the functions that build its table and figures, so the Snakefile reads its
config block (a JSON-schema fragment), its student settings and its figures at parse time. A new kind is one
file in this folder plus one line here (see docs/extending.md, "Adding an experiment kind").
"""

from __future__ import annotations

EXPERIMENTS: dict[str, str] = {
    "main": "mcmikd.experiments.main:Main",
    "fewshot": "mcmikd.experiments.fewshot:FewShot",
    "zeroshot": "mcmikd.experiments.zeroshot:ZeroShot",
    "temperature": "mcmikd.experiments.temperature:Temperature",
    "cam": "mcmikd.experiments.cam:Cam",
    "lambda_sweep": "mcmikd.experiments.lambda_sweep:LambdaSweep",
    "recipes": "mcmikd.experiments.recipes:Recipes",
    "method_weights": "mcmikd.experiments.method_weights:MethodWeights",
    "early_stopped": "mcmikd.experiments.early_stopped:EarlyStopped",
}


def get_experiment(name: str):
    """The `Experiment` class registered under `name`; ConfigError (one line) for an unknown name."""
    from mcmikd.registry import lookup

    return lookup(EXPERIMENTS, name, "experiment kind", key=f"experiments.{name}")
