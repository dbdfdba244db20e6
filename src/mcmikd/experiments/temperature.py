"""The paper's Fig. 1 (§4.4): the teacher's CMI on the training set at KD temperature T, and the KD student's
accuracy at that T, for each compared teacher objective."""

from __future__ import annotations

from mcmikd.experiments.base import PAIR, TEMPERATURES, Experiment, Figure

CAPTION = (
    "The paper's Fig. 1: for each teacher–student pair, bars give the KD student's top-1 test accuracy "
    "(%, {{ snakemake.params.metric }} epoch, left axis; mean over seeds ± std) at each KD temperature T, one colour "
    "per compared teacher objective; lines with markers give each teacher's conditional mutual information on the "
    "training set (nats), computed from softmax(z/T) at the same T (right axis; mean over the teacher seeds, band ± "
    "one std). The paper's claim is that students "
    "learn more from teachers, and temperatures, with higher CMI.")


class Temperature(Experiment):
    name = "temperature"
    title = "Temperature"
    properties = {
        "pairs": {"type": "array", "items": PAIR, "minItems": 1,
                  "description": "teacher → KD student pairs, each {teacher, student}"},
        "temperatures": {**TEMPERATURES,
                         "description": "KD temperatures T of the students (Fig. 1); every teacher's CMI is measured "
                                        "at each T too (added to teachers.cmi_temperatures)"},
    }
    required = ("pairs", "temperatures")
    setting_prefix = "T"
    gains = "top-1"
    caption = "Teacher CMI and KD student accuracy (%) against the KD temperature T"
    note = ("Fig. 1 in numbers: for each pair and KD temperature T, each compared teacher's CMI on the training set "
            "computed from softmax(z/T) (mean ± std over the teacher seeds), and the accuracy of the KD student "
            "distilled at that T (mean ± std over "
            "seeds), with the gain Δ over the reference (first) teacher.")

    def methods(self) -> list[str]:
        return ["kd"]

    def parse_setting(self, value: str) -> dict:
        return {"temperature": float(value)}

    def settings(self) -> list[str]:
        from mcmikd.config import fmt_num

        # the sweep's run at the configured KD temperature is the main experiment's KD run: share it
        default = float(self.grid.method_hp("kd").get("temperature", 4.0))
        return ["full" if float(t) == default else f"T{fmt_num(t)}" for t in self.body["temperatures"]]

    def setting_params(self, parsed: dict) -> tuple[dict, dict]:
        parsed = dict(parsed)
        return parsed, {"temperature": parsed.pop("temperature")}

    def cmi_temperatures(self) -> list[float]:
        return [float(t) for t in self.body["temperatures"]]

    def extra_layout(self) -> dict:
        return {"temperatures": [float(t) for t in self.body["temperatures"]]}

    def figures(self) -> list[Figure]:
        return [Figure("temperature", "mcmikd.experiments.temperature:figure", (self.runs_file(),), CAPTION,
                       self.title, "accuracy and CMI vs T", self.layout())]

    @classmethod
    def table(cls, runs, layout, metric):

        import pandas as pd

        from mcmikd.aggregate import (
            NOT_RAISED,
            cell,
            cmi_not_raised,
            compare_cells,
            not_raised_footnote,
            not_working_footnote,
            pair_label,
            show_teacher,
            teacher_cell,
        )

        students, teachers = runs[runs["role"] == "student"], runs[runs["role"] == "teacher"]
        flagged = cmi_not_raised(runs, layout)
        long_rows, rows = [], []
        for t_arch, s_arch in layout["pairs"]:
            for temp in layout["temperatures"]:
                row = {"Pair": pair_label(t_arch, s_arch), "T": f"{temp:g}"}
                sel = students[(students["teacher_arch"] == t_arch) & (students["student"] == s_arch)
                               & (students["method"] == "kd") & ((students["temperature"] - temp).abs() < 1e-9)]
                cmis = {}
                for objective in layout["objectives"]:
                    t = teachers[(teachers["teacher_arch"] == t_arch) & (teachers["teacher_objective"] == objective)]
                    c = teacher_cell(t, f"cmi_T{float(temp):g}")  # mean ± std over the teacher seeds
                    cmis[objective] = c
                    row[f"Teacher CMI, {layout['labels'][objective]}"] = (
                        show_teacher({**c, "collapsed": 0}, digits=4)
                        + (NOT_RAISED if (t_arch, objective) in flagged else ""))
                # the no-teacher student does not depend on T: any CE student of this student in the runs is the floor
                ce = students[(students["method"] == "ce") & (students["student"] == s_arch)]
                cells, numbers = compare_cells(sel, "kd", layout, metric, prefix="KD student", delta_prefix="",
                                               flagged=flagged, floor=cell(ce, metric) if len(ce) else None)
                row.update(cells)
                long_rows += [{"pair": row["Pair"], "temperature": temp,
                               "teacher_cmi": cmis[n["teacher_objective"]]["mean"],
                               "teacher_cmi_std": cmis[n["teacher_objective"]]["std"],
                               "teacher_cmi_n": cmis[n["teacher_objective"]]["n"],
                               **{k: v for k, v in n.items() if k != "method"}} for n in numbers]
                rows.append(row)
        display = pd.DataFrame(rows)
        display.attrs["footnotes"] = not_raised_footnote(flagged) + not_working_footnote(layout, long_rows)
        return pd.DataFrame(long_rows), display


def _teacher_cmi(teachers, temps: list[float]) -> tuple[list[float], list[float]]:
    """Mean and std (NaN below two seeds) over the teacher seeds (rows) of the CMI at each temperature."""
    from mcmikd.aggregate import teacher_cell

    cells = [teacher_cell(teachers, f"cmi_T{t:g}") for t in temps]
    return [c["mean"] for c in cells], [c["std"] if c["n"] > 1 else float("nan") for c in cells]


def figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Fig. 1: KD student accuracy (bars, left axis, from 0) and each teacher's train-set CMI (lines, right axis)
    against the KD temperature T (mean over the teacher seeds, band ± one std); one panel per teacher–student pair."""
    import math

    import numpy as np
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from mcmikd import plots

    with plots.theme():
        runs = plots.read_runs(inputs[0])
        temps = [float(t) for t in layout["temperatures"]]
        pairs, objectives = layout["pairs"], layout["objectives"]
        markers = dict(zip(objectives, "osD^v<>"))
        fig = MplFigure(figsize=(1.4 + max(4.5, 1.1 * len(temps)) * len(pairs), 3.9), layout="constrained")
        axes = fig.subplots(1, len(pairs), squeeze=False)[0]
        for ax, (teacher, student) in zip(axes, pairs):
            series, notes = [], []
            for objective in objectives:
                sel = plots.students(runs, "kd", objective, teacher_arch=teacher, student=student)
                stats = [plots.stat(plots.ok(sel[np.isclose(sel["temperature"].astype(float), t)])[f"{metric}_acc"])
                         for t in temps]
                series.append((plots.label(objective, layout), plots.color(objective, layout),
                               [s[0] for s in stats], [s[1] for s in stats]))
                if why := plots.why_missing(sel, objective, layout):
                    notes.append(why)
            plots.grouped_bars(ax, [f"T = {t:g}" for t in temps], series, values=False, alpha=0.45)
            high = plots.extent(series)[1]
            ax.set_ylim(0, 100 if math.isnan(high) else min(100.0, high * 1.15 + 1))
            ax.set(title=f"{teacher} → {student}", xlabel="KD temperature T",
                   ylabel=f"KD student accuracy (%, {metric} epoch)")
            twin = ax.twinx()
            twin.grid(False)
            teachers = runs[runs["role"] == "teacher"]
            for objective in objectives:
                cmi, spread = _teacher_cmi(teachers[(teachers["teacher_arch"] == teacher)
                                                    & (teachers["teacher_objective"] == objective)], temps)
                twin.plot(np.arange(len(temps)), cmi, color=plots.color(objective, layout),
                          marker=markers[objective], markeredgecolor="white", markersize=7, lw=2)
                low, high = np.subtract(cmi, spread), np.add(cmi, spread)  # ± one std over teacher seeds
                twin.fill_between(np.arange(len(temps)), low, high, color=plots.color(objective, layout), alpha=0.15,
                                  lw=0)
                if all(math.isnan(c) for c in cmi):
                    notes.append(f"{plots.label(objective, layout)}: no CMI measured")
            twin.set_ylim(0, None)
            twin.set_ylabel("teacher CMI (training set, nats)")
            if notes:
                plots.note(ax, "\n".join(notes), y=0.2)
        handles = ([Patch(facecolor=plots.color(o, layout), alpha=0.45, edgecolor=plots.color(o, layout),
                          label=f"KD student, {plots.label(o, layout)} (bars, left)") for o in objectives]
                   + [Line2D([], [], color=plots.color(o, layout), marker=markers[o], markeredgecolor="white",
                             markersize=7, lw=2, label=f"CMI of the {plots.label(o, layout)} (line, right)")
                      for o in objectives])
        plots.legend(fig, handles, ncol=2, where="lower")
        plots.save(fig, png, pdf)
