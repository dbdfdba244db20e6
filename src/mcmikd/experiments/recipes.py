"""Teacher recipes under one acceptance rule written before the run (issue 18, item 3): several fine-tuning recipes
of one objective (by default MCMI: the frozen-centroid recipe, per-epoch centroids, the paper's λ), each a set of
the objective's path hyper-parameters (`lambda`, `centroids`), fine-tuned from the same MLL teacher of every seed
beside the λ = 0 control, each with its KD student.

The rule, per recipe and teacher seed s (all of it must hold on every seed for the recipe to be accepted):
* accuracy: the recipe's teacher is within `accuracy_margin` points (default 1) of the MLL teacher of seed s
  (a seed that falls further is "over the cliff");
* CMI: at T = 1 and at each of `temperatures` (default: the KD temperature too), its training-set CMI exceeds
  that of the same seed's MLL teacher and the same seed's control by more than `sd_multiple` (default 2) times
  that reference's standard deviation over the teacher seeds (the seed-to-seed noise of the CMI it is compared
  with), so a lead inside the seed noise does not count.

Run it on held-out data (`dataset.validation`) so that the choice of recipe never sees the test set.
"""

from __future__ import annotations

import math

from mcmikd.errors import ConfigError
from mcmikd.experiments.base import PAIR, Figure
from mcmikd.experiments.lambda_sweep import LambdaSweep, teachers_by_variant_and_seed

CAPTION = (
    "Teacher recipes under the acceptance rule: for each recipe (x axis), left, each teacher seed's accuracy minus "
    "that of the MLL teacher of the same seed (points; the dashed line is the rule's −{{ snakemake.params.layout."
    "accuracy_margin }} point limit: a seed below it is over the cliff); right, each seed's training-set CMI lead over "
    "the larger of its MLL and control teachers' CMI at T = 1 (nats), with the rule's margin "
    "({{ snakemake.params.layout.sd_multiple }} seed standard deviations of that reference) as a dashed line.")


class Recipes(LambdaSweep):
    name = "recipes"
    title = "Teacher recipes"
    properties = {
        "pairs": {"type": "array", "items": PAIR, "minItems": 1,
                  "description": "teacher → KD student pairs; the recipes are fine-tuned from each pair's teacher"},
        "recipes": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "hp"],
            "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
                                    "description": "use letters, digits, '_', '.' and '-' only (the recipe's row and "
                                                   "label)"},
                           "hp": {"type": "object", "description": "the objective's path hyper-parameters"}}},
            "description": "the recipes, each {name, hp}: values of the fine-tuning objective's path keys (lambda, "
                           "centroids), fine-tuned from the same MLL teacher of every seed beside the control"},
        "objective": {"type": "string", "description": "the fine-tuning objective (default: the first compared one "
                                                       "that fine-tunes)"},
        "accuracy_margin": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 1.0,
                            "description": "points: on every seed, a recipe's teacher must be within this of the "
                                           "same seed's MLL teacher's accuracy (a seed further below is over the "
                                           "cliff)"},
        "sd_multiple": {"type": "number", "minimum": 0, "maximum": 100, "default": 2.0,
                        "description": "on every seed and rule temperature, a recipe's CMI must exceed that of the "
                                       "same seed's MLL and control teachers by more than this many of that "
                                       "reference's standard deviations over the teacher seeds"},
        "temperatures": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                         "description": "temperatures besides T = 1 the CMI rule is checked at (default: the KD "
                                        "temperature, methods.kd.temperature)"},
    }
    required = ("pairs", "recipes")
    caption = "Teacher recipes under the acceptance rule (validation accuracy %, training-set CMI in nats)"
    note = (
        "Teacher recipes: every recipe of the fine-tuning objective (its hyper-parameters in the row) fine-tuned from "
        "the same MLL teacher of every seed, judged by a rule written before the run — accuracy within the margin of "
        "the same seed's MLL teacher, and training-set CMI above the same seed's MLL and λ = 0 control teachers by "
        "more than the stated multiple of their seed standard deviation, at T = 1 and at the KD temperature, on every "
        "seed.")

    def key(self) -> str:
        return "recipe"

    def check(self, where: str) -> None:
        from mcmikd.registry import lookup
        from mcmikd.teachers import OBJECTIVES

        if not self.swept():
            raise ConfigError(f"config key '{where}.objective': no compared objective fine-tunes another's model")
        cls = lookup(OBJECTIVES, self.swept(), "teacher objective", key=f"{where}.objective")
        if cls.start_from is None:
            raise ConfigError(f"config key '{where}.objective': '{cls.name}' trains from scratch; name a fine-tuning "
                              f"objective")
        if self.objectives()[0] == self.swept() or not self.references():
            raise ConfigError(f"config key '{where}.objectives': list {cls.start_from} first and the control too")
        names = [r["name"] for r in self.body["recipes"]]
        if len(set(names)) != len(names):
            raise ConfigError(f"config key '{where}.recipes': recipe names {names} repeat; give each its own")
        for i, recipe in enumerate(self.body["recipes"]):
            extra = sorted(set(recipe["hp"]) - set(cls.path_keys))
            if extra:
                raise ConfigError(f"config key '{where}.recipes[{i}].hp': {extra} cannot vary between recipes; only "
                                  f"{list(cls.path_keys)} (they name the teacher's folder)")
            cls.check_hp(recipe["hp"], f"{where}.recipes[{i}].hp")

    def lambdas(self) -> list:
        return [r["name"] for r in self.body["recipes"]]

    def compared_teachers(self, pair: dict) -> list[tuple[str, dict]]:
        return ([(o, {}) for o in self.references()]
                + [(self.swept(), dict(r["hp"])) for r in self.body["recipes"]])

    def rule_temperatures(self) -> list[float]:
        given = self.body.get("temperatures")
        if given is None:
            given = [float((self.grid.config.get("methods", {}).get("kd") or {}).get("temperature", 4))]
        return sorted({1.0, *(float(t) for t in given)})

    def cmi_temperatures(self) -> list[float]:
        return self.rule_temperatures()

    def extra_layout(self) -> dict:
        layout = super().extra_layout()
        layout.update(recipes=[{"name": r["name"], "hp": dict(r["hp"])} for r in self.body["recipes"]],
                      accuracy_margin=float(self.body.get("accuracy_margin", 1.0)),
                      cliff=float(self.body.get("accuracy_margin", 1.0)),
                      sd_multiple=float(self.body.get("sd_multiple", 2.0)),
                      rule_temperatures=self.rule_temperatures())
        return layout

    def figures(self) -> list[Figure]:
        return [Figure(self.name, "mcmikd.experiments.recipes:figure", (self.runs_file(),), CAPTION, self.title,
                       "teacher recipes: acceptance rule", self.layout())]

    # ------------------------------------------------------------------ job time
    @staticmethod
    def acceptance(runs, layout: dict) -> list[dict]:
        """Per (pair, recipe, teacher seed): accuracy gap to the same seed's MLL teacher (points), CMI lead over
        the same seed's MLL and control teachers at each rule temperature (nats), the margins (sd_multiple × the
        reference's std over seeds), and whether each part of the rule holds."""
        import statistics

        teachers = runs[runs["role"] == "teacher"] if len(runs) else runs
        out = []
        for t_arch, s_arch in layout["pairs"]:
            refs = layout["variants"][t_arch]["references"]
            mine = teachers[teachers["teacher_arch"] == t_arch] if len(teachers) else teachers
            by = teachers_by_variant_and_seed(mine) if len(mine) else {}
            reference, others = refs[layout["references"][0]], [refs[o] for o in layout["references"]]

            def column(t):
                return "cmi_T" + (f"{t:g}")

            sd = {}
            for variant in others:
                for t in layout["rule_temperatures"]:
                    values = [float(r[column(t)]) for (v, _), r in by.items() if v == variant
                              and column(t) in r and not math.isnan(float(r[column(t)]))]
                    sd[(variant, t)] = statistics.stdev(values) if len(values) > 1 else math.nan
            for recipe, variant in zip(layout["recipes"], layout["variants"][t_arch]["sweep"]):
                for (v, seed), r in sorted(by.items(), key=lambda kv: kv[0][1]):
                    if v != variant or (reference, seed) not in by:
                        continue
                    row = {"pair": f"{t_arch} → {s_arch}", "recipe": recipe["name"], "variant": variant,
                           "teacher_seed": seed, "teacher_acc": float(r["model_acc"]),
                           "acc_vs_mll": float(r["model_acc"]) - float(by[(reference, seed)]["model_acc"])}
                    row["accuracy_ok"] = row["acc_vs_mll"] >= -layout["accuracy_margin"]
                    cmi_ok = True
                    for t in layout["rule_temperatures"]:
                        for other in others:
                            key = f"T{t:g}_vs_{'reference' if other == reference else 'control'}"
                            if (other, seed) not in by or column(t) not in r:
                                row[f"lead_{key}"], row[f"margin_{key}"] = math.nan, math.nan
                                cmi_ok = False
                                continue
                            lead = float(r[column(t)]) - float(by[(other, seed)][column(t)])
                            margin = layout["sd_multiple"] * sd[(other, t)]
                            row[f"lead_{key}"], row[f"margin_{key}"] = lead, margin
                            cmi_ok &= not math.isnan(margin) and lead > margin
                    row["cmi_ok"] = bool(cmi_ok)
                    row["accepted"] = bool(cmi_ok and row["accuracy_ok"])
                    out.append(row)
        return out

    @classmethod
    def table(cls, runs, layout, metric):
        import pandas as pd

        from mcmikd.aggregate import show

        rows = cls.rows(runs, layout, metric)
        seeds = cls.acceptance(runs, layout)
        display, numbers = [], []
        for r in rows:
            if r["lambda"] is None:
                continue
            mine = [s for s in seeds if s["recipe"] == r["lambda"] and s["pair"] == r["pair"]]
            n = len(mine)
            over = sum(not s["accuracy_ok"] for s in mine)
            cmi = sum(s["cmi_ok"] for s in mine)
            accepted = n > 0 and all(s["accepted"] for s in mine)
            recipe = next(x for x in layout["recipes"] if x["name"] == r["lambda"])
            hp = ", ".join(f"{'λ' if k == 'lambda' else k}={v}" for k, v in recipe["hp"].items())
            numbers.append({"pair": r["pair"], "recipe": r["lambda"], "variant": r["teacher_variant"], **recipe["hp"],
                            "teacher_acc": r["teacher_acc"], "teacher_acc_std": r.get("teacher_acc_std"),
                            "teacher_cmi": r["teacher_cmi"], "seeds": n, "over_the_cliff": over,
                            "cmi_rule_seeds": cmi, "accepted": accepted, "kd_student": r["mean"],
                            "kd_student_std": r["std"]})
            display.append({
                "Pair": r["pair"], "Recipe": f"{r['lambda']} ({hp})",
                "Teacher acc.": f"{r['teacher_acc']:.2f}" if not math.isnan(r["teacher_acc"]) else "–",
                "Acc. − MLL (per seed)": " / ".join(f"{s['acc_vs_mll']:+.2f}" for s in mine) or "–",
                f"Over the cliff (> {layout['accuracy_margin']:g} pt)": f"{over} of {n}",
                "CMI rule (seeds)": f"{cmi} of {n}",
                "Accepted": "yes" if accepted else "no",
                "KD student": show(r),
            })
        display = pd.DataFrame(display)
        temps = ", ".join(f"{t:g}" for t in layout["rule_temperatures"])
        display.attrs["footnotes"] = [
            f"Rule (written before the run): on every teacher seed, accuracy within {layout['accuracy_margin']:g} "
            f"point{'' if layout['accuracy_margin'] == 1 else 's'} of the same seed's MLL teacher, and "
            f"training-set CMI at T = {temps} above the same seed's MLL "
            f"and λ = 0 control teachers by more than {layout['sd_multiple']:g} × that reference's standard "
            f"deviation over the teacher seeds. Per-seed leads and margins: runs/{layout.get('name', 'recipes')}"
            f" and the CSV table."]
        frame = pd.DataFrame(numbers)
        if seeds:
            frame = pd.concat([frame.assign(part="recipe"), pd.DataFrame(seeds).assign(part="seed")],
                              ignore_index=True)
        return frame, display


def figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Per recipe: each seed's accuracy gap to its MLL teacher (left) and its CMI lead at T = 1 over the larger of
    its MLL and control teachers' CMI (right), with the rule's limits dashed."""
    import numpy as np
    from matplotlib.figure import Figure as MplFigure

    from mcmikd import plots

    with plots.theme():
        runs = plots.read_runs(inputs[0])
        seeds = Recipes.acceptance(runs, layout)
        names = [r["name"] for r in layout["recipes"]]
        fig = MplFigure(figsize=(10, 3.6), layout="constrained")
        ax_acc, ax_cmi = fig.subplots(1, 2)
        for i, name in enumerate(names):
            mine = [s for s in seeds if s["recipe"] == name]
            xs = i + np.linspace(-0.15, 0.15, max(1, len(mine)))[: len(mine)]
            ax_acc.scatter(xs, [s["acc_vs_mll"] for s in mine], c=["C2" if s["accuracy_ok"] else "C3" for s in mine],
                           s=40, zorder=3)
            leads = [min(s["lead_T1_vs_reference"], s.get("lead_T1_vs_control", math.inf)) for s in mine]
            margins = [max(s["margin_T1_vs_reference"], s.get("margin_T1_vs_control", -math.inf)) for s in mine]
            ax_cmi.scatter(xs, leads, c=["C2" if s["cmi_ok"] else "C3" for s in mine], s=40, zorder=3)
            if margins and not all(math.isnan(m) for m in margins):
                ax_cmi.hlines(np.nanmax(margins), i - 0.3, i + 0.3, colors="0.3", linestyles="--")
        ax_acc.axhline(-layout["accuracy_margin"], color="0.3", ls="--")
        ax_acc.axhline(0, color="0.7", lw=0.8)
        ax_cmi.axhline(0, color="0.7", lw=0.8)
        for ax, ylabel in ((ax_acc, "teacher acc. − same-seed MLL (points)"),
                           (ax_cmi, "CMI lead at T = 1 over MLL and control (nats)")):
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=20, ha="right")
            ax.set(ylabel=ylabel, xlabel="recipe")
        ax_acc.set_title("accuracy (green: within the margin)")
        ax_cmi.set_title("CMI (green: above the margin at every rule T)")
        if not seeds:
            plots.note(ax_acc, "no finished teacher")
        plots.save(fig, png, pdf)
