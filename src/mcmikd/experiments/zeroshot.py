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
TSNE_CAPTION = (
    "Zero-shot distillation, omitted classes {{ snakemake.params.layout.omitted_text }}: t-SNE of the test-set "
    "logits ({{ snakemake.params.layout.images_text }}; scikit-learn, perplexity "
    "{{ snakemake.params.layout.perplexity }}, PCA initialisation, random_state {{ snakemake.params.layout.seed }}). "
    "One panel per model, each embedded on its own: the compared teachers (teacher seed "
    "{{ snakemake.params.layout.teacher_seed }}), the KD student distilled from each (student seed "
    "{{ snakemake.params.layout.seed }}, last epoch) and the student trained with cross-entropy alone. Points are "
    "test images coloured by their true class (0-based ids, as the dataset's); the images of the omitted classes are "
    "drawn on top as larger black-edged diamonds. t-SNE keeps neighbourhoods, not distances: a tight, separate cluster "
    "of an omitted class in a student's panel means its logits set those images apart although it never saw one "
    "in training; its axes have no unit and panels are not comparable position by position. The title of each "
    "panel gives the model's accuracy on all embedded images and on the omitted classes. The official TSNE.py numbers "
    "classes from 1; here they are 0-based.")
TSNE = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "the t-SNE figure of the test-set logits, one per omitted set (teachers, KD students, CE-only "
                   "student of the first student seed; `mcmikd.jobs.tsne`)",
    "properties": {
        "enabled": {"type": "boolean", "default": True, "description": "false: no t-SNE job and no t-SNE figure"},
        "perplexity": {"type": "number", "exclusiveMinimum": 0, "default": 15,
                       "description": "t-SNE perplexity (the official TSNE.py's value, 15)"},
        "max_images": {"oneOf": [{"type": "null"}, {"type": "integer", "minimum": 2}], "default": None,
                       "description": "embed at most this many test images, drawn with the student seed (null: "
                                      "every test image, as the official TSNE.py: 10,000 on CIFAR-10)"},
    },
}


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
        "tsne": TSNE,
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

    def check(self, where: str) -> None:
        super().check(where)
        tsne = self.body["tsne"]
        if tsne["enabled"] and tsne["max_images"] is not None and not tsne["perplexity"] < tsne["max_images"]:
            raise ConfigError(f"config key '{where}.tsne.perplexity': {tsne['perplexity']:g} must be below "
                              f"tsne.max_images ({tsne['max_images']}); t-SNE needs more images than its perplexity")

    def parse_setting(self, value: str) -> dict:
        return {"omitted": [int(c) for c in value.split(".")]}

    def settings(self) -> list[str]:
        return ["omit" + ".".join(str(c) for c in sorted(set(o))) for o in self.body["omitted"]]

    def extra_layout(self) -> dict:
        return {"omitted": [sorted(set(o)) for o in self.body["omitted"]],
                "class_names": self.grid.class_names() or []}

    def figures(self) -> list[Figure]:
        runs = (self.runs_file(),)
        tsne = [Figure(f"{self.name}_tsne_{setting}", "mcmikd.experiments.zeroshot:tsne_figure",
                       self.tsne_files(setting), TSNE_CAPTION, self.title, f"t-SNE {setting}",
                       self.tsne_layout(setting))
                for setting in self.tsne_settings()]
        return [Figure("zeroshot_bars", "mcmikd.experiments.zeroshot:bars_figure", runs, BARS_CAPTION, self.title,
                       "omitted-class accuracy", self.layout()),
                Figure("zeroshot_confusion", "mcmikd.experiments.zeroshot:confusion_figure", runs, CONFUSION_CAPTION,
                       self.title, "confusion matrices", self.layout()), *tsne]

    # ------------------------------------------------------------------ the t-SNE job (mcmikd.jobs.tsne)
    def tsne_settings(self) -> list[str]:
        """The settings (`omit<ids>`) that get a t-SNE job and figure: every one, unless tsne.enabled is false."""
        return self.settings() if self.body["tsne"]["enabled"] else []

    def tsne_files(self, setting: str) -> tuple[str, str]:
        """(embedding CSV, its JSON record), relative to results/<name>/."""
        return f"tsne/{self.name}/{setting}.csv", f"tsne/{self.name}/{setting}.json"

    def _tsne_runs(self, setting: str) -> list:
        """(panel, its model file relative to results/<name>/, its description) for one setting: per compared
        teacher objective the teacher, then its KD students (one per method); last the CE-only student. The runs
        of the first student seed; the teachers of the teacher seed that seed learns from."""
        from mcmikd.config import NO_TEACHER, teacher_dir

        seed = self.seeds()[0]
        runs = [r for r in self.grid.runs[self.name] if r.setting == setting and r.seed == seed]
        tseed = self.grid.teacher_seed(seed)
        panels = []
        for objective in self.objectives():
            mine = [r for r in runs if r.t_arch != NO_TEACHER and self.grid.variants[(r.t_arch, r.t_variant)][0]
                    == objective]
            if not mine:
                continue
            first = mine[0]
            panels.append((f"teacher/{objective}", f"{teacher_dir(first.t_arch, first.t_variant, tseed)}/"
                           f"{first.t_model}.pt", {"role": "teacher", "objective": objective, "method": None,
                                                   "arch": first.t_arch, "seed": tseed}))
            panels += [(f"{r.method}/{objective}", r.path("pt"),
                        {"role": "student", "objective": objective, "method": r.method, "arch": r.student,
                         "seed": r.seed}) for r in mine]
        panels += [("ce", r.path("pt"), {"role": "student", "objective": None, "method": "ce",
                                                   "arch": r.student, "seed": r.seed})
                   for r in runs if r.t_arch == NO_TEACHER]
        return panels

    def tsne_models(self, setting: str) -> list[str]:
        """The model files the t-SNE job of `setting` reads (relative to results/<name>/), in panel order."""
        return [path for _, path, _ in self._tsne_runs(setting)]

    def tsne_student_models(self) -> list[str]:
        """Every student model file a t-SNE job reads (recorded intermediates, rules/integrity.smk)."""
        return sorted({path for s in self.tsne_settings() for name, path, info in self._tsne_runs(s)
                       if info["role"] == "student"})

    def tsne_archs(self, setting: str) -> list[str]:
        return sorted({info["arch"] for _, _, info in self._tsne_runs(setting)})

    def tsne_params(self, setting: str) -> dict:
        """The t-SNE job's own slice of the config (its model files come as inputs, in the same panel order)."""
        tsne = self.body["tsne"]
        return {"setting": setting, "omitted": self.parse_setting(setting[len(self.setting_prefix):])["omitted"],
                "seed": self.seeds()[0], "perplexity": float(tsne["perplexity"]), "max_images": tsne["max_images"],
                "panels": [{"name": name, **info} for name, _, info in self._tsne_runs(setting)]}

    def tsne_layout(self, setting: str) -> dict:
        """What the t-SNE figure needs besides its two files (labels, colours; the caption's fields)."""
        layout = self.layout()
        params = self.tsne_params(setting)
        cap = params["max_images"]
        return {"objectives": layout["objectives"], "labels": layout["labels"], "colors": layout["colors"],
                "methods": layout["methods"], "class_names": layout["class_names"], "omitted": params["omitted"],
                "omitted_text": "{" + ", ".join(map(str, params["omitted"])) + "}", "seed": params["seed"],
                "teacher_seed": self.grid.teacher_seed(params["seed"]), "perplexity": f"{params['perplexity']:g}",
                "images_text": "every test image" if cap is None else f"at most {cap} test images, drawn with the "
                                                                       f"student seed"}

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


def tsne_figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """t-SNE of the test-set logits of one omitted set (`mcmikd.jobs.tsne`'s CSV and record): one row per compared
    teacher objective (its teacher, then its KD students), the CE-only student in the last column of the first row.
    Points coloured by true class (0-based ids); the omitted classes' points on top as larger black-edged diamonds.
    `metric` is unused: the students' models are their last-epoch states."""
    import pandas as pd
    import seaborn as sns
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.lines import Line2D

    from mcmikd import plots
    from mcmikd.aggregate import method_label
    from mcmikd.io import read_json

    with plots.theme():
        points = pd.read_csv(inputs[0])
        record = read_json(inputs[1])
        names = record.get("class_names") or layout.get("class_names") or []
        omitted = sorted(record["omitted"])
        n_classes = max(len(names), int(points["label"].max()) + 1 if len(points) else 0)
        palette = sns.color_palette("tab10" if n_classes <= 10 else "husl", n_classes)
        panels = record["panels"]
        methods = plots.kd_methods(layout)
        rows = [o for o in layout["objectives"] if any(p.endswith(f"/{o}") for p in panels)]
        grid = [[f"teacher/{o}", *(f"{m}/{o}" for m in methods)] for o in rows] or [[]]
        if "ce" in panels:
            grid[0].append("ce")
        ncols = max(len(r) for r in grid)
        fig = MplFigure(figsize=(3.2 * ncols, 3.2 * len(grid) + 1.0), layout="constrained")
        axes = fig.subplots(len(grid), ncols, squeeze=False)
        for r, names_in_row in enumerate(grid):
            for c in range(ncols):
                ax = axes[r, c]
                if c >= len(names_in_row) or names_in_row[c] not in panels:
                    ax.set_axis_off()
                    continue
                name = names_in_row[c]
                info = panels[name]
                ax.set(xticks=[], yticks=[])
                ax.set_box_aspect(1)
                objective = info.get("objective")
                if info["role"] == "teacher":
                    title = f"{plots.label(objective, layout)} ({info['arch']})"
                elif objective is None:
                    title = f"{plots.label(None, layout)} ({info['arch']})"
                else:
                    title = f"{method_label(info['method'])} student ← {layout['labels'][objective]} ({info['arch']})"
                if info.get("status") != "ok":
                    plots.note(ax, f"no embedding:\n{info.get('status')}: {info.get('reason')}")
                    ax.set_title(title, color=plots.color(objective, layout), fontsize=9)
                    continue
                sel = points[points["panel"] == name]
                seen, gone = sel[sel["omitted"] == 0], sel[sel["omitted"] == 1]
                ax.scatter(seen["x"], seen["y"], s=5, c=[palette[i] for i in seen["label"]], alpha=0.6,
                           linewidths=0, rasterized=True)
                ax.scatter(gone["x"], gone["y"], s=22, marker="D", c=[palette[i] for i in gone["label"]],
                           edgecolors="black", linewidths=0.6, zorder=3, rasterized=True)
                accuracy = f"acc {info['acc']:.1f} %"
                if info.get("acc_omitted") is not None:
                    accuracy += f", omitted {info['acc_omitted']:.1f} %"
                ax.set_title(f"{title}\n{accuracy}", color=plots.color(objective, layout), fontsize=9)
        shown = range(n_classes) if n_classes <= 20 else omitted
        handles = [Line2D([], [], ls="", marker="D" if c in omitted else "o", ms=6 if c in omitted else 5,
                          mfc=palette[c], mec="black" if c in omitted else palette[c],
                          label=plots.class_name(c, names) + (" (omitted)" if c in omitted else ""))
                   for c in shown]
        if n_classes > 20:
            handles.append(Line2D([], [], ls="", marker="o", ms=5, mfc="0.6", mec="0.6",
                                  label=f"the other {n_classes - len(omitted)} classes (hue = class id)"))
        plots.legend(fig, handles, ncol=min(len(handles), 6), where="lower")
        fig.suptitle(f"t-SNE of test-set logits, omitted classes {{{', '.join(map(str, omitted))}}} "
                     f"({record['num_images']} of {record['num_test']} test images, perplexity "
                     f"{record['tsne']['perplexity']:g}, random_state {record['tsne']['random_state']})",
                     fontweight="bold")
        plots.save(fig, png, pdf)
