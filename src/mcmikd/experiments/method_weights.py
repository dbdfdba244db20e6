"""Method-weight selection: each KD framework's own loss weight scaled by a few multiples, students distilled from
the reference (MLL) teacher only, beside the student trained without a teacher; meant for a run on held-out
training data (`dataset.validation`), never the test set.

Each framework's weight is the hyper-parameter its class declares as `weight_key` (`mcmikd.distill.weights`: β of
RepDistiller's γ·CE + α·KL + β·L_method for the feature methods, DKD's NCKD β, ReviewKD's HCL weight, KD's α; CE
has none). Setting `w<m>` runs a method at m × its configured weight (`methods.<name>`, else the class default, else
the official per-pair value); m = 1 is setting `full`, the method's ordinary run. The table gives mean accuracy per
method × multiple with the best marked; the rule `choose_method_weights` turns it into
`tables/method_weights_choice.{yaml,md}` (per method, the multiple with the highest mean accuracy over pairs, ties to
the configured weight, and the resulting absolute values; in the report), as `mcmikd choose-weights` does by hand.
"""

from __future__ import annotations

from mcmikd.errors import ConfigError
from mcmikd.experiments.base import NAMES, PAIR, Experiment

BEST = " ★"


class MethodWeights(Experiment):
    name = "method_weights"
    title = "Method weights"
    properties = {
        "pairs": {"type": "array", "items": PAIR, "minItems": 1,
                  "description": "teacher → student pairs; students from the reference (MLL) teacher only"},
        "methods": {**NAMES, "description": "frameworks whose own weight (weight_key of the class: β; KD's α; DKD's "
                                            "NCKD β; ReviewKD's HCL weight) is scaled; the no-teacher student is "
                                            "trained besides"},
        "multiples": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1,
                      "uniqueItems": True,
                      "description": "multiples of each method's configured weight (1 = its ordinary run); run it "
                                     "with dataset.validation on; the rule choose_method_weights writes the choice "
                                     "(tables/method_weights_choice.yaml, ties → × 1)"},
    }
    required = ("pairs", "methods", "multiples")
    setting_prefix = "w"
    ce_baseline = True
    caption = ("Method weights: student accuracy (%) at multiples of each framework's own loss weight "
               "(reference teacher)")
    note = (
        "Method-weight selection: for each framework, the student distilled from the reference (first) teacher with "
        "the framework's own loss weight (β, or α for KD, DKD's NCKD β, ReviewKD's HCL weight) at each multiple of "
        "its configured value (RepDistiller's weights unless the config sets others), mean ± std over seeds; ★ marks "
        "the best multiple of each framework (ties: the configured weight). The student trained without a teacher is "
        "the floor. Run it with ``dataset.validation`` on, so that the weights are chosen on held-out training data, "
        "never on the test set; the rule ``choose_method_weights`` writes the choice (Choices).")

    # ------------------------------------------------------------------ config (parse time)
    def objectives(self) -> list[str]:
        return super().objectives()[:1]  # the reference (MLL) teacher only

    def check(self, where: str) -> None:
        from mcmikd.distill.weights import method_weight

        for i, method in enumerate(self.body["methods"]):
            if method == "ce":
                continue
            for pair in self.pairs():
                try:
                    key, _ = method_weight(method, self.grid.method_hp(method), pair["teacher"], pair["student"])
                except ConfigError as err:
                    raise ConfigError(f"config key '{where}.methods[{i}]': {err}") from None
                if key is None:
                    raise ConfigError(f"config key '{where}.methods[{i}]': method '{method}' declares no weight to "
                                      f"scale (weight_key); remove it")

    def multiples(self) -> list[float]:
        return [float(m) for m in self.body["multiples"]]

    def settings(self) -> list[str]:
        from mcmikd.config import fmt_num

        return ["full" if m == 1.0 else f"w{fmt_num(m)}" for m in self.multiples()]

    def parse_setting(self, value: str) -> dict:
        return {"weight_multiple": float(value)}

    def setting_params(self, parsed: dict) -> tuple[dict, dict]:
        return dict(parsed), {}  # recorded in the result; the weight itself is set per run (run_hp)

    def run_hp(self, run, parsed: dict) -> dict:
        from mcmikd.distill.weights import method_weight

        key, value = method_weight(run.method, self.grid.method_hp(run.method), run.t_arch, run.student)
        return {} if key is None else {key: float(f"{value * float(parsed['weight_multiple']):.12g}")}

    def extra_layout(self) -> dict:
        from mcmikd.config import fmt_num
        from mcmikd.distill.weights import method_weight

        weights = {}
        for pair in self.pairs():
            label = f"{pair['teacher']} → {pair['student']}"
            weights[label] = {m: list(method_weight(m, self.grid.method_hp(m), pair["teacher"], pair["student"]))
                              for m in self.methods() if m != "ce"}
        settings = {("full" if m == 1.0 else f"w{fmt_num(m)}"): m for m in self.multiples()}
        return {"multiples": self.multiples(), "settings": settings, "weights": weights}

    # ------------------------------------------------------------------ job time
    @classmethod
    def table(cls, runs, layout, metric):
        """Long rows {pair, method, multiple, weight_key, weight (absolute), mean, std, n, ..., best[, not_working]}
        and the display: one row per (pair, method), one column per multiple, the best multiple marked ★."""
        import math

        import pandas as pd

        from mcmikd.aggregate import (
            NOT_WORKING,
            cell,
            method_label,
            not_working_footnote,
            not_working_verdict,
            pair_label,
            show,
        )

        students = runs[runs["role"] == "student"] if len(runs) else runs
        reference = layout["objectives"][0]
        margin = layout.get("not_working_margin")
        by_setting = layout["settings"]
        multiples = layout["multiples"]
        long_rows, display = [], []
        for t_arch, s_arch in layout["pairs"]:
            label = pair_label(t_arch, s_arch)
            at = students[students["student"] == s_arch] if len(students) else students
            ce_runs = at[at["method"] == "ce"] if len(at) else at
            # one setting's CE students (every multiple trains the same CE student; take the first setting's)
            ce_runs = ce_runs[ce_runs["setting"].astype(str) == next(iter(by_setting))] if len(ce_runs) else ce_runs
            ce = cell(ce_runs, metric) if len(ce_runs) else None
            if ce is not None:
                display.append({"Pair": label, "Method": method_label("ce"), "Weight": "–",
                                **{f"× {m:g}": (show(ce) if i == 0 else "") for i, m in enumerate(multiples)}})
                long_rows.append({"pair": label, "method": "ce", "multiple": math.nan, "weight_key": None,
                                  "weight": math.nan, **ce, "best": False})
            for method in [m for m in layout["methods"] if m != "ce"]:
                key, base = layout["weights"][label][method]
                sel = at[(at["method"] == method) & (at["teacher_arch"] == t_arch)
                         & (at["teacher_objective"] == reference)] if len(at) else at
                cells = {}
                for m in multiples:
                    setting = next(s for s, v in by_setting.items() if v == m)
                    cells[m] = cell(sel[sel["setting"].astype(str) == setting], metric) if len(sel) else \
                        {"mean": math.nan, "std": math.nan, "n": 0, "skipped": 0, "reason": None, "failure": None}
                best = choose_multiple({m: c["mean"] for m, c in cells.items()})
                symbol = {"beta": "β", "alpha": "α"}.get(key, key)
                row = {"Pair": label, "Method": method_label(method), "Weight": f"{symbol} = {base:g} × m"}
                for m, c in cells.items():
                    broken = not_working_verdict(c, ce, margin)
                    row[f"× {m:g}"] = (show(c) + (BEST if m == best else "") + (NOT_WORKING if broken else "")
                                       + (f" ({symbol} = {base * m:g})" if c["n"] else ""))
                    extra = {"not_working": broken} if margin is not None else {}
                    long_rows.append({"pair": label, "method": method, "multiple": m, "weight_key": key,
                                      "weight": float(f"{base * m:.12g}"), **c, "best": m == best, **extra})
                display.append(row)
        frame = pd.DataFrame(display)
        notes = [f"{BEST.strip()} the multiple with the highest mean accuracy of each framework (ties: the configured "
                 f"weight, × 1, else the multiple nearest to 1)."]
        notes += not_working_footnote(layout, long_rows, "the student trained without a teacher")
        frame.attrs["footnotes"] = notes
        return pd.DataFrame(long_rows), frame


def choose_multiple(means: dict[float, float]) -> float | None:
    """The multiple with the highest mean accuracy; ties (equal means) go to 1 (the configured/RepDistiller weight)
    if it is among them, else to the tied multiple nearest to 1 on a log scale (then the smaller). NaN means
    (no finished run) are ignored; None when nothing was measured."""
    import math

    measured = {m: v for m, v in means.items() if v is not None and not math.isnan(v)}
    if not measured:
        return None
    top = max(measured.values())
    tied = [m for m, v in measured.items() if v == top]
    return min(tied, key=lambda m: (abs(math.log(m)), m))


def choose(numbers) -> dict:
    """Per framework, from the table's long rows (`MethodWeights.table`'s CSV): the multiple with the highest mean
    accuracy averaged over pairs (`choose_multiple`: ties to × 1, RepDistiller's/the configured weight), its weight
    key and the resulting absolute value per pair, and the mean accuracy at every multiple. {method: {...}} in the
    table's method order; a method without any finished run is left out."""
    import math

    rows = numbers[numbers["method"] != "ce"]
    out = {}
    for method, frame in rows.groupby("method", sort=False):
        means = {float(m): float(f["mean"].mean()) for m, f in frame.groupby("multiple")}
        best = choose_multiple(means)
        if best is None:
            continue
        at_best = frame[frame["multiple"] == best]
        values = {p: float(w) for p, w in zip(at_best["pair"], at_best["weight"])}
        out[method] = {"key": str(frame["weight_key"].iloc[0]), "multiple": best,
                       "value": next(iter(values.values())) if len(set(values.values())) == 1 else values,
                       "mean_acc": {f"{m:g}": (None if math.isnan(v) else round(v, 4)) for m, v in means.items()}}
    return out


def write_choice(table_csv: str, out_yaml: str, doc: str | None = None, command: str = "") -> dict:
    """Write `method_weights.yaml` (the `choose` result) and, with `doc`, a Markdown page: the procedure, the
    table (accuracy per framework × multiple, best ★) and the choice. Reads the table's CSV and its Markdown
    sibling (`.md`)."""
    from pathlib import Path

    import pandas as pd
    import yaml

    from mcmikd.io import write_text

    numbers = pd.read_csv(table_csv)
    chosen = choose(numbers)
    write_text(out_yaml, yaml.safe_dump({"source": str(table_csv), "rule": "highest mean validation accuracy over "
                                         "pairs and seeds; ties -> x1 (RepDistiller's weight)", "methods": chosen},
                                        sort_keys=False, allow_unicode=True))
    if doc:
        md = Path(table_csv).with_suffix(".md")
        evaluated = ("validation" if "evaluated_on" in numbers and (numbers["evaluated_on"] == "validation").all()
                     else "TEST (dataset.validation was off: do not use this choice)")
        lines = ["# Method weights chosen on held-out data (digits)", "",
                 "Generated by `workflow/scripts/choose_method_weights.py` from "
                 f"`{table_csv}` (evaluated on: {evaluated}).", "",
                 "Procedure: each framework's own loss weight (`weight_key` of its class, "
                 "`mcmikd.distill.weights`: β of "
                 "γ·CE + α·KL + β·L_method; KD: α, the KL weight; DKD: the NCKD β; ReviewKD: the HCL weight) is "
                 "multiplied by each multiple of the experiment kind `method_weights`; every student is distilled "
                 "from the MLL teacher and evaluated on a seeded, stratified 20 % of the training split held out "
                 "from training (`dataset.validation`); the test set is not part of the run. The chosen multiple is "
                 "the one with the highest mean validation accuracy (over pairs and seeds); ties go to × 1, "
                 "RepDistiller's weight.", ""]
        if command:
            lines += ["Commands:", "", "```", command, "```", ""]
        lines += ["## Choice", "", "| Framework | key | multiple | value | validation acc. at each multiple |",
                  "|---|---|---|---|---|"]
        for method, c in chosen.items():
            accs = ", ".join(f"×{m}: {'–' if a is None else f'{a:.2f}'}" for m, a in c["mean_acc"].items())
            lines.append(f"| {method} | {c['key']} | × {c['multiple']:g} | {c['value']} | {accs} |")
        lines += ["", "## Table", "", md.read_text() if md.exists() else "(table Markdown missing)"]
        write_text(doc, "\n".join(lines) + "\n")
    return chosen
