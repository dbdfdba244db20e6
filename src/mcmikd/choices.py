"""The two choices the workflow makes from its own tables, as jobs of the DAG (rules/choices.smk) and so in the
Snakemake report (category "Choices"):

* the **method weights**, from a method-weight selection table (`tables/<method-weight kind>.csv`): per KD
  framework, the multiple of its own loss weight with the highest mean accuracy, ties to × 1 — the rule of
  `mcmikd.experiments.method_weights.choose`, called here unchanged (`mcmikd choose-weights`, the command run by
  hand, calls it too, through `write_choice`);
* the **MCMI λ**, from a λ sweep's runs table (`runs/<λ-sweep kind>.csv`): the recipe rule of
  `mcmikd.experiments.lambda_sweep.choose` (a λ whose teacher's CMI is raised on every teacher seed, with mean
  accuracy within the sweep's `cliff` of the reference teacher's; safe ones first, then the largest CMI gain over the
  control) over this run's rows (`LambdaSweep.rows`), each teacher → student pair counted as one "run" of the rule,
  so a λ has to pass for every pair (`mcmikd recipe` applies the same rule over several runs of the sweep, e.g. on
  two machines).

Both say which data the choice was made on: a run with `dataset.validation` evaluates on a held-out part of the
training split; without it every accuracy is a TEST accuracy, and a choice made on it must not be read as a
held-out choice (`mcmikd.experiments.method_weights` and `mcmikd.experiments.lambda_sweep` say the same). Nothing
here imports torch.
"""

from __future__ import annotations

import math
from typing import Any

WEIGHTS_RULE = ("per framework, the multiple of its own loss weight with the highest mean accuracy over pairs and "
                "seeds; ties -> x1 (the configured weight, RepDistiller's unless the config sets another)")
LAMBDA_RULE = ("the recipe rule (mcmikd.experiments.lambda_sweep.choose): a λ passes when its teacher's training-set "
               "CMI (T = 1) is above that of every teacher it must beat on every teacher seed and its mean accuracy "
               "is within the accuracy margin of the reference teacher's; a λ must pass for every teacher → student "
               "pair; among those the ones no seed drives over the cliff first, then the largest mean CMI gain over "
               "the control")


def split_words(evaluated_on: str) -> str:
    """What an evaluation split means, in words, for the choice files."""
    if evaluated_on == "validation":
        return ("validation data: a seeded, stratified part of the training split held out from training "
                "(dataset.validation); the test set was not used")
    return ("TEST data (dataset.validation was off): the choice was made on the test set, so a result on that test "
            "set with this choice is not a held-out result; choose on held-out data before using it elsewhere")


def plain(value: Any) -> Any:
    """`value` with numpy scalars as Python numbers and NaN as None (for YAML), recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # a numpy scalar (numpy's float64 is a float, but YAML's safe dumper refuses it)
    if isinstance(value, float):
        return None if math.isnan(value) else float(value)
    return value


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


# ----------------------------------------------------------------------------------------------- method weights
def weights_choice(numbers, evaluated_on: str = "test") -> dict:
    """The method-weight choice of a method-weight table's long rows (its CSV): {"evaluated_on", "rule",
    "methods": `mcmikd.experiments.method_weights.choose(numbers)`}. `evaluated_on` is "validation" when the run
    had `dataset.validation` on, else "test"; a table whose rows all say `evaluated_on: validation` counts as
    validation whatever the argument says."""
    from mcmikd.experiments.method_weights import choose

    if "evaluated_on" in numbers and len(numbers) and (numbers["evaluated_on"] == "validation").all():
        evaluated_on = "validation"
    return {"evaluated_on": evaluated_on, "rule": WEIGHTS_RULE, "methods": choose(numbers)}


def weights_markdown(choice: dict, source: str, metric: str) -> str:
    """The method-weight choice as Markdown: what was chosen, on which data, by which rule."""
    lines = ["# Method weights chosen by the workflow", "",
             f"From `{source}` ({metric}-epoch accuracy), evaluated on {split_words(choice['evaluated_on'])}.", "",
             f"Rule: {choice['rule']} (`mcmikd.experiments.method_weights.choose`).", ""]
    if not choice["methods"]:
        return "\n".join(lines + ["No framework has a finished student: nothing was chosen.", ""])
    lines += ["| Framework | weight key | multiple | value | mean accuracy at each multiple |", "|---|---|---|---|---|"]
    for method, c in choice["methods"].items():
        accs = ", ".join(f"× {m}: {_num(a, '.2f')}" for m, a in c["mean_acc"].items())
        lines.append(f"| {method} | {c['key']} | × {c['multiple']:g} | {c['value']} | {accs} |")
    return "\n".join(lines + [""])


def write_weights_choice(table_csv: str, yaml_out: str, md_out: str, evaluated_on: str, metric: str) -> dict:
    """Read a method-weight table's CSV, write the choice (`weights_choice`) to `yaml_out` (keys source, rule,
    evaluated_on, methods: the keys `mcmikd choose-weights` writes, plus evaluated_on) and `md_out`; returns it."""
    import pandas as pd
    import yaml

    from mcmikd.io import write_text

    choice = weights_choice(pd.read_csv(table_csv), evaluated_on)
    write_text(yaml_out, yaml.safe_dump(plain({"source": str(table_csv), "rule": choice["rule"],
                                               "evaluated_on": choice["evaluated_on"], "metric": metric,
                                               "methods": choice["methods"]}), sort_keys=False, allow_unicode=True))
    write_text(md_out, weights_markdown(choice, str(table_csv), metric))
    return choice


# ----------------------------------------------------------------------------------------------- the λ sweep
def lambda_rows(runs, layout: dict, metric: str) -> dict[str, list[dict]]:
    """`LambdaSweep.rows` of a λ sweep's runs frame, grouped by teacher → student pair: {pair: rows}, each pair's
    rows with its own reference and control first (what `choose` takes as one run)."""
    from mcmikd.experiments.lambda_sweep import LambdaSweep

    by_pair: dict[str, list[dict]] = {}
    for row in LambdaSweep.rows(runs, layout, metric):
        by_pair.setdefault(row["pair"], []).append(row)
    return by_pair


def lambda_choice(by_pair: dict[str, list[dict]], accuracy_margin: float, evaluated_on: str = "test") -> dict:
    """The recipe rule (`mcmikd.experiments.lambda_sweep.choose`) over the pairs of one run: its result (rows,
    passing, safe, chosen) plus evaluated_on, accuracy_margin and the rule in words."""
    from mcmikd.experiments.lambda_sweep import choose

    result = choose(by_pair, accuracy_margin) if by_pair else {"rows": [], "passing": [], "safe": [], "chosen": None}
    return {**result, "evaluated_on": evaluated_on, "accuracy_margin": float(accuracy_margin), "rule": LAMBDA_RULE}


def lambda_markdown(choice: dict, source: str, symbol: str = "λ") -> str:
    """The λ choice as Markdown: the per-pair check of every swept value, what passed, what was chosen, on which
    data."""
    shown = lambda values: ", ".join(f"{v:g}" for v in values) or "none"  # noqa: E731
    chosen = choice["chosen"]
    lines = ["# λ chosen by the workflow", "",
             f"From `{source}`: teacher accuracy on {split_words(choice['evaluated_on'])}; CMI on the training set "
             f"(T = 1).", "",
             f"Rule: {choice['rule']}; accuracy margin: {choice['accuracy_margin']:g} "
             f"point{'' if choice['accuracy_margin'] == 1 else 's'} (experiments.lambda_sweep.cliff).", "",
             f"**Chosen: {'none (no value passes for every pair)' if chosen is None else f'{symbol} = {chosen:g}'}**; "
             f"passing for every pair: {shown(choice['passing'])}; of those, no seed over the cliff: "
             f"{shown(choice['safe'])}.", ""]
    if choice["rows"]:
        lines += [f"| Pair | {symbol} | passes | CMI raised (seeds) | over the cliff (seeds) | teacher acc. − "
                  f"reference (points) | CMI gain over the control (nats) |", "|---|---|---|---|---|---|---|"]
        for r in choice["rows"]:
            lines.append(f"| {r['pair']} | {r['lambda']:g} | {'yes' if r['passes'] else 'no'} | {r['cmi_raised']} | "
                         f"{r['over_cliff']} | {_num(r['acc_vs_reference'], '+.2f')} | "
                         f"{_num(r['cmi_gain'], '+.4f')} |")
        lines.append("")
    lines += ["One run of the sweep: the rule applied over several runs of the same config (e.g. two machines) is "
              "`mcmikd recipe RUN [RUN ...] --config CONFIG`.", ""]
    return "\n".join(lines)


def write_lambda_choice(runs_csv: str, layout: dict, metric: str, yaml_out: str, md_out: str) -> dict:
    """Read a λ sweep's runs table, apply the recipe rule over its pairs with the sweep's cliff as the accuracy
    margin (`lambda_choice`), write the choice to `yaml_out` and `md_out`; returns it."""
    import yaml

    from mcmikd.aggregate import read_runs
    from mcmikd.io import write_text

    evaluated_on = layout.get("evaluated_on", "test")
    choice = lambda_choice(lambda_rows(read_runs(runs_csv), layout, metric), float(layout.get("cliff", 1.0)),
                           evaluated_on)
    symbol = {"lambda": "λ"}.get(layout.get("key", "lambda"), layout.get("key", "λ"))
    record = {"source": str(runs_csv), "rule": choice["rule"], "evaluated_on": evaluated_on,
              "objective": layout.get("swept"), "key": layout.get("key"),
              "accuracy_margin": choice["accuracy_margin"], "chosen": choice["chosen"],
              "passing": choice["passing"], "safe": choice["safe"], "rows": choice["rows"]}
    write_text(yaml_out, yaml.safe_dump(plain(record), sort_keys=False, allow_unicode=True))
    write_text(md_out, lambda_markdown(choice, str(runs_csv), symbol))
    return choice
