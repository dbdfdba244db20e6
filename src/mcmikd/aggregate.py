"""From result files to the paper's tables: a long runs table per experiment, then CSV, Markdown and LaTeX.

`collect_runs` turns the JSON results of one experiment (students, and the teachers they used) into one row
per run. The table builders reduce those rows to the paper's layouts, mean ± std over seeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from mcmikd.io import read_json, write_text

# --------------------------------------------------------------------------------------------- collection
def _student_row(path: str, experiment: str) -> dict:
    r = read_json(path)
    teacher = r.get("teacher") or {}
    setting = r.get("setting") or {}  # the data setting the job ran with (few-shot fraction, omitted classes, ...)
    hp = r.get("provenance", {}).get("config", {}).get("hp", {})
    row = {
        "experiment": experiment, "role": "student", "file": path,
        "teacher_arch": teacher.get("arch", "none"), "teacher_objective": teacher.get("objective", "none"),
        "teacher_variant": teacher.get("variant", "none"), "student": r["student"], "method": r["method"],
        "setting": Path(path).parent.name, "fraction": setting.get("fraction", 1.0),
        "omitted": ".".join(str(c) for c in setting.get("omitted", [])),
        "temperature": hp.get("temperature"), "hp": json.dumps(hp, sort_keys=True),
        "seed": r["seed"], "teacher_seed": r.get("teacher_seed", teacher.get("seed")),
        "status": r.get("status", "ok"), "reason": r.get("reason"),
        "teacher_checkpoint": "best" if teacher.get("checkpoint") == "best" else ("none" if not teacher else "model"),
    }
    if row["status"] in ("ok", "diverged"):
        row.update(best_acc=r["best_acc"], last_acc=r["last_acc"], best_epoch=r["best_epoch"],
                   extra_params=r.get("extra_params"), wall_time_s=r["provenance"].get("wall_time_s"),
                   per_class_acc_best=json.dumps(r["per_class_acc_best"]),
                   per_class_acc_last=json.dumps(r["per_class_acc_last"]),
                   confusion_best=json.dumps(r["confusion_best"]), confusion_last=json.dumps(r["confusion_last"]))
    return row


def _teacher_row(metrics_path: str, cmi_path: str | None, experiment: str) -> dict:
    from mcmikd.teachers import get_objective

    m = read_json(metrics_path)
    t = m["teacher"]
    seed = m.get("seed", m.get("provenance", {}).get("seed"))
    row = {"experiment": experiment, "role": "teacher", "file": metrics_path, "teacher_arch": t["arch"],
           "teacher_objective": t["objective"], "teacher_variant": t["variant"], "teacher_seed": seed,
           "teacher_label": get_objective(t["objective"]).describe(t["hp"]),
           "status": "collapsed" if m.get("collapsed") else "ok",
           "reason": m.get("collapse_reason"), "best_acc": m["best_acc"], "last_acc": m["last_acc"],
           "model_acc": m["model_acc"], "best_epoch": m["best_epoch"],
           "wall_time_s": m["provenance"].get("wall_time_s")}
    if cmi_path and Path(cmi_path).exists():
        c = read_json(cmi_path)
        row["train_acc"] = c["train"]["acc"]
        for t_, v in c["train"]["cmi"].items():
            row[f"cmi_T{float(t_):g}"] = v
        row["test_cmi"] = c["test"]["cmi"].get("1.0", c["test"]["cmi"].get("1"))
        if "train_augmented" in c:  # the official measurement: eval mode, augmented training images
            aug = c["train_augmented"]["cmi"]
            row["cmi_aug_T1"] = aug.get("1.0", aug.get("1"))
    return row


def collect_runs(student_files: list[str], teacher_files: list[str], experiment: str) -> pd.DataFrame:
    """One row per student run and per teacher seed (teacher files: metrics.json and cmi.json pairs, one pair per
    teachers/<arch>/<variant>/seed<t>/); column `teacher_seed` says which teacher seed a row is or learned from."""
    rows = [_student_row(f, experiment) for f in student_files]
    metrics = sorted(f for f in teacher_files if f.endswith("metrics.json"))
    for path in metrics:
        cmi = str(Path(path).with_name("cmi.json"))
        rows.append(_teacher_row(path, cmi if cmi in teacher_files else None, experiment))
    return pd.DataFrame(rows)


def read_runs(path: str) -> pd.DataFrame:
    """Read a runs table back with its text columns as text (omitted class sets such as '3' stay strings)."""
    frame = pd.read_csv(path, dtype={"omitted": str, "setting": str, "reason": str})
    frame["omitted"] = frame["omitted"].fillna("")
    return frame


def write_runs(student_files, teacher_files, experiment, output) -> None:
    frame = collect_runs(student_files, teacher_files, experiment)
    write_text(output, frame.to_csv(index=False))


# --------------------------------------------------------------------------------------------- formatting
def mean_std(values) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std, len(vals)


def fmt(mean: float, std: float | None = None, digits: int = 2, n: int | None = None) -> str:
    """`mean`, or `mean ± std`; with `n` = 1 (one seed: no spread to show) `mean (n = 1)` instead of '± 0.00'."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if n == 1:
        return f"{mean:.{digits}f} (n = 1)"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_delta(delta: float, digits: int = 2) -> str:
    return "–" if delta is None or math.isnan(delta) else f"{delta:+.{digits}f}"


def to_markdown(frame: pd.DataFrame, title: str | None = None) -> str:
    """A Markdown table, its footnotes (`frame.attrs['footnotes']`, e.g. "CMI not raised") below it."""
    cols = [str(c) for c in frame.columns]
    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(v) for v in row.values) + " |")
    for note in frame.attrs.get("footnotes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


_LATEX = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_"), ("±", r"$\pm$"),
          ("Δ", r"$\Delta$"), ("→", r"$\rightarrow$"), ("λ", r"$\lambda$"), ("–", "--"), ("−", "$-$")]


def _tex(text) -> str:
    out = str(text)
    for a, b in _LATEX:
        out = out.replace(a, b)
    return out


def to_latex(frame: pd.DataFrame, caption: str = "") -> str:
    """A booktabs tabular of the display frame (first column left-aligned, the rest centred)."""
    spec = "l" + "c" * (frame.shape[1] - 1)
    lines = [r"% generated by mcmikd.aggregate; needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_tex(c) for c in frame.columns) + r" \\",
              r"\midrule"]
    for _, row in frame.iterrows():
        lines.append(" & ".join(_tex(v) for v in row.values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\smallskip{{\footnotesize {_tex(note)}}}" for note in frame.attrs.get("footnotes", [])]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- tables
METHOD_LABELS = {"ce": "Student (no KD)", "kd": "KD", "fitnet": "FitNet", "at": "AT", "sp": "SP", "cc": "CC",
                 "vid": "VID", "rkd": "RKD", "pkt": "PKT", "ab": "AB", "ft": "FT", "fsp": "FSP", "nst": "NST",
                 "crd": "CRD", "dkd": "DKD", "reviewkd": "ReviewKD", "dist": "DIST",
                 "hsakd": "HSAKD"}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def cell(frame: pd.DataFrame, metric: str) -> dict:
    """mean ± std of a metric over the seeds in `frame`, or why nothing could be measured ('status' of the runs
    that did not finish: skipped for a collapsed teacher, diverged)."""
    finished = frame[frame["status"] == "ok"]
    mean, std, n = mean_std(finished[f"{metric}_acc"]) if len(finished) else (math.nan, math.nan, 0)
    return _with_failures({"mean": mean, "std": std, "n": n}, frame)


def per_class(frame: pd.DataFrame, metric: str, cls: int) -> dict:
    """Like `cell`, for the accuracy (recall) on class `cls`."""
    finished = frame[frame["status"] == "ok"]
    mean, std, n = mean_std([json.loads(v)[cls] for v in finished[f"per_class_acc_{metric}"]])
    return _with_failures({"mean": mean, "std": std, "n": n}, frame)


def _with_failures(result: dict, frame: pd.DataFrame) -> dict:
    failed = frame[frame["status"] != "ok"]
    result.update(skipped=len(failed), reason=failed["reason"].iloc[0] if len(failed) else None,
                  failure=failed["status"].iloc[0] if len(failed) else None)
    return result


def show(c: dict) -> str:
    """A cell's text: mean ± std over its finished seeds, with how many seeds did not finish (diverged, or skipped
    for a collapsed teacher), so that a mean over fewer seeds is never read as one over all of them."""
    failed = "diverged" if c.get("failure") == "diverged" else "collapsed teacher"
    if c["n"] == 0 and c["skipped"]:
        return failed
    text = fmt(c["mean"], c["std"], n=c["n"])
    if c.get("skipped"):
        text += f" [{c['skipped']} of {c['n'] + c['skipped']} seeds: {failed}]"
    return text


def pair_label(teacher: str, student: str) -> str:
    return f"{teacher} → {student}"


def compare_cells(frame: pd.DataFrame, method: str, layout: dict, metric: str, *, measure=cell,
                  prefix: str | None = None, delta_prefix: str | None = None,
                  flagged: dict | None = None, floor: dict | None = None) -> tuple[dict, list[dict]]:
    """One method's students compared across the layout's teacher objectives (the first is the reference).

    Returns the display cells — '<prefix>, <label>' per objective, then the gain(s) over the reference:
    '<prefix>, Δ' when two objectives are compared, '<prefix>, Δ <label>' per other objective when more, then for
    each objective whose control (`layout['controls']`, e.g. MCMI's λ = 0 fine-tuning) is compared too, its gain
    over the control: '<prefix>, Δ <label> vs <control label>' (the CMI term's own effect) — and the long rows
    {method, teacher_objective, mean, std, n, ..., delta, delta_control, cmi_not_raised}. Cells of students whose
    teacher is in `flagged` ((teacher arch, objective) → reason, `cmi_not_raised`) carry the `NOT_RAISED` mark.
    The teacher-free `ce` student is one cell.

    With `layout['not_working_margin']` (config `tables.not_working_margin`, points) and `floor` (the `cell` of the
    no-teacher CE student of the same student and setting), a method whose reference-teacher students' mean accuracy
    (`cell`, all classes, whatever `measure` is) is more than the margin below the floor is "not working at this
    setting" (`not_working_verdict`): its cells carry the `NOT_WORKING` mark, its gains are shown in [brackets],
    and its long rows get `not_working` True (False: checked and fine; None: not checked, no floor). Without the
    margin the rows have no `not_working` key."""
    name = method_label(method) if prefix is None else prefix
    if method == "ce":
        c = measure(frame, metric)
        return {name: show(c)}, [{"method": method, "teacher_objective": "none", **c}]
    objectives, labels = layout["objectives"], layout["labels"]
    controls = {o: k for o, k in layout.get("controls", {}).items() if o in objectives and k in objectives}
    head = name if delta_prefix is None else delta_prefix
    flagged = flagged or {}
    cells, deltas, rows, measured = {}, {}, [], {}
    margin = layout.get("not_working_margin")
    broken = not_working_verdict(cell(frame[frame["teacher_objective"] == objectives[0]], metric), floor, margin)
    mark, show_delta = (NOT_WORKING, bracketed) if broken else ("", fmt_delta)
    for objective in objectives:
        sel = frame[frame["teacher_objective"] == objective]
        c = measured[objective] = measure(sel, metric)
        marked = any((arch, objective) in flagged for arch in set(sel["teacher_arch"]))
        cells[f"{name}, {labels[objective]}"] = show(c) + (NOT_RAISED if marked else "") + mark
        row = {"method": method, "teacher_objective": objective, **c, "cmi_not_raised": marked}
        if margin is not None:
            row["not_working"] = broken
        if objective != objectives[0]:
            row["delta"] = c["mean"] - measured[objectives[0]]["mean"]
            d_name = "Δ" if len(objectives) == 2 else f"Δ {labels[objective]}"
            deltas[f"{head}, {d_name}" if head else d_name] = show_delta(row["delta"])
        rows.append(row)
    for row in rows:
        control = controls.get(row["teacher_objective"])
        if control is not None:
            row["delta_control"] = row["mean"] - measured[control]["mean"]
            d_name = f"Δ {labels[row['teacher_objective']]} vs {labels[control]}"
            deltas[f"{head}, {d_name}" if head else d_name] = show_delta(row["delta_control"])
    return {**cells, **deltas}, rows


# --------------------------------------------------------------------------------------------- not working
NOT_WORKING = " ‡"


def bracketed(delta: float) -> str:
    """A gain of a "not working" cell: shown, but in [brackets], not as a finding."""
    return f"[{fmt_delta(delta)}]"


def not_working_verdict(reference: dict, floor: dict | None, margin: float | None) -> bool | None:
    """Whether a method is "not working at this setting": its reference-teacher students' mean accuracy
    (`reference`, a `cell`, %) is more than `margin` points below the no-teacher CE student's (`floor`, a `cell`
    of the same student and setting). None when not checked: no margin (`tables.not_working_margin: null`), no
    floor, or either side without a finished run. Such a cell measures a loss weight that does not suit the
    setting, not the teacher, so its gains are not findings."""
    if margin is None or floor is None or not floor.get("n") or not reference.get("n"):
        return None
    return bool(reference["mean"] < floor["mean"] - float(margin))


def not_working_footnote(layout: dict, rows: list[dict],
                         floor_what: str = "the student trained without a teacher (same student, same setting)"
                         ) -> list[str]:
    """The footnote under a table checked for "not working" cells (`tables.not_working_margin`): what ‡ means, and
    that cells without a no-teacher student to compare with are not checked. [] when the margin is off or no row
    was checked or checkable."""
    margin = layout.get("not_working_margin")
    if margin is None:
        return []
    checked = [r for r in rows if r.get("method", r.get("row")) not in ("ce", "teacher") and "not_working" in r]
    if not checked:
        return []
    reference = layout["labels"].get(layout["objectives"][0], layout["objectives"][0])
    marked = any(r["not_working"] is True for r in checked)
    unchecked = any(r["not_working"] is None for r in checked)
    if marked:
        note = (f"{NOT_WORKING.strip()} method not working at this setting: the student distilled from the "
                f"{reference} teacher has a mean accuracy more than {float(margin):g} points "
                f"(tables.not_working_margin) below {floor_what}; such a cell measures a loss weight that does not "
                f"suit this setting, not the teacher, so its Δ are shown in [brackets] and are not findings (the "
                f"CSV keeps the numbers, column not_working).")
    else:
        note = (f"No cell is marked {NOT_WORKING.strip()} (method not working at this setting): no "
                f"{reference}-teacher student is more than {float(margin):g} points (tables.not_working_margin) "
                f"below {floor_what}.")
    if unchecked:
        note += (" Cells without a finished no-teacher student of the same student and setting in this table are "
                 "not checked (the mark is not applied to them).")
    return [note]


# --------------------------------------------------------------------------------------------- teacher rows
def teacher_seeds(teachers: pd.DataFrame) -> pd.Series:
    """The teacher seed of each teacher row (0 for rows written before teachers had seeds)."""
    if "teacher_seed" not in teachers:
        return pd.Series(0, index=teachers.index)
    return teachers["teacher_seed"].fillna(0).astype(int)


def teacher_cell(teachers: pd.DataFrame, column: str) -> dict:
    """mean ± std over the teacher seeds (rows of one teacher, e.g. one arch and objective) of a teacher column
    (`model_acc` in %, `cmi_T1` in nats, ...), as `cell` gives it for students (`show` prints it; n = 1: no
    spread); `collapsed`: how many of those seeds collapsed (their accuracy is still in the mean)."""
    values = teachers[column] if column in teachers else []
    mean, std, n = mean_std(values)
    collapsed = int((teachers["status"] == "collapsed").sum()) if "status" in teachers else 0
    return {"mean": mean, "std": std, "n": n, "skipped": 0, "reason": None, "failure": None, "collapsed": collapsed,
            "seeds": len(teachers)}


def teacher_fields(teachers: pd.DataFrame, acc_column: str = "model_acc") -> dict:
    """The teacher columns of a table row for one teacher (its rows over the teacher seeds): teacher_acc (%, from
    `acc_column`) and teacher_cmi (nats, train set, T = 1) as means over the seeds with their `_std`, teacher_n and
    teacher_seeds (seeds with a value, seeds in all) and collapsed (how many seeds collapsed); `teacher_of` reads
    them back as `teacher_cell`s."""
    acc, cmi = teacher_cell(teachers, acc_column), teacher_cell(teachers, "cmi_T1")
    return {"teacher_acc": acc["mean"], "teacher_acc_std": acc["std"], "teacher_cmi": cmi["mean"],
            "teacher_cmi_std": cmi["std"], "teacher_n": acc["n"], "teacher_seeds": acc["seeds"],
            "collapsed": acc["collapsed"]}


def teacher_of(row: dict, what: str) -> dict:
    """A row's (`teacher_fields`) teacher accuracy (`what` = "acc") or CMI ("cmi") as a `teacher_cell`."""
    return {"mean": row[f"teacher_{what}"], "std": row[f"teacher_{what}_std"], "n": row["teacher_n"],
            "collapsed": row["collapsed"], "seeds": row["teacher_seeds"]}


def show_teacher(c: dict, digits: int = 2) -> str:
    """A teacher cell: mean ± std over teacher seeds ('(n = 1)' for one), and how many seeds collapsed."""
    text = fmt(c["mean"], c["std"], digits=digits, n=c["n"])
    if c.get("collapsed"):
        text += " (collapsed)" if c["seeds"] == 1 else f" (collapsed: {c['collapsed']} of {c['seeds']} seeds)"
    return text


# --------------------------------------------------------------------------------------------- CMI not raised
NOT_RAISED = " †"


def cmi_not_raised(runs: pd.DataFrame, layout: dict) -> dict[tuple[str, str], str]:
    """The compared fine-tuned teachers whose measured CMI (cmi.json: training images, eval mode, T = 1, nats;
    runs-table column `cmi_T1`) is not above that of every teacher their objective must beat
    (`layout['must_raise']`, from `TeacherObjective.must_raise_cmi_over`; e.g. MCMI: its MLL start teacher and its
    λ = 0 control, ../shared/SPEC.md §8), checked per teacher seed (MCMI seed t against MLL seed t and the control
    seed t), as {(teacher arch, objective): why}, the why naming for how many of the checked seeds it failed. A
    teacher seed without a measured CMI, or one to beat that is not in the runs table, is not checked against it.
    Information only: such a teacher's students are still distilled."""
    teachers = runs[runs["role"] == "teacher"] if "role" in runs else runs.iloc[0:0]
    if "cmi_T1" not in teachers:
        return {}
    cmi = {}
    for seed, (_, t) in zip(teacher_seeds(teachers), teachers.iterrows()):
        cmi.setdefault((t["teacher_arch"], t["teacher_objective"]), {}).setdefault(seed, float(t["cmi_T1"]))
    labels, flagged = layout["labels"], {}
    for (arch, objective), per_seed in cmi.items():
        if objective not in layout["objectives"]:
            continue
        checked, failures = 0, []
        for seed, value in sorted(per_seed.items()):
            if math.isnan(value):
                continue
            beaten = [(o, cmi[(arch, o)][seed]) for o in layout.get("must_raise", {}).get(objective, [])
                      if seed in cmi.get((arch, o), {}) and not math.isnan(cmi[(arch, o)][seed])]
            if not beaten:
                continue
            checked += 1
            failed = [(o, v) for o, v in beaten if not value > v]
            if failed:
                failures.append(f"seed {seed}: {value:.4f} ≤ " + ", ".join(f"{labels.get(o, o)} {v:.4f}"
                                                                          for o, v in failed))
        if failures:
            flagged[(arch, objective)] = (
                f"{arch} {labels.get(objective, objective)} teacher: CMI not raised for {len(failures)} of {checked} "
                f"teacher seed{'s' if checked != 1 else ''} ({'; '.join(failures)})")
    return flagged


def not_raised_footnote(flagged: dict) -> list[str]:
    """The footnote under a table with marked cells (none when nothing is flagged)."""
    if not flagged:
        return []
    return [f"{NOT_RAISED.strip()} CMI not raised: the fine-tuned teacher's training CMI (T = 1, nats) is not above "
            f"that of every teacher it must beat, compared seed by seed ({' | '.join(flagged.values())}); its "
            f"students were still distilled from it."]


VALIDATION_NOTE = ("Evaluated on validation data: a seeded, stratified held-out part of the training set "
                   "(dataset.validation); the test set was not used. Accuracies and CMI called \"test\" in this run "
                   "are validation numbers.")


def write_table(runs_csv: str, experiment: str, layout: dict, metric: str, csv_out: str, md_out: str,
                tex_out: str) -> pd.DataFrame:
    """The experiment's table (`mcmikd.experiments`) as long numbers (CSV) and as displayed (Markdown, LaTeX)."""
    from mcmikd.experiments import get_experiment

    kind = get_experiment(experiment)
    numbers, display = kind.table(read_runs(runs_csv), layout, metric)
    caption = f"{kind.caption} ({metric}-epoch accuracy)."
    if layout.get("evaluated_on") == "validation":  # dataset.validation: no number here comes from the test set
        caption = caption.replace(" test ", " validation ")
        display.attrs["footnotes"] = [VALIDATION_NOTE, *display.attrs.get("footnotes", [])]
        numbers = numbers.assign(evaluated_on="validation")
    md, tex = to_markdown(display, caption), to_latex(display, caption)
    reference = layout.get("reference")
    if reference:  # the paper's numbers beside ours (mcmikd.references)
        from mcmikd.references import compare

        if reference["entries"]:
            numbers, rows = compare(numbers, reference["entries"])
            title = f"The paper's numbers beside ours ({metric}-epoch accuracy)"
            md += "\n" + to_markdown(pd.DataFrame(rows), title)
            tex += "\n" + to_latex(pd.DataFrame(rows), title)
        notes = [f"* The paper: {n}" for n in reference.get("notes", [])]
        notes += [f"* Differs from the paper: {d}" for d in reference.get("differences", [])]
        md += "\n" + "\n".join(notes) + "\n" if notes else ""
    write_text(csv_out, numbers.to_csv(index=False))
    write_text(md_out, md)
    write_text(tex_out, tex)
    return display


# --------------------------------------------------------------------------------------------- gains
def gain_summary(main_numbers: pd.DataFrame) -> pd.DataFrame:
    """Per framework and compared teacher objective, over the pairs of a main table (its CSV): the mean gain Δ over
    the reference (first) objective, on how many pairs Δ > 0, and on how many the gain or loss exceeds two standard
    errors of the difference of the seed means (√(s²_ref/n + s²/n)), a rough guide to which differences the seeds
    resolve."""
    students = main_numbers[~main_numbers["row"].isin(["teacher", "ce"])]
    rows = []
    for method, frame in students.groupby("row", sort=False):
        objectives = list(dict.fromkeys(frame["teacher_objective"]))
        ref = frame[frame["teacher_objective"] == objectives[0]].set_index("pair")
        for objective in objectives[1:]:
            other = frame[frame["teacher_objective"] == objective].set_index("pair")
            pairs = ref.index.intersection(other.index)
            delta = other.loc[pairs, "mean"] - ref.loc[pairs, "mean"]
            se = ((ref.loc[pairs, "std"].fillna(0) ** 2 / ref.loc[pairs, "n"])
                  + (other.loc[pairs, "std"].fillna(0) ** 2 / other.loc[pairs, "n"])) ** 0.5
            measured = delta.notna()
            rows.append({"Framework": method_label(method), "Teacher": f"{objective} − {objectives[0]}",
                         "pairs": int(measured.sum()),
                         "mean Δ": fmt_delta(delta[measured].mean()) if measured.any() else "–",
                         "Δ > 0": int((delta > 0).sum()),
                         "Δ > +2 s.e.": int((delta > 2 * se).sum()), "Δ < −2 s.e.": int((delta < -2 * se).sum())})
    return pd.DataFrame(rows)


def paired_gains(runs: pd.DataFrame, objectives: list[str], controls: dict[str, str], metric: str = "best",
                 margin: float | None = None) -> pd.DataFrame:
    """Seed-paired gains of every student cell of a runs table (`results/<name>/runs/<experiment>.csv`): per
    (teacher → student pair, setting, method) and per compared teacher objective, the gain of each student seed s
    over the student of the same seed distilled from the reference objective (`objectives[0]`) and from the
    objective's control (`controls`, e.g. MCMI → its λ = 0 fine-tuning) — student seed s learns from teacher seed
    s of every objective with the same student initialisation, so the per-seed difference removes the shared part
    of the seed variation. Columns: pair, setting, method, comparison ("mcmi − mll"), n (paired seeds), mean, std
    (of the per-seed gains, points of `metric`_acc %), se (std/√n), ci95 (half-width of the 95 % Student-t
    interval, t_{0.975, n−1}·se: a paired t-test), resolved ("+" / "−" when the interval excludes 0, else
    ""), not_working (with `margin`: the reference students' mean more than `margin` points below the no-teacher
    `ce` students' of the same student and setting, `not_working_verdict`; None when unchecked). Seeds of a student
    that did not finish (status not ok) are left out of that comparison."""
    from scipy.stats import t as student_t

    col = f"{metric}_acc"
    done = runs[runs["status"] == "ok"]
    students = done[(done["role"] == "student") & (done["method"] != "ce")]
    ce = done[(done["role"] == "student") & (done["method"] == "ce")]
    rows = []
    for (t_arch, student, setting, method), frame in students.groupby(
            ["teacher_arch", "student", "setting", "method"], sort=False):
        acc = frame.groupby(["teacher_objective", "seed"])[col].mean()
        present = set(acc.index.get_level_values(0))
        floor = ce[(ce["student"] == student) & (ce["setting"] == setting)]
        broken = not_working_verdict(cell(frame[frame["teacher_objective"] == objectives[0]], metric),
                                     cell(floor, metric) if len(floor) else None, margin)
        for objective in objectives[1:]:
            if objective not in present:
                continue
            for base in dict.fromkeys([objectives[0], controls.get(objective)]):
                if base is None or base == objective or base not in present:
                    continue
                diff = (acc[objective] - acc[base]).dropna()
                n = len(diff)
                mean = float(diff.mean()) if n else math.nan
                std = float(diff.std(ddof=1)) if n > 1 else math.nan
                se = std / math.sqrt(n) if n > 1 else math.nan
                ci95 = float(student_t.ppf(0.975, n - 1)) * se if n > 1 else math.nan
                resolved = "" if not n > 1 or abs(mean) <= ci95 else ("+" if mean > 0 else "−")
                rows.append({"pair": pair_label(t_arch, student), "setting": setting, "method": method,
                             "comparison": f"{objective} − {base}", "n": n, "mean": mean, "std": std, "se": se,
                             "ci95": ci95, "resolved": resolved, "not_working": broken})
    return pd.DataFrame(rows)


def paired_display(gains: pd.DataFrame) -> pd.DataFrame:
    """`paired_gains` as a Markdown-ready frame: one row per pair, setting and method, one column per comparison
    ("mean ± std (n)", a trailing "*" where the paired 95 % interval excludes 0, the cell in [brackets] where the method is not
    working at that setting)."""
    out = {}
    for _, g in gains.iterrows():
        key = (g["pair"], g["setting"], method_label(g["method"]))
        text = f"{fmt_delta(g['mean'])} ± {g['std']:.2f} ({g['n']})" if g["n"] > 1 else f"{fmt_delta(g['mean'])} (1)"
        text += " *" if g["resolved"] else ""
        out.setdefault(key, {})[g["comparison"]] = f"[{text}]" if g["not_working"] is True else text
    frame = pd.DataFrame([{"Pair": k[0], "Setting": k[1], "Framework": k[2], **v} for k, v in out.items()])
    return frame.fillna("–")


def _paired_main(argv: list[str]) -> int:
    import argparse

    from mcmikd.teachers import get_objective

    ap = argparse.ArgumentParser(prog="python -m mcmikd.aggregate paired", description=paired_gains.__doc__.split(
        "\n")[0])
    ap.add_argument("runs", nargs="+", help="results/<name>/runs/<experiment>.csv (main, fewshot)")
    ap.add_argument("--config", required=True,
                    help="the run's config: its teachers.objectives (the reference first), tables.metric and "
                         "tables.not_working_margin")
    args = ap.parse_args(argv)
    import yaml

    from mcmikd.config import load_grid

    # the config validated with the workflow's schema, so its defaults (tables.metric, …) are the run's
    schema = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
    config = load_grid(yaml.safe_load(Path(args.config).read_text()), schema).config
    objectives = list(config["teachers"]["objectives"])
    metric, margin = config["tables"]["metric"], config["tables"].get("not_working_margin")
    controls = {o: get_objective(o).control for o in objectives if get_objective(o).control}
    gains = paired_gains(pd.concat([pd.read_csv(f) for f in args.runs], ignore_index=True), objectives,
                         controls, metric, margin)
    print(to_markdown(paired_display(gains)))
    print("mean ± std (n) over seeds of the per-seed gain (student seed s ↔ teacher seed s), points of "
          f"{metric}-epoch top-1 %; * the 95 % paired t-interval excludes 0; [ ]: method not working at this setting.")
    return 0


if __name__ == "__main__":
    import sys

    if len(sys.argv) >= 2 and sys.argv[1] == "paired":
        sys.exit(_paired_main(sys.argv[2:]))
    if len(sys.argv) != 3 or sys.argv[1] != "gains":
        sys.exit("usage: python -m mcmikd.aggregate gains results/<name>/tables/main.csv\n"
                 "       python -m mcmikd.aggregate paired results/<name>/runs/main.csv [...] --config <config>")
    print(to_markdown(gain_summary(pd.read_csv(sys.argv[2]))))
