"""Few-shot distillation (paper §4.2, Table 4): the student sees only a fraction of the training set while its
teacher saw all of it; accuracy against the fraction, one column per teacher objective."""

from __future__ import annotations

from mcmikd.errors import ConfigError
from mcmikd.experiments.base import NAMES, PAIR, Experiment, Figure

CAPTION = (
    "Few-shot distillation: top-1 test accuracy (%, {{ snakemake.params.metric }} epoch) of students that see only "
    "the given fraction of the training set (x axis, log scale), distilled from each compared teacher (one line per "
    "teacher objective); one panel per distillation method. Lines are the mean over seeds, bands ± one standard "
    "deviation. A grey dashed line, when present, is the student trained with cross-entropy alone. A teacher helps "
    "when its curve lies above the reference (first) teacher's, most of all at the smallest fractions. A panel note "
    "marks students that were skipped because their fine-tuned teacher collapsed.")


class FewShot(Experiment):
    name = "fewshot"
    title = "Few-shot"
    properties = {
        "pair": {**PAIR, "description": "the teacher → student pair, {teacher, student}"},
        "methods": {**NAMES, "description": "distillation methods of the few-shot students"},
        "fractions": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                      "minItems": 1, "uniqueItems": True,
                      "description": "fractions f of the training set the students see (each its own setting, "
                                     "`frac<f>`); the teacher saw all of it"},
        "subset": {"enum": ["first_n", "stratified"], "default": "first_n",
                   "description": "first_n: the first ⌊f·N⌋ images in file order, as the official code; "
                                  "stratified: ⌊f·N_c⌋ per class, drawn with the run's seed"},
        "epoch_length": {"enum": ["full", "subset"], "default": "full",
                         "description": "full: an epoch stays N samples, as the official code (each subset image "
                                        "is revisited ≈ 1/f times); subset: an epoch is one pass over the subset"},
        "method_hp": {"type": "object", "additionalProperties": {"type": "object"}, "default": {},
                      "description": "per-method hyper-parameter overrides of the few-shot students, e.g. "
                                     "{crd: {bank: full}} (the official few-shot CRD's memory bank spans the whole "
                                     "training set; config/cifar100.yaml sets it, with teacher_checkpoint: best, "
                                     "for the official few-shot run)"},
    }
    required = ("pair", "methods", "fractions")
    setting_prefix = "frac"
    gains = "top-1"
    caption = "Few-shot: student accuracy (%) when it sees only a fraction of the training set"
    note = (
        "Few-shot students: the student sees only a fraction of the training set (the first ⌊f·N⌋ images in file "
        "order, as in the official code, or a seeded stratified subset), while the teacher was trained on all of it; "
        "an epoch still has N samples, so each subset image is revisited ≈ 1/f times. Accuracy of students distilled "
        "from each compared teacher, mean ± std over seeds, and the gain Δ over the reference (first) teacher.")

    def check(self, where: str) -> None:
        for method in self.body.get("method_hp") or {}:
            if method not in self.methods():
                raise ConfigError(f"config key '{where}.method_hp.{method}': '{method}' is not one of this "
                                  f"experiment's methods {self.methods()}; remove it or add the method")

    def method_overrides(self, method: str) -> dict:
        return dict((self.body.get("method_hp") or {}).get(method) or {})

    def extra_layout(self) -> dict:
        layout = {"fractions": [float(f) for f in self.body["fractions"]]}
        if self.body.get("method_hp"):
            layout["method_hp"] = self.body["method_hp"]
        return layout

    def parse_setting(self, value: str) -> dict:
        return {"fraction": float(value)}

    def settings(self) -> list[str]:
        from mcmikd.config import fmt_num

        return [f"frac{fmt_num(f)}" for f in self.body["fractions"]]

    def setting_params(self, parsed: dict) -> tuple[dict, dict]:
        return {**parsed, "subset": self.body.get("subset", "first_n"),
                "epoch_length": self.body.get("epoch_length", "full")}, {}

    def figures(self) -> list[Figure]:
        return [Figure("fewshot", "mcmikd.experiments.fewshot:figure", (self.runs_file(),), CAPTION, self.title,
                       "accuracy vs fraction", self.layout())]

    @classmethod
    def table(cls, runs, layout, metric):
        import pandas as pd

        from mcmikd.aggregate import cell, cmi_not_raised, compare_cells, not_raised_footnote, not_working_footnote

        students = runs[runs["role"] == "student"]
        flagged = cmi_not_raised(runs, layout)
        long_rows, rows = [], []
        for fraction in sorted(layout["fractions"]):
            row = {"Fraction": f"{100 * fraction:g} %"}
            at = students[(students["fraction"] - fraction).abs() < 1e-12]
            ce = at[at["method"] == "ce"]
            floor = cell(ce, metric) if len(ce) else None  # a CE student at this fraction, when the block runs one
            for method in layout["methods"]:
                cells, numbers = compare_cells(at[at["method"] == method], method, layout, metric, flagged=flagged,
                                               floor=floor)
                row.update(cells)
                long_rows += [{"fraction": fraction, **n} for n in numbers]
            rows.append(row)
        display = pd.DataFrame(rows)
        display.attrs["footnotes"] = (not_raised_footnote(flagged) + not_working_footnote(layout, long_rows)
                                      + setup_footnotes(layout))
        return pd.DataFrame(long_rows), display


def setup_footnotes(layout: dict) -> list[str]:
    """Lines under the table naming what differs from the defaults: the teacher checkpoint when it is the
    best-on-test one, and per-method overrides (e.g. CRD's memory bank over the full training set)."""
    notes = []
    if layout.get("teacher_checkpoint") == "best":
        notes.append("MCMI teacher: best-on-test checkpoint (official), selected on the test set; the λ = 0 control "
                     "likewise (like with like); MLL teacher: teachers.training.checkpoint.")
    for method, hp in sorted((layout.get("method_hp") or {}).items()):
        text = ", ".join(f"{k} = {v}" for k, v in sorted(hp.items()))
        extra = (" (memory bank and negatives over the full training set, as the official few-shot code; the "
                 "student still sees only its subset)") if hp.get("bank") == "full" else ""
        notes.append(f"{method.upper()}: {text}{extra}.")
    return notes


def figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Student accuracy against the fraction of training data, one line per teacher objective, a panel per method."""
    import seaborn as sns
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    from mcmikd import plots

    with plots.theme():
        runs = plots.read_runs(inputs[0])
        methods = plots.kd_methods(layout)
        teacher, student = layout["pairs"][0]
        fractions = sorted(layout["fractions"])
        acc = f"{metric}_acc"
        fig = MplFigure(figsize=(0.6 + 4.4 * len(methods), 3.6), layout="constrained")
        axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
        ce = plots.ok(plots.students(runs, "ce", None))
        for ax, method in zip(axes, methods):
            notes = []
            curves = [(o, plots.students(runs, method, o)) for o in layout["objectives"]]
            curves += [(None, ce)] if len(ce) else []
            for objective, frame in curves:
                if why := plots.why_missing(frame, objective, layout):
                    notes.append(why)
                    continue
                ok = plots.ok(frame).assign(pct=lambda f: 100 * f["fraction"].astype(float))
                sns.lineplot(ok, x="pct", y=acc, ax=ax, color=plots.color(objective, layout),
                             label=plots.label(objective, layout), marker="o", errorbar="sd", err_style="band",
                             linestyle="--" if objective is None else "-", legend=False)
            ax.set_xscale("log")
            ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g}" for f in fractions])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set(title=plots.pair_title(method, teacher, student),
                   xlabel="training data seen by the student (%, log)",
                   ylabel=f"student test accuracy (%, {metric} epoch)")
            if notes:
                plots.note(ax, "\n".join(notes), y=0.5 if len(notes) == len(curves) else 0.08)
        handles = [Line2D([], [], color=plots.color(o, layout), marker="o", label=plots.label(o, layout))
                   for o in layout["objectives"]]
        if len(ce):
            handles.append(Line2D([], [], color=plots.color(None, layout), marker="o", linestyle="--",
                                  label=plots.label(None, layout)))
        plots.legend(fig, handles)
        plots.save(fig, png, pdf)
