"""The paper's numbers beside ours (issue: "a reviewer cannot see how close a run is").

A config's `reference:` block (config/cifar100.yaml, config/cifar10.yaml) holds, per experiment, published numbers,
each with its source, matched to rows of that experiment's long table (`tables/<experiment>.csv`) by column values;
plus `notes` (headline claims that are not one cell, e.g. "gains up to 3.32 %") and `differences` (run settings
that differ from the paper's, e.g. retrained instead of released MLL teachers). Tables of such a config gain the
columns `paper` and `ours_minus_paper` in their CSV and a "paper beside ours" table under the Markdown/LaTeX one.
"""

from __future__ import annotations

import math

ENTRY_KEYS = ("value", "source")  # required in every entry
META_KEYS = (*ENTRY_KEYS, "trials", "std", "metric")  # what an entry says about its number; the rest is the match


def matches(row: dict, match: dict) -> bool:
    """Whether a long-table row has every column value of `match` (numbers compared as floats)."""
    for key, want in match.items():
        have = row.get(key)
        if isinstance(want, (int, float)) and not isinstance(want, bool):
            try:
                if not math.isclose(float(have), float(want), rel_tol=0, abs_tol=1e-9):
                    return False
            except (TypeError, ValueError):
                return False
        elif str(have) != str(want):
            return False
    return True


def compare(numbers, entries: list[dict]):
    """(numbers with `paper` and `ours_minus_paper` columns, rows of the comparison table) for one experiment.

    `numbers`: the experiment's long table (pandas, one row per cell, `mean` = our value in %); `entries`: the
    config's reference entries, each {value, source, <column>: <value>, ...}. An entry that matches no row is
    listed with "not run" (the grid does not hold that cell)."""
    numbers = numbers.copy()
    numbers["paper"] = math.nan
    numbers["ours_minus_paper"] = math.nan
    rows = []
    for entry in entries:
        match = {k: v for k, v in entry.items() if k not in META_KEYS}
        hit = [i for i, row in numbers.iterrows() if matches(row.to_dict(), match)]
        what = ", ".join(f"{k} {v}" for k, v in match.items())
        if not hit:
            rows.append({"Cell": what, "Paper": f"{entry['value']:.2f}", "Ours": "not run", "Ours − paper": "–",
                         "Source": entry["source"]})
            continue
        i = hit[0]
        ours = float(numbers.at[i, "mean"])
        numbers.at[i, "paper"] = entry["value"]
        numbers.at[i, "ours_minus_paper"] = ours - entry["value"]
        rows.append({"Cell": what, "Paper": f"{entry['value']:.2f}",
                     "Ours": "–" if math.isnan(ours) else f"{ours:.2f}",
                     "Ours − paper": "–" if math.isnan(ours) else f"{ours - entry['value']:+.2f}",
                     "Source": entry["source"]})
    return numbers, rows


def check(config: dict) -> None:
    """One-line ConfigError for a reference block that names no experiment of the config or lacks value/source."""
    from mcmikd.errors import ConfigError

    block = config.get("reference") or {}
    for exp, body in (block.get("experiments") or {}).items():
        if exp not in config["experiments"]:
            raise ConfigError(f"config key 'reference.experiments.{exp}': the config has no experiment '{exp}'; "
                              f"use one of: {', '.join(config['experiments'])}")
        for i, entry in enumerate(body):
            missing = [k for k in ENTRY_KEYS if k not in entry]
            if missing or not set(entry) - set(META_KEYS):
                raise ConfigError(f"config key 'reference.experiments.{exp}[{i}]': needs value, source and at least "
                                  f"one column to match (e.g. row: kd, teacher_objective: mll)")
