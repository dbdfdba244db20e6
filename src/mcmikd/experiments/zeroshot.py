"""Zero-shot distillation (paper §4.3, Fig. 4): classes omitted from every training batch before the teacher and
the student see it; the student's accuracy (recall) on each omitted class, one column per teacher objective."""

from __future__ import annotations

from mcmikd.errors import ConfigError
from mcmikd.experiments.base import NAMES, PAIR, Experiment, Figure

BARS_CAPTION = (
    "Zero-shot distillation: accuracy (%, {{ snakemake.params.metric }} epoch) on each class that was removed from "
    "the student's training data, one group of bars per (omitted set, class). Grey: the student trained with "
    "cross-entropy alone, which never sees the class and therefore scores 0 % by construction; then KD from each "
    "compared teacher (one colour per teacher objective). Bars are means over seeds (value printed above), error bars "
    "± one standard deviation. Any accuracy above 0 % on an omitted class comes from the teacher's soft labels "
    "alone.")
CONFUSION_CAPTION = (
    "Zero-shot distillation: row-normalised confusion matrices of the students ({{ snakemake.params.metric }} "
    "epoch), test counts pooled over seeds. Rows of panels are the omitted class sets, columns the student trained "
    "with cross-entropy alone and the KD students of each compared teacher. Each row of a matrix is a true class and "
    "shows where its test images went (% of that class); the omitted classes are labelled in red and their rows "
    "boxed. The diagonal cell of a boxed row is the accuracy on the omitted class, the rest of the row shows which "
    "seen classes absorb its images.")


class ZeroShot(Experiment):
    name = "zeroshot"
    title = "Zero-shot"
    properties = {
        "pair": {**PAIR, "description": "the teacher → student pair, {teacher, student}"},
        "methods": {**NAMES, "description": "distillation methods of the zero-shot students (a CE-only student is "
                                            "trained besides)"},
        "omitted": {"type": "array", "minItems": 1,
                    "items": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1,
                              "uniqueItems": True},
                    "description": "lists of class ids, each one setting (`omit<ids>`): its classes are removed "
                                   "from every training batch before both forward passes"},
    }
    required = ("pair", "methods", "omitted")
    setting_prefix = "omit"
    gains = "classes"
    ce_baseline = True
    caption = "Zero-shot: student accuracy (%) on classes omitted from its training data"
    note = (
        "Zero-shot students: the omitted classes are removed from every training batch before the teacher and the "
        "student see it, so the student learns about them only from the teacher's soft outputs on other images. The "
        "table gives the student's accuracy (recall) on each omitted class — the diagonal of its test confusion "
        "matrix — for a CE-only student (0 % by construction) and KD from each compared teacher, and the overall test "
        "accuracy of the KD students.")

    def check_classes(self, where: str, num_classes: int) -> None:
        for i, omitted in enumerate(self.body["omitted"]):
            bad = [c for c in omitted if c >= num_classes]
            if bad:
                raise ConfigError(f"config key '{where}.omitted[{i}]': class ids {bad} do not exist "
                                  f"in {self.grid.config['dataset']['name']} (0..{num_classes - 1})")
            if len(omitted) >= num_classes:
                raise ConfigError(f"config key '{where}.omitted[{i}]': cannot omit every class")

    def parse_setting(self, value: str) -> dict:
        return {"omitted": [int(c) for c in value.split(".")]}

    def settings(self) -> list[str]:
        return ["omit" + ".".join(str(c) for c in sorted(set(o))) for o in self.body["omitted"]]

    def extra_layout(self) -> dict:
        return {"omitted": [sorted(set(o)) for o in self.body["omitted"]],
                "class_names": self.grid.class_names() or []}

    def figures(self) -> list[Figure]:
        runs = (self.runs_file(),)
        return [Figure("zeroshot_bars", "mcmikd.experiments.zeroshot:bars_figure", runs, BARS_CAPTION, self.title,
                       "omitted-class accuracy", self.layout()),
                Figure("zeroshot_confusion", "mcmikd.experiments.zeroshot:confusion_figure", runs, CONFUSION_CAPTION,
                       self.title, "confusion matrices", self.layout())]

    @classmethod
    def table(cls, runs, layout, metric):
        import pandas as pd

        from mcmikd.aggregate import (
            NOT_RAISED,
            NOT_WORKING,
            cell,
            cmi_not_raised,
            compare_cells,
            method_label,
            not_raised_footnote,
            not_working_footnote,
            per_class,
            show,
        )

        students = runs[runs["role"] == "student"]
        flagged = cmi_not_raised(runs, layout)
        marked = {o for _, o in flagged}
        names = layout.get("class_names") or []
        long_rows, rows = [], []
        kd_methods = [m for m in layout["methods"] if m != "ce"]
        for omitted in layout["omitted"]:
            key = ".".join(str(c) for c in sorted(set(omitted)))
            at = students[students["omitted"].astype(str) == key]
            for cls_id in omitted:
                cname = names[cls_id] if cls_id < len(names) else str(cls_id)
                row = {"Omitted classes": "{" + ", ".join(str(c) for c in omitted) + "}",
                       "Class": f"{cls_id} ({cname})"}
                ce = per_class(at[at["method"] == "ce"], metric, cls_id)
                row["CE only"] = show(ce)
                long_rows.append({"omitted": key, "class": cls_id, "method": "ce", "teacher_objective": "none", **ce})
                # "not working" compares OVERALL accuracy (all classes) of each teacher's students with the CE
                # student's, not the omitted-class recall (0 % for CE by construction)
                ce_runs = at[at["method"] == "ce"]
                floor = cell(ce_runs, metric) if len(ce_runs) else None
                broken = set()  # (method, objective) arms not working
                for method in kd_methods:
                    # compare_cells calls `measure` before it returns, while cls_id is still this class
                    cells, numbers = compare_cells(at[at["method"] == method], method, layout, metric,
                                                   measure=lambda f, m: per_class(f, m, cls_id),  # noqa: B023
                                                   flagged=flagged, floor=floor)
                    broken |= {(method, n["teacher_objective"]) for n in numbers if n.get("not_working")}
                    row.update(cells)
                    long_rows += [{"omitted": key, "class": cls_id, **n} for n in numbers]
                for method in kd_methods:
                    sel = at[at["method"] == method]
                    for objective in layout["objectives"]:
                        overall = cell(sel[sel["teacher_objective"] == objective], metric)
                        row[f"{method_label(method)}, {layout['labels'][objective]}, all classes"] = (
                            show(overall) + (NOT_RAISED if objective in marked else "")
                            + (NOT_WORKING if (method, objective) in broken else ""))
                rows.append(row)
        display = pd.DataFrame(rows)
        display.attrs["footnotes"] = not_raised_footnote(flagged) + not_working_footnote(
            layout, long_rows, "the student trained without a teacher on the same omitted classes (overall test "
                               "accuracy, all classes, not the omitted-class recall)")
        return pd.DataFrame(long_rows), display


def _per_class(frame, metric: str, cls_id: int) -> tuple[float, float]:
    import json

    from mcmikd import plots

    return plots.stat(json.loads(v)[cls_id] for v in plots.ok(frame)[f"per_class_acc_{metric}"])


def _omitted_sets(layout: dict) -> list[tuple[str, list[int]]]:
    return [(".".join(str(c) for c in sorted(set(o))), sorted(set(o))) for o in layout["omitted"]]


def bars_figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Accuracy on each omitted class: CE only (0 % by construction) and KD from each compared teacher."""
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.patches import Patch

    from mcmikd import plots

    with plots.theme():
        runs = plots.read_runs(inputs[0])
        names = layout.get("class_names") or []
        methods = plots.kd_methods(layout)
        teacher, student = layout["pairs"][0]
        groups = [(key, omitted, c) for key, omitted in _omitted_sets(layout) for c in omitted]
        labels = [f"class {plots.class_name(c, names)}\nomitted {{{', '.join(map(str, o))}}}" for _, o, c in groups]
        series_keys = [None, *layout["objectives"]]
        fig = MplFigure(figsize=(1.2 + max(4.0, 0.55 * len(series_keys) * len(groups)) * len(methods), 3.8),
                        layout="constrained")
        axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
        for ax, method in zip(axes, methods):
            series, notes = [], []
            for objective in series_keys:
                sel = plots.students(runs, method, objective)
                stats = [_per_class(sel[sel["omitted"] == key], metric, c) for key, _, c in groups]
                series.append((plots.label(objective, layout), plots.color(objective, layout),
                               [s[0] for s in stats], [s[1] for s in stats]))
                if why := plots.why_missing(sel, objective, layout):
                    notes.append(why)
            plots.grouped_bars(ax, labels, series)
            high = plots.extent(series)[1]
            ax.set_ylim(0, 1.35 * high if high >= 4 else 5)  # headroom for the values and a note
            ax.set(title=plots.pair_title(method, teacher, student),
                   ylabel=f"accuracy on the class (%, {metric} epoch)")
            if notes:
                plots.note(ax, "\n".join(notes), y=0.92)
        plots.legend(fig, [Patch(color=plots.color(o, layout), label=plots.label(o, layout)) for o in series_keys])
        plots.save(fig, png, pdf)


def confusion_figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Row-normalised confusion matrices (mean over seeds): one row per omitted set, columns CE only and KD from
    each compared teacher; the omitted classes' rows are boxed and their labels coloured."""
    import matplotlib as mpl
    import numpy as np
    import seaborn as sns
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.patches import Rectangle

    from mcmikd import plots

    with plots.theme():
        runs = plots.read_runs(inputs[0])
        names = layout.get("class_names") or []
        columns = [("ce", None)] + [(m, o) for m in plots.kd_methods(layout) for o in layout["objectives"]]
        sets = _omitted_sets(layout)
        cells = {(key, col): plots.students(runs, *col, omitted=key) for key, _ in sets for col in columns}
        cms = {c: plots.mean_confusion(frame, metric) for c, frame in cells.items()}
        n = next((cm.shape[0] for cm in cms.values() if cm is not None), len(names) or 10)
        side = 2.9 if n <= 10 else 3.4
        fig = MplFigure(figsize=(side * len(columns) + 1.0, side * len(sets) + 0.6), layout="constrained")
        axes = fig.subplots(len(sets), len(columns), squeeze=False)
        cmap = sns.color_palette("Blues", as_cmap=True)
        for row, (key, omitted) in enumerate(sets):
            for col, (method, objective) in enumerate(columns):
                ax, cm = axes[row, col], cms[(key, (method, objective))]
                ax.set_box_aspect(1)
                if cm is None:
                    plots.note(ax, plots.why_missing(cells[(key, (method, objective))], objective,
                                                     layout).replace(": ", ":\n"))
                    ax.set(xticks=[], yticks=[])
                    ax.grid(False)
                else:
                    annot = np.where(cm >= 0.5, np.vectorize(lambda v: f"{v:.0f}")(cm), "") if n <= 10 else False
                    sns.heatmap(cm, ax=ax, vmin=0, vmax=100, cmap=cmap, cbar=False, annot=annot, fmt="",
                                annot_kws={"fontsize": 6.5}, linewidths=0.3 if n <= 10 else 0, linecolor="white")
                    plots.class_ticks(ax, n, omitted, names)
                    for c in omitted:
                        ax.add_patch(Rectangle((0, c), n, 1, fill=False, ec=plots.OMITTED_COLOR, lw=1.6,
                                               clip_on=False))
                if row == 0:
                    title = (plots.label(None, layout) if objective is None
                             else f"{plots.method_label(method)} · {plots.label(objective, layout)}")
                    ax.set_title(title, color=plots.color(objective, layout))
                if col == 0:
                    ax.set_ylabel(f"omitted {{{', '.join(map(str, omitted))}}}\ntrue class")
                if row == len(sets) - 1:
                    ax.set_xlabel("predicted class")
        fig.colorbar(mpl.cm.ScalarMappable(mpl.colors.Normalize(0, 100), cmap), ax=axes, shrink=0.7,
                     label="% of the true class's test images")
        fig.suptitle(f"Zero-shot students ({metric} epoch); omitted classes in red", fontweight="bold")
        plots.save(fig, png, pdf)
