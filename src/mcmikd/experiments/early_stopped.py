"""Early-stopped teachers (the paper's Fig. 2; Ye et al., ICLR 2024, §4): for each teacher → student pair, MLL
teachers stopped after each of `epochs`, the full MLL teacher and the compared fine-tuned teachers (MCMI, its λ = 0
control), with each teacher's test accuracy (%), its CMI on the training set (nats, eval mode, T = 1, from the CMI
job's `cmi.json`) and the accuracy of the student distilled from it (`methods`, default KD). The paper's point: a
more accurate teacher with lower CMI can be a worse teacher — a teacher's accuracy does not rank it as a teacher,
its CMI does better.

A stopped teacher is its own teacher folder (`mll-e<epoch>`, MLL's path hyper-parameter `stop_epoch`): the same
recipe and seed as the full teacher, stopped after that epoch, so it is the full run's state after that epoch for
every learning-rate schedule (`mcmikd.teachers.mll`). The full MLL teacher and the fine-tuned teachers are the
ones every other experiment uses, and their students (setting `full`) the main experiment's.
"""

from __future__ import annotations

from mcmikd.errors import ConfigError
from mcmikd.experiments.base import NAMES, PAIR, Experiment, Figure

STOP_KEY = "stop_epoch"
CAPTION = (
    "Early-stopped teachers (the paper's Fig. 2): for each teacher → student pair (one row of panels), one bar per "
    "teacher — MLL teachers stopped after the given epoch (lighter), the full MLL teacher and the fine-tuned "
    "teachers (MCMI, the λ = 0 control) — with, left to right, the teacher's top-1 test accuracy (%), its "
    "conditional mutual information on the training set (nats, eval mode, T = 1), and the top-1 test accuracy (%, "
    "{{ snakemake.params.metric }} epoch, mean ± std over seeds) of the student distilled from it with each method. "
    "The paper shows that a more accurate teacher with lower CMI can be a worse teacher; this figure is the "
    "reproduction's test of it: compare the teachers' accuracy ranking (left) with their students' (right). A "
    "missing bar is said in its panel (no CMI measured, no finished student, collapsed teacher).")


class EarlyStopped(Experiment):
    name = "early_stopped"
    title = "Early-stopped teachers"
    properties = {
        "pairs": {"type": "array", "items": PAIR, "minItems": 1,
                  "description": "teacher → student pairs; early-stopped teachers of each teacher architecture"},
        "epochs": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 10000}, "minItems": 1,
                   "uniqueItems": True,
                   "description": "epochs after which an MLL teacher is stopped (each < teachers.training.epochs)"},
        "methods": {**NAMES, "description": "distillation methods of the students (default [kd])"},
    }
    required = ("pairs", "epochs")
    caption = "Early-stopped teachers: teacher accuracy (%), teacher CMI (nats) and student accuracy (%)"
    note = (
        "Early-stopped teachers (the paper's Fig. 2): for each teacher → student pair, MLL teachers stopped after the "
        "given epoch (same recipe and seed as the full MLL teacher), the full MLL teacher (the reference) and the "
        "compared fine-tuned teachers, each with its test accuracy, its CMI on the training set (nats, eval mode, "
        "softmax at T = 1) and the accuracy of the student distilled from it (mean ± std over seeds) with its gain Δ "
        "over the full MLL teacher's student. The paper's claim: a more accurate teacher with lower CMI can be a "
        "worse teacher; this table is the reproduction's test of it.")

    # ------------------------------------------------------------------ config (parse time)
    def stopped(self) -> str:
        """The objective whose teachers are stopped early (the first compared one: MLL)."""
        return self.objectives()[0]

    def epochs(self) -> list[int]:
        return sorted(int(e) for e in self.body["epochs"])

    def check(self, where: str) -> None:
        cls = self.grid.objective_class(self.stopped())
        if cls.start_from is not None or STOP_KEY not in cls.path_keys:
            raise ConfigError(f"config key '{where}.objectives': the first objective ('{cls.name}') is the one "
                              f"stopped early and must be trained from scratch with a '{STOP_KEY}' "
                              f"hyper-parameter; list mll first")
        total = int(self.grid.config["teachers"]["training"]["epochs"])
        late = [e for e in self.epochs() if e >= total]
        if late:
            raise ConfigError(f"config key '{where}.epochs': {late} not before the end of the teachers' training "
                              f"(teachers.training.epochs = {total}); give epochs below {total}")

    def compared_teachers(self, pair: dict) -> list[tuple[str, dict]]:
        first, *others = self.objectives()
        return ([(first, {})] + [(first, {STOP_KEY: e}) for e in self.epochs()] + [(o, {}) for o in others])

    def extra_layout(self) -> dict:
        entries = {}  # teacher arch -> [[objective, variant, stop epoch or None], ...] in bar order
        for pair in self.pairs():
            arch = pair["teacher"]
            rows = [[o, self.grid.teacher_variant(arch, o, self, override), override.get(STOP_KEY)]
                    for o, override in self.compared_teachers(pair)]
            stopped = [r for r in rows if r[2] is not None]
            entries[arch] = stopped + [r for r in rows if r[2] is None]  # stopped first, then full MLL, MCMI, ...
        return {"teachers": entries, "stopped": self.stopped(), "epochs": self.epochs(),
                "full_epochs": int(self.grid.config["teachers"]["training"]["epochs"])}

    def figures(self) -> list[Figure]:
        return [Figure(self.name, "mcmikd.experiments.early_stopped:figure", (self.runs_file(),), CAPTION,
                       self.title, "teacher accuracy, CMI and student accuracy", self.layout())]

    # ------------------------------------------------------------------ job time
    @classmethod
    def rows(cls, runs, layout: dict, metric: str) -> list[dict]:
        """One dict per (pair, teacher) in bar order: pair, teacher_objective, teacher_variant, stop_epoch (None:
        not stopped), the teacher columns of `aggregate.teacher_fields` over the teacher seeds (teacher_acc: % test of
        model.pt, or of a fine-tuned teacher's best.pt with teacher_checkpoint: best; teacher_cmi: nats, train set,
        T = 1; their _std, teacher_n, collapsed seeds), and per
        method `<method>` (the students' cell: mean, std, n, ...) and `<method>_delta` over the full (reference)
        teacher's students (points)."""
        import math

        from mcmikd.aggregate import cell, pair_label, teacher_fields

        if not len(runs):
            runs = runs.reindex(columns=["role", "teacher_arch", "teacher_variant", "student", "method", "status",
                                         "reason", f"{metric}_acc"])
        students, teachers = runs[runs["role"] == "student"], runs[runs["role"] == "teacher"]
        out = []
        for t_arch, s_arch in layout["pairs"]:
            entries = layout["teachers"][t_arch]
            reference = next(v for o, v, e in entries if o == layout["stopped"] and e is None)
            refs = {}
            rows = []
            for objective, variant, stop in entries:
                t = teachers[(teachers["teacher_arch"] == t_arch) & (teachers["teacher_variant"] == variant)]
                # students of a fine-tuned teacher used its best.pt with teacher_checkpoint: best: its accuracy then
                fine_tuned_best = layout.get("teacher_checkpoint") == "best" and objective != layout["stopped"]
                column = "best_acc" if fine_tuned_best else "model_acc"
                row = {"pair": pair_label(t_arch, s_arch), "teacher_objective": objective, "teacher_variant": variant,
                       "stop_epoch": stop, **teacher_fields(t, column)}  # means over the teacher seeds
                for method in layout["methods"]:
                    sel = students[(students["teacher_arch"] == t_arch) & (students["teacher_variant"] == variant)
                                   & (students["student"] == s_arch) & (students["method"] == method)]
                    row[method] = cell(sel, metric)
                    if variant == reference:
                        refs[method] = row[method]["mean"]
                rows.append(row)
            for row in rows:
                for method in layout["methods"]:
                    row[f"{method}_delta"] = row[method]["mean"] - refs.get(method, math.nan)
            out += rows
        return out

    @classmethod
    def teacher_name(cls, row: dict, layout: dict) -> str:
        label = layout["labels"][row["teacher_objective"]]
        if row["stop_epoch"] is not None:
            return f"{label}, epoch {row['stop_epoch']}"
        if row["teacher_objective"] == layout["stopped"]:
            return f"{label}, epoch {layout['full_epochs']} (reference)"
        return label

    @classmethod
    def table(cls, runs, layout, metric):
        import math

        import pandas as pd

        from mcmikd.aggregate import fmt_delta, method_label, show, teacher_of

        rows = cls.rows(runs, layout, metric)
        display, numbers = [], []
        for r in rows:
            is_ref = r["stop_epoch"] is None and r["teacher_objective"] == layout["stopped"]
            shown = {"Pair": r["pair"], "Teacher": cls.teacher_name(r, layout),
                     "Teacher acc.": _teacher_text(teacher_of(r, "acc")),
                     "Teacher CMI": _teacher_text({**teacher_of(r, "cmi"), "collapsed": 0}, digits=4)}
            base = {k: r[k] for k in ("pair", "teacher_objective", "teacher_variant", "teacher_acc", "teacher_acc_std",
                                      "teacher_cmi", "teacher_cmi_std", "teacher_n", "collapsed")}
            base["stop_epoch"] = math.nan if r["stop_epoch"] is None else r["stop_epoch"]
            for method in layout["methods"]:
                name = method_label(method)
                shown[f"{name} student"] = show(r[method])
                shown[f"Δ {name}"] = "" if is_ref else fmt_delta(r[f"{method}_delta"])
                c = r[method]
                numbers.append({**base, "method": method, "mean": c["mean"], "std": c["std"], "n": c["n"],
                                "delta": r[f"{method}_delta"]})
            display.append(shown)
        frame = pd.DataFrame(display)
        from mcmikd.experiments.fewshot import setup_footnotes

        frame.attrs["footnotes"] = setup_footnotes(layout)
        if layout.get("teacher_checkpoint") == "best":
            frame.attrs["footnotes"].append("Fine-tuned teachers: accuracy of their best-on-test state (the one the "
                                            "students used); their CMI is measured on model.pt.")
        return pd.DataFrame(numbers), frame


def _teacher_text(c: dict, digits: int = 2) -> str:
    """A teacher cell (`aggregate.teacher_of`): mean ± std over the teacher seeds (`show_teacher`); one seed as
    the bare value (and "(collapsed)")."""
    from mcmikd.aggregate import fmt, show_teacher

    if c["n"] > 1:
        return show_teacher(c, digits)
    return fmt(c["mean"], digits=digits) + (" (collapsed)" if c["collapsed"] else "")


def _shade(hex_color: str, t: float) -> str:
    """`hex_color` mixed with white (t = 0: the colour, t → 1: white)."""
    rgb = [int(hex_color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * t):02x}" for c in rgb)


def figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Per pair (a row of panels), one bar per teacher (stopped MLL teachers in lighter shades of the MLL colour,
    then the full MLL teacher and the fine-tuned ones): teacher test accuracy (%), teacher CMI (nats, train set,
    T = 1), and the students' test accuracy (%, mean ± std over seeds) per method. Panels without data say why."""
    import math

    import numpy as np
    from matplotlib.figure import Figure as MplFigure

    from mcmikd import plots
    from mcmikd.aggregate import method_label

    with plots.theme():
        runs = plots.read_runs(inputs[0])
        rows = EarlyStopped.rows(runs, layout, metric)
        pairs, methods = layout["pairs"], layout["methods"]
        ncols = 2 + len(methods)
        fig = MplFigure(figsize=(3.3 * ncols + 0.6, 3.9 * len(pairs)), layout="constrained")
        axes = fig.subplots(len(pairs), ncols, squeeze=False)
        n_stop = len(layout["epochs"])
        for panels, (teacher, student) in zip(axes, pairs):
            mine = [r for r in rows if r["pair"] == f"{teacher} → {student}"]
            names = [EarlyStopped.teacher_name(r, layout).replace(" (reference)", " (full)").replace(", epoch ", "\ne")
                     for r in mine]
            colors = []
            for i, r in enumerate(mine):
                base = plots.color(r["teacher_objective"], layout)
                colors.append(_shade(base, 0.6 * (n_stop - i) / n_stop) if r["stop_epoch"] is not None else base)
            seed_std = {what: [r[f"teacher_{what}_std"] if r["teacher_n"] > 1 else math.nan for r in mine]
                        for what in ("acc", "cmi")}  # spread over the teacher seeds
            series = [("acc", [r["teacher_acc"] for r in mine], seed_std["acc"],
                       "teacher test accuracy (%)", "no teacher accuracy"),
                      ("cmi", [r["teacher_cmi"] for r in mine], seed_std["cmi"],
                       "teacher CMI (training set, nats)", "no CMI measured")]
            series += [(m, [r[m]["mean"] for r in mine], [r[m]["std"] if r[m]["n"] > 1 else math.nan for r in mine],
                        f"{method_label(m)} student accuracy (%, {metric} epoch)", "no finished student")
                       for m in methods]
            x = np.arange(len(mine))
            for ax, (what, ys, errs, ylabel, missing) in zip(panels, series):
                ys, errs = np.array(ys, dtype=float), np.nan_to_num(np.array(errs, dtype=float))
                ax.bar(x, np.nan_to_num(ys), color=colors, edgecolor="white",
                       **({"yerr": errs, "capsize": 3} if errs.any() else {}))
                ax.set_xticks(x, names, fontsize=8)
                ax.set(ylabel=ylabel, title=f"{teacher} → {student}" if what not in ("acc", "cmi")
                       else f"teacher {teacher}")
                finite = ys[~np.isnan(ys)]
                if len(finite):
                    low, high = float(finite.min()), float(finite.max())
                    pad = max(0.15 * (high - low), 0.02 * abs(high) or 0.01)
                    top = high + float(errs.max())
                    upper = top + 2 * pad if what == "cmi" else min(top + 2 * pad, 104.0)  # accuracy: ≤ 100 %
                    ax.set_ylim(max(0.0, low - 4 * pad) if what != "cmi" else 0.0, upper)
                    for xi, y, err in zip(x, ys, errs):
                        if not np.isnan(y):
                            ax.annotate(f"{y:.3f}" if what == "cmi" else f"{y:.1f}", (xi, y + err), ha="center",
                                        va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
                else:
                    plots.note(ax, missing)
                for xi, r in zip(x, mine):
                    if r["collapsed"]:
                        ax.plot([xi], [0.06], transform=ax.get_xaxis_transform(), marker="x", color="black",
                                markersize=9, mew=2, ls="")
        plots.save(fig, png, pdf)
