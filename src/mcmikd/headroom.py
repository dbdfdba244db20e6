"""Headroom: is there room for a better teacher to show? (issue 18, item 1)

A verdict on teachers needs students that are neither at the ceiling nor unable to learn from a teacher at all. Per
teacher → student pair and setting of an experiment's runs table, seed-paired (student seed s with the teacher seed
it learned from, and with the no-teacher student of the same seed), in points of top-1 accuracy (%):

* `teacher − no teacher`: the reference (first compared, MLL) teacher's test accuracy minus the no-teacher (`ce`)
  student's: the room a teacher could give (≥ 3 points asked for the CPU study);
* `<method> − no teacher`: the method's student of the reference teacher minus the no-teacher student: what
  distillation gives at all (≥ 1 point with an interval excluding 0 asked for KD);
* `teacher − <method>`: the reference teacher minus its student: how far the student is from the ceiling the
  teacher sets (the few-shot students, which have no no-teacher student, are judged by this one).

Each is a paired t-analysis over seeds (`mcmikd.stats.paired`: mean, 95 % half-width, p).
"""

from __future__ import annotations

import math


def headroom(runs, reference: str, metric: str = "last"):
    """Rows (dicts) of the three comparisons above for every (pair, setting, method) of a runs frame whose
    students of the `reference` objective finished: pair, setting, comparison, n, mean, std, ci95, p. Empty when
    the frame has no such students."""
    import pandas as pd

    from mcmikd.aggregate import student_values, teacher_seeds
    from mcmikd.stats import paired

    values = student_values(runs, metric)
    if not len(values):
        return pd.DataFrame()
    values = values[values["measure"] == "top-1"]
    teachers = runs[(runs["role"] == "teacher")] if len(runs) else runs
    teacher_acc = {}
    for (_, r), seed in zip(teachers.iterrows(), teacher_seeds(teachers)):
        if r["teacher_objective"] == reference and not pd.isna(r.get("model_acc")):
            teacher_acc.setdefault((r["teacher_arch"], int(seed)), float(r["model_acc"]))
    ce = values[values["method"] == "ce"]
    rows = []
    students = values[(values["method"] != "ce") & (values["teacher_objective"] == reference)]
    for (t_arch, student, setting, method), frame in students.groupby(["teacher_arch", "student", "setting",
                                                                        "method"], sort=False):
        by_seed = frame.groupby("seed").agg(value=("value", "mean"), teacher_seed=("teacher_seed", "first"))
        floor = ce[(ce["student"] == student) & (ce["setting"] == setting)].groupby("seed")["value"].mean()
        pair = f"{t_arch} → {student}"
        comparisons = {
            "teacher − no teacher": [teacher_acc[(t_arch, int(r.teacher_seed))] - floor[s]
                                     for s, r in by_seed.iterrows()
                                     if s in floor.index and (t_arch, int(r.teacher_seed)) in teacher_acc],
            f"{method} − no teacher": [r.value - floor[s] for s, r in by_seed.iterrows() if s in floor.index],
            f"teacher − {method}": [teacher_acc[(t_arch, int(r.teacher_seed))] - r.value for s, r in by_seed.iterrows()
                                    if (t_arch, int(r.teacher_seed)) in teacher_acc],
        }
        for comparison, diffs in comparisons.items():
            if not diffs:
                continue
            s = paired(diffs)
            rows.append({"pair": pair, "setting": setting, "comparison": comparison, "n": s["n"], "mean": s["mean"],
                         "std": s["std"], "ci95": s["ci"], "p": s["p"]})
    frame = pd.DataFrame(rows)
    if len(frame):  # the teacher − no teacher row is the same for every method: keep it once per (pair, setting)
        frame = frame.drop_duplicates(subset=["pair", "setting", "comparison"])
    return frame


def headroom_markdown(frame, metric: str) -> str:
    """The headroom rows as a Markdown table ('' when there are none)."""
    if not len(frame):
        return ""
    import pandas as pd

    from mcmikd.aggregate import to_markdown

    def show(r):
        if math.isnan(r["mean"]):
            return "–"
        return f"{r['mean']:+.2f}" + ("" if math.isnan(r["ci95"]) else f" [{r['mean'] - r['ci95']:+.2f}, "
                                                                         f"{r['mean'] + r['ci95']:+.2f}]")

    display = pd.DataFrame([{"Pair": r["pair"], "Setting": r["setting"], "Comparison (reference teacher)":
                             r["comparison"], "Seeds": int(r["n"]), "Points (95 % interval)": show(r)}
                            for _, r in frame.iterrows()])
    display.attrs["footnotes"] = [
        "Headroom (mcmikd.headroom): seed-paired differences of top-1 accuracy (%), " + metric + " epoch; "
        "'teacher' is the reference (first compared) teacher of the student's teacher seed, 'no teacher' the "
        "student trained without one (same seed and setting)."]
    return to_markdown(display, f"Headroom ({metric} epoch)")
