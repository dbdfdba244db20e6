"""The paper's main table (§4.1, Tables 1–2): every teacher–student pair × framework, one column per teacher
objective, the student without KD beside them; and its heat map of the gain over the reference teacher."""

from __future__ import annotations

from mcmikd.experiments.base import EXCLUDE, NAMES, PAIR, Experiment, Figure

CAPTION = (
    "The main table at a glance: for every framework (rows) and teacher → student pair (columns), the student's "
    "top-1 accuracy with each compared teacher minus its accuracy with the reference (first) teacher, mean over "
    "seeds ({{ snakemake.params.metric }}-epoch accuracy); one panel per compared teacher, each cell also giving the "
    "two accuracies. Blue: that teacher helped; red: it hurt. A blank cell was not run (an excluded method–pair "
    "combination) or has no finished runs.")


class Main(Experiment):
    name = "main"
    title = "Main table"
    properties = {
        "pairs": {"type": "array", "items": PAIR, "minItems": 1,
                  "description": "teacher → student pairs, each {teacher, student}"},
        "methods": {**NAMES, "description": "distillation methods (mcmikd.distill.METHODS): every pair × method × "
                                            "compared teacher × seed is run, plus the student without a teacher"},
        "exclude": EXCLUDE,
    }
    required = ("pairs", "methods")
    ce_baseline = True
    gains = "top-1"
    caption = "Top-1 test accuracy (%) of students distilled from each compared teacher, mean ± std over seeds"
    note = (
        "Main table (the paper's Table 1 layout). For each teacher → student pair: each compared teacher's test "
        "accuracy and CMI (train set, T = 1), mean ± std over the teacher seeds (``teachers.seeds``), the student "
        "trained without a teacher, then for every framework the "
        "student distilled from the reference (first) teacher and, below it, from each other compared teacher with "
        "its gain Δ in brackets; where the teacher's control is compared too (e.g. MCMI and its λ = 0 "
        "fine-tuning CE-FT), the bracket gives both gains, \"(+x vs MLL, +y vs CE-FT)\": the paper's comparison and "
        "the CMI term's own effect. Student numbers are mean ± std over seeds of the accuracy chosen by "
        "``tables.metric`` (best epoch, as the official logs, or last epoch). A \"collapsed teacher\" cell means the "
        "fine-tuning destroyed the teacher (accuracy below ``teachers.finetuning.collapse_ratio`` × its start "
        "model's), so no student was distilled from it.")

    def figures(self) -> list[Figure]:
        return [Figure("main_delta", "mcmikd.experiments.main:delta_figure", (self.runs_file(),), CAPTION,
                       self.title, "gain per framework and pair", self.layout())]

    @classmethod
    def table(cls, runs, layout, metric):
        import math

        import pandas as pd

        from mcmikd.aggregate import (
            NOT_RAISED,
            NOT_WORKING,
            bracketed,
            cell,
            cmi_not_raised,
            compare_cells,
            fmt_delta,
            method_label,
            not_raised_footnote,
            not_working_footnote,
            pair_label,
            show,
            show_teacher,
            teacher_cell,
        )

        students, teachers = runs[runs["role"] == "student"], runs[runs["role"] == "teacher"]
        objectives, labels = layout["objectives"], layout["labels"]
        controls = {o: k for o, k in layout.get("controls", {}).items() if o in objectives and k in objectives}
        flagged = cmi_not_raised(runs, layout)
        reference = objectives[0]
        long_rows, display = [], {}
        methods = [m for m in layout["methods"] if m != "ce"]
        for t_arch, s_arch in layout["pairs"]:
            col = pair_label(t_arch, s_arch)
            cells: dict[str, str] = {}
            for objective in objectives:
                t = teachers[(teachers["teacher_arch"] == t_arch) & (teachers["teacher_objective"] == objective)]
                acc, cmi = teacher_cell(t, "model_acc"), teacher_cell(t, "cmi_T1")  # over the teacher seeds
                mark = NOT_RAISED if (t_arch, objective) in flagged else ""
                cells[f"Teacher acc. ({labels[objective]})"] = show_teacher(acc) + mark
                cells[f"Teacher CMI ({labels[objective]})"] = show_teacher({**cmi, "collapsed": 0}, digits=4) + mark
                long_rows.append({"pair": col, "row": "teacher", "teacher_objective": objective,
                                  "label": t["teacher_label"].iloc[0] if len(t) else labels[objective],
                                  "mean": acc["mean"], "std": acc["std"], "n": acc["n"], "cmi": cmi["mean"],
                                  "cmi_std": cmi["std"], "collapsed": acc["collapsed"],
                                  "cmi_not_raised": bool(mark)})
            ce = cell(students[(students["method"] == "ce") & (students["student"] == s_arch)], metric)
            cells[method_label("ce")] = show(ce)
            long_rows.append({"pair": col, "row": "ce", "teacher_objective": "none", **ce})
            for method in methods:
                sel = students[(students["method"] == method) & (students["teacher_arch"] == t_arch)
                               & (students["student"] == s_arch)]
                # the numbers and both gains (over the reference, over the control) as every table computes them
                _, rows = compare_cells(sel, method, layout, metric, flagged=flagged, floor=ce)
                for numbers in rows:
                    objective = numbers.pop("teacher_objective")
                    numbers.pop("method")
                    marked = (t_arch, objective) in flagged
                    numbers.pop("cmi_not_raised")
                    broken = numbers.pop("not_working", None)
                    # a gain between two arms that both do not work is not a finding: [bracketed]
                    shown_gains = [((bracketed if numbers.get(f"{key}_bracketed") else fmt_delta)(numbers[key]),
                                    labels[who])
                             for key, who in (("delta", reference), ("delta_control", controls.get(objective)))
                             if key in numbers and not math.isnan(numbers[key])]
                    if len(shown_gains) == 1 and objective not in controls:
                        bracket = f" ({shown_gains[0][0]})"  # the plain form when no control is compared
                    else:
                        bracket = f" ({', '.join(f'{d} vs {who}' for d, who in shown_gains)})" if shown_gains else ""
                    name = (method_label(method) if objective == reference
                            else f"{method_label(method)} + {labels[objective]} teacher")
                    cells[name] = (show(numbers) + (NOT_RAISED if marked else "") + (NOT_WORKING if broken else "")
                                   + bracket)
                    extra = {"not_working": broken} if "not_working_margin" in layout else {}
                    long_rows.append({"pair": col, "row": method, "teacher_objective": objective, **numbers,
                                      "cmi_not_raised": marked, **extra})
            display[col] = cells
        frame = pd.DataFrame(display)
        frame.insert(0, f"Top-1 % ({metric} epoch)", frame.index)
        frame = frame.reset_index(drop=True)
        frame.attrs["footnotes"] = not_raised_footnote(flagged) + not_working_footnote(layout, long_rows)
        return pd.DataFrame(long_rows), frame


def delta_figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Heat maps, framework × pair, of the student's accuracy gain with each compared teacher over the reference
    teacher (Δ, points); each cell also gives reference → compared accuracy. Blank: not run or no finished run.
    With `tables.not_working_margin`, a cell whose two students (reference and compared teacher) are both "not
    working at this setting" (`mcmikd.aggregate.not_working_verdict`) is greyed and hatched, its Δ in [brackets] with
    ‡, and a legend below
    the panel says why."""
    import math

    import numpy as np
    import pandas as pd
    import seaborn as sns
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.patches import Patch, Rectangle

    from mcmikd import plots
    from mcmikd.aggregate import method_label

    with plots.theme():
        runs = plots.read_runs(inputs[0])
        numbers, _ = Main.table(runs, layout, metric)
        methods = [m for m in layout["methods"] if m != "ce"]
        pairs = [f"{t} → {s}" for t, s in layout["pairs"]]
        reference, others = layout["objectives"][0], layout["objectives"][1:] or layout["objectives"][:1]
        labels = layout["labels"]
        deltas, texts = {}, {}
        # (objective, method label, pair) whose gain over the reference is not a finding: both arms "not working"
        # (tables.not_working_margin)
        broken = set()
        if len(numbers) and "delta_bracketed" in numbers:
            for _, r in numbers[numbers["row"].isin(methods) & (numbers["delta_bracketed"] == True)].iterrows():  # noqa: E712
                broken.add((r["teacher_objective"], method_label(r["row"]), r["pair"]))
        for objective in others:
            delta = pd.DataFrame(np.nan, index=[method_label(m) for m in methods], columns=pairs)
            text = pd.DataFrame("", index=delta.index, columns=pairs)
            rows = numbers[numbers["row"].isin(methods)] if len(numbers) else numbers
            for (pair, method), frame in (rows.groupby(["pair", "row"]) if len(rows) else []):
                by = frame.set_index("teacher_objective")
                if {reference, objective} <= set(by.index) and reference != objective:
                    ref, other = by.loc[reference, "mean"], by.loc[objective, "mean"]
                    if not (math.isnan(ref) or math.isnan(other)):
                        delta.loc[method_label(method), pair] = other - ref
                        mark = "[{:+.2f}] ‡" if (objective, method_label(method), pair) in broken else "{:+.2f}"
                        text.loc[method_label(method), pair] = f"{mark.format(other - ref)}\n{ref:.1f}→{other:.1f}"
            deltas[objective], texts[objective] = delta, text
        colours = {}  # what the colour shows: a "not working" cell's Δ is not a finding, so it is greyed instead
        for objective, delta in deltas.items():
            colours[objective] = delta.copy()
            for who, label, pair in broken:
                if who == objective:
                    colours[objective].loc[label, pair] = np.nan
        values = np.concatenate([d.to_numpy().ravel() for d in colours.values()])
        # symmetric colour scale around 0 (white), never narrower than ±0.1 points so a zero gain stays white
        limit = max(float(np.nanmax(np.abs(values))) if not np.isnan(values).all() else 0.0, 0.1)
        fig = MplFigure(figsize=(max(6.0, 1.9 + 1.55 * len(pairs)) * len(others), 1.6 + 0.48 * len(methods)),
                        layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(others), squeeze=False)[0])
        for ax, objective in zip(axes, others):
            sns.heatmap(colours[objective], ax=ax, cmap="RdBu", center=0, vmin=-limit, vmax=limit,
                        annot=texts[objective], fmt="", annot_kws={"fontsize": 7}, linewidths=0.5,
                        linecolor="white", cbar_kws={"label": f"Δ top-1, points ({metric} epoch)"})
            ax.set_xlabel("teacher → student")
            ax.set_ylabel("")
            ax.set_title(f"Student accuracy: {labels[objective]} teacher − {labels[reference]} teacher\n"
                         f"(mean over seeds; cells: Δ and {labels[reference]} → {labels[objective]} accuracy)")
            ax.tick_params(axis="x", labelrotation=20)
            for who, label, pair in broken:  # greyed and hatched: the Δ is not a finding
                if who != objective:
                    continue
                i, j = list(deltas[objective].index).index(label), pairs.index(pair)
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor="0.72", edgecolor="0.35", hatch="///", lw=0,
                                       zorder=0.5))
                ax.text(j + 0.5, i + 0.5, texts[objective].loc[label, pair], ha="center", va="center", fontsize=7,
                        color="black", bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1.5})
            if not deltas[objective].notna().any().any():
                plots.note(ax, f"no finished {labels[reference]}/{labels[objective]} student pairs")
        if broken:
            fig.legend(handles=[Patch(facecolor="0.72", edgecolor="0.35", hatch="///",
                                      label=f"‡ method not working at this setting with either teacher: both "
                                            f"students are > {layout['not_working_margin']:g} points below the "
                                            f"no-teacher student; the Δ [in brackets] is not a finding")],
                       loc="outside lower center", fontsize=8, frameon=False)
        plots.save(fig, png, pdf)
