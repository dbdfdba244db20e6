"""From result files to the paper's tables: a long runs table per experiment, then CSV, Markdown and LaTeX.

`collect_runs` turns the JSON results of one experiment (students, and the teachers they used) into one row
per run. The table builders reduce those rows to the paper's layouts, mean ± std over seeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from mcmikd.io import damaged_error, read_json, write_text


# --------------------------------------------------------------------------------------------- collection
def _machine(result: dict) -> str | None:
    """The machine a result was computed on (`mcmikd.machine.describe` of its provenance), None before it was
    recorded."""
    from mcmikd.machine import describe

    prov = result.get("provenance") or {}
    fp = prov.get("machine")
    if not fp:
        return None
    return f"{prov['gpu']} ({prov.get('device')}), host {describe(fp)}" if prov.get("gpu") else describe(fp)


def _number(path: str, record: dict, key: str, low: float | None = None, high: float | None = None,
            integer: bool = False):
    """`record[key]` when it is a finite number (an integer with `integer`) within [low, high]; otherwise the file is
    damaged (one line naming the field and the repair): a result never loses a seed or gains a value silently."""
    value = record.get(key) if isinstance(record, dict) else None
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (not integer or float(value).is_integer()) and (low is None or value >= low)
          and (high is None or value <= high))
    if not ok:
        span = f" in [{low:g}, {high:g}]" if low is not None and high is not None else ""
        kind = "an integer" if integer else f"a finite number{span}"
        raise damaged_error(path, f"field '{key}' is {value!r}, not {kind}")
    return value


def _checked_accuracies(path: str, r: dict) -> None:
    for key in ("best_acc", "last_acc"):
        _number(path, r, key, 0, 100)
    _number(path, r, "best_epoch", 0, None, integer=True)
    from mcmikd.confusion import check as check_confusion

    for key in ("confusion_best", "confusion_last"):
        if key in r:
            try:
                check_confusion(r[key])
            except ValueError as err:
                raise damaged_error(path, f"field '{key}': {err}") from None


def _student_row(path: str, experiment: str) -> dict:
    r = read_json(path)
    if not isinstance(r, dict):
        raise damaged_error(path, "not a result record (a JSON object)")
    _number(path, r, "seed", 0, None, integer=True)
    if r.get("status", "ok") == "ok":  # a diverged run may hold a non-finite (null) accuracy: its status says so
        _checked_accuracies(path, r)
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
        "machine": _machine(r),
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
    if not isinstance(m, dict):
        raise damaged_error(metrics_path, "not a result record (a JSON object)")
    if not m.get("collapsed"):  # a collapsed teacher may hold non-finite numbers: its flag says so
        _checked_accuracies(metrics_path, m)
        _number(metrics_path, m, "model_acc", 0, 100)
    t = m["teacher"]
    seed = m.get("seed", m.get("provenance", {}).get("seed"))
    row = {"experiment": experiment, "role": "teacher", "file": metrics_path, "teacher_arch": t["arch"],
           "teacher_objective": t["objective"], "teacher_variant": t["variant"], "teacher_seed": seed,
           "teacher_label": get_objective(t["objective"]).describe(t["hp"]),
           "status": "collapsed" if m.get("collapsed") else "ok",
           "reason": m.get("collapse_reason"), "best_acc": m["best_acc"], "last_acc": m["last_acc"],
           "model_acc": m["model_acc"], "best_epoch": m["best_epoch"],
           "wall_time_s": m["provenance"].get("wall_time_s"), "machine": _machine(m)}
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
    """Read a runs table back with its text columns as text (omitted class sets such as '3' stay strings); a table
    of teacher rows only (no student finished) has no `omitted` column in the file and gets an empty one."""
    frame = pd.read_csv(path, dtype={"omitted": str, "setting": str, "reason": str})
    frame["omitted"] = frame["omitted"].fillna("") if "omitted" in frame else ""
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
    no-teacher CE student of the same student and setting), every compared arm is judged alike
    (`not_working_verdict`: its students' mean accuracy, all classes, whatever `measure` is, more than the margin
    below the floor): an arm that is "not working at this setting" carries the `NOT_WORKING` mark and its long row
    `not_working` True (False: checked and fine; None: not checked, no floor). A gain between two arms is a finding
    unless both arms are not working; then it is shown in [brackets] and its long row says so (`delta_bracketed`,
    `delta_control_bracketed`). Without the margin the rows have no `not_working` key."""
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
    broken = {o: not_working_verdict(cell(frame[frame["teacher_objective"] == o], metric), floor, margin)
              for o in objectives}

    def show_gain(a: str, b: str, delta: float) -> tuple[str, bool]:
        both = bool(broken[a]) and bool(broken[b])
        return (bracketed if both else fmt_delta)(delta), both

    for objective in objectives:
        sel = frame[frame["teacher_objective"] == objective]
        c = measured[objective] = measure(sel, metric)
        marked = any((arch, objective) in flagged for arch in set(sel["teacher_arch"]))
        cells[f"{name}, {labels[objective]}"] = (show(c) + (NOT_RAISED if marked else "")
                                                 + (NOT_WORKING if broken[objective] else ""))
        row = {"method": method, "teacher_objective": objective, **c, "cmi_not_raised": marked}
        if margin is not None:
            row["not_working"] = broken[objective]
        if objective != objectives[0]:
            row["delta"] = c["mean"] - measured[objectives[0]]["mean"]
            d_name = "Δ" if len(objectives) == 2 else f"Δ {labels[objective]}"
            deltas[f"{head}, {d_name}" if head else d_name], row["delta_bracketed"] = show_gain(
                objective, objectives[0], row["delta"])
        rows.append(row)
    for row in rows:
        control = controls.get(row["teacher_objective"])
        if control is not None:
            row["delta_control"] = row["mean"] - measured[control]["mean"]
            d_name = f"Δ {labels[row['teacher_objective']]} vs {labels[control]}"
            deltas[f"{head}, {d_name}" if head else d_name], row["delta_control_bracketed"] = show_gain(
                row["teacher_objective"], control, row["delta_control"])
    return {**cells, **deltas}, rows


# --------------------------------------------------------------------------------------------- not working
NOT_WORKING = " ‡"


def bracketed(delta: float) -> str:
    """A gain of a "not working" cell: shown, but in [brackets], not as a finding."""
    return f"[{fmt_delta(delta)}]"


def not_working_verdict(reference: dict, floor: dict | None, margin: float | None) -> bool | None:
    """Whether one arm of a method (the students of one teacher) is "not working at this setting": its students'
    mean accuracy (`reference`, a `cell`, %) is more than `margin` points below the no-teacher CE student's
    (`floor`, a `cell` of the same student and setting). None when not checked: no margin
    (`tables.not_working_margin: null`), no floor, or either side without a finished run. Every compared arm is
    judged by this same rule; a gain between two arms that both fail it is not a finding."""
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
    marked = any(r["not_working"] is True for r in checked)
    unchecked = any(r["not_working"] is None for r in checked)
    if marked:
        note = (f"{NOT_WORKING.strip()} method not working at this setting with this teacher: the students' mean "
                f"accuracy is more than {float(margin):g} points (tables.not_working_margin) below {floor_what}; "
                f"every compared teacher's students are judged alike. A gain between two such cells measures a loss "
                f"weight that does not suit this setting, not the teacher: it is shown in [brackets] and is not a "
                f"finding; a gain with one working side is (the CSV keeps the numbers, column not_working).")
    else:
        note = (f"No cell is marked {NOT_WORKING.strip()} (method not working at this setting): no student of any "
                f"compared teacher is more than {float(margin):g} points (tables.not_working_margin) below "
                f"{floor_what}.")
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
    λ = 0 control; docs/paper.md, "What fine-tuning with frozen centroids does"), checked per teacher seed (MCMI seed t
    against MLL seed t and the control
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
                tex_out: str, gains_out: str | None = None) -> pd.DataFrame:
    """The experiment's table (`mcmikd.experiments`) as long numbers (CSV) and as displayed (Markdown, LaTeX), at the
    primary `metric` (`tables.metric`: last epoch by default), with the table at the other epoch choice beside it in
    the Markdown and LaTeX (best epoch: selected on the test set, as the official logs); for kinds with seed-paired
    gains (`Experiment.gains`) their tables at both metrics too (Markdown), every number in `gains_out` (CSV)."""
    from mcmikd.experiments import get_experiment

    kind = get_experiment(experiment)
    runs = read_runs(runs_csv)
    other = "best" if metric == "last" else "last"
    numbers, display = kind.table(runs, layout, metric)
    tables = [(metric, display)] + ([(other, kind.table(runs, layout, other)[1])] if kind.has_students else [])
    md, tex = "", ""
    for i, (which, shown) in enumerate(tables):
        caption = f"{kind.caption} ({which}-epoch accuracy" + (", selected on the test set" if which == "best" else "")
        caption += (")." if i == 0 else "; beside the primary table above).")
        if layout.get("evaluated_on") == "validation":  # dataset.validation: no number here comes from the test set
            caption = caption.replace(" test ", " validation ").replace("test set", "validation set")
            shown.attrs["footnotes"] = [VALIDATION_NOTE, *shown.attrs.get("footnotes", [])]
        md += ("\n" if i else "") + to_markdown(shown, caption)
        tex += ("\n" if i else "") + to_latex(shown, caption)
    if layout.get("evaluated_on") == "validation":
        numbers = numbers.assign(evaluated_on="validation")
    reference = layout.get("reference")
    if reference:  # the paper's numbers beside ours (mcmikd.references), at the paper's epoch choice
        from mcmikd.references import compare

        by_metric: dict[str, list] = {}
        for entry in reference["entries"]:
            by_metric.setdefault(entry.get("metric", reference.get("metric", "best")), []).append(entry)
        for paper_metric, entries in by_metric.items():
            at_paper = numbers if paper_metric == metric else kind.table(runs, layout, paper_metric)[0]
            at_paper, rows = compare(at_paper, entries)
            hit = at_paper["paper"].notna()
            for column, values in (("paper", at_paper["paper"]), ("paper_metric", paper_metric),
                                   ("ours_at_paper_metric", at_paper["mean"]),
                                   ("ours_minus_paper", at_paper["ours_minus_paper"])):
                if column not in numbers:
                    numbers[column] = math.nan if column != "paper_metric" else None
                numbers.loc[hit.values, column] = values[hit].values if hasattr(values, "values") else values
            title = f"The paper's numbers beside ours ({paper_metric}-epoch accuracy, the paper's choice)"
            md += "\n" + to_markdown(pd.DataFrame(rows), title)
            tex += "\n" + to_latex(pd.DataFrame(rows), title)
        notes = [f"* The paper: {n}" for n in reference.get("notes", [])]
        notes += [f"* Differs from the paper: {d}" for d in reference.get("differences", [])]
        md += "\n" + "\n".join(notes) + "\n" if notes else ""
    if gains_out is not None:
        extra = None
        if kind.has_students and layout.get("objectives"):  # is there room for a better teacher? (mcmikd.headroom)
            from mcmikd.headroom import headroom, headroom_markdown

            extra = headroom(runs, layout["objectives"][0], metric)
            room = headroom_markdown(extra, metric)
            md += ("\n" + room) if room else ""
            extra = extra.assign(metric=metric, level="headroom") if len(extra) else None
        gains_md = write_gains(runs, layout, [metric, other], kind.gains == "classes", gains_out, extra) \
            if kind.gains else write_gains(runs.iloc[0:0], layout, [], False, gains_out, extra)
        md += ("\n" + gains_md) if gains_md else ""
    write_text(csv_out, numbers.to_csv(index=False))
    write_text(md_out, md)
    write_text(tex_out, tex)
    return display


# --------------------------------------------------------------------------------------------- gains
def student_values(runs: pd.DataFrame, metric: str, classes: bool = False) -> pd.DataFrame:
    """One row per finished student run and measure: pair, student, setting, method, teacher_objective, seed,
    teacher_seed, measure ("top-1", and with `classes` "class <c> recall" for each class omitted from its data) and
    value (points of `metric`-epoch accuracy %)."""
    done = runs[(runs["role"] == "student") & (runs["status"] == "ok")] if len(runs) else runs
    rows = []
    for _, r in done.iterrows():
        base = {"pair": pair_label(r["teacher_arch"], r["student"]), "teacher_arch": r["teacher_arch"],
                "student": r["student"], "setting": str(r["setting"]), "method": r["method"],
                "teacher_objective": r["teacher_objective"], "seed": int(r["seed"]),
                "teacher_seed": int(r["teacher_seed"]) if "teacher_seed" in r and not pd.isna(r["teacher_seed"])
                else int(r["seed"])}
        rows.append({**base, "measure": "top-1", "value": float(r[f"{metric}_acc"])})
        omitted = str(r.get("omitted") or "")
        if classes and omitted and omitted != "nan":
            per = json.loads(r[f"per_class_acc_{metric}"])
            rows += [{**base, "measure": f"class {c} recall", "value": float(per[int(c)])} for c in omitted.split(".")]
    columns = ["pair", "teacher_arch", "student", "setting", "method", "teacher_objective", "seed", "teacher_seed",
               "measure", "value"]
    return pd.DataFrame(rows, columns=columns)


def paired_gains(runs: pd.DataFrame, objectives: list[str], controls: dict[str, str], metric: str = "last",
                 margin: float | None = None, classes: bool = False) -> pd.DataFrame:
    """Seed-paired gains of every student cell of a runs table (`results/<name>/runs/<experiment>.csv`): per
    (teacher → student pair, setting, method, measure) and per compared teacher objective, the gain of each student
    seed s over the student of the same seed distilled from the reference objective (`objectives[0]`) and from the
    objective's control (`controls`, e.g. MCMI → its λ = 0 fine-tuning) — student seed s learns from teacher seed s
    of every objective with the same student initialisation, so the per-seed difference removes the shared part of
    the seed variation. Measures: top-1 accuracy, and with `classes` the recall of each omitted class (zero-shot).

    Columns (points of `metric`-epoch accuracy %): pair, setting, method, measure, comparison ("mcmi − mll"), n
    (paired seeds), mean, std, se, ci95 (half-width of the 95 % paired t-interval), p (two-sided paired t-test),
    p_holm (Holm-adjusted over every comparison of the table that is a finding), q_bh (Benjamini–Hochberg), mde
    (minimal detectable effect at this n and std, `mcmikd.stats.mde`), zero_width, resolved ("+"/"−" per
    `mcmikd.stats.resolved`: ≥ 3 seeds, an interval with width, p_holm < 0.05; else ""), not_working (with `margin`:
    both arms' students more than `margin` points below the no-teacher `ce` students of the same student and setting
    — every arm judged alike, `not_working_verdict`; such a gain is not a finding and is left out of the Holm
    family; None when unchecked), per_seed (JSON {teacher seed: gain, averaged over its student seeds}, for
    `pooled_gains`). Seeds of a student that did not finish are left out of that comparison."""
    from mcmikd import stats

    values = student_values(runs, metric, classes)
    done = runs[(runs["role"] == "student") & (runs["status"] == "ok")] if len(runs) else runs
    rows = []
    students = values[values["method"] != "ce"]
    for (t_arch, student, setting, method, measure), frame in students.groupby(
            ["teacher_arch", "student", "setting", "method", "measure"], sort=False):
        acc = frame.groupby(["teacher_objective", "seed"])["value"].mean()
        teacher_seed = frame.groupby("seed")["teacher_seed"].first()
        present = set(acc.index.get_level_values(0))
        floor_runs = done[(done["method"] == "ce") & (done["student"] == student)
                          & (done["setting"].astype(str) == setting)] if len(done) else done
        arms = done[(done["method"] == method) & (done["teacher_arch"] == t_arch) & (done["student"] == student)
                    & (done["setting"].astype(str) == setting)] if len(done) else done
        floor = cell(floor_runs, metric) if len(floor_runs) else None
        broken = {o: not_working_verdict(cell(arms[arms["teacher_objective"] == o], metric), floor, margin)
                  for o in present}
        for objective in objectives[1:]:
            if objective not in present:
                continue
            for base in dict.fromkeys([objectives[0], controls.get(objective)]):
                if base is None or base == objective or base not in present:
                    continue
                diff = (acc[objective] - acc[base]).dropna()
                t = stats.paired(diff.values)
                by_teacher = diff.groupby(teacher_seed.reindex(diff.index).values).mean()
                verdicts = (broken[objective], broken[base])
                both = None if None in verdicts else all(verdicts)  # not a finding only when both arms fail
                rows.append({"pair": pair_label(t_arch, student), "setting": setting, "method": method,
                             "measure": measure, "comparison": f"{objective} − {base}", "n": t["n"],
                             "mean": t["mean"], "std": t["std"], "se": t["se"], "ci95": t["ci"], "p": t["p"],
                             "mde": stats.mde(t["std"], t["n"]), "zero_width": t["zero_width"],
                             "not_working": both,
                             "per_seed": json.dumps({str(int(k)): float(v) for k, v in by_teacher.items()})})
    columns = ["pair", "setting", "method", "measure", "comparison", "n", "mean", "std", "se", "ci95", "p", "p_holm",
               "q_bh", "mde", "zero_width", "resolved", "not_working", "per_seed"]
    if not rows:
        return pd.DataFrame(columns=columns)
    gains = pd.DataFrame(rows)
    finding = gains["not_working"] != True  # noqa: E712  (None: unchecked, counts)
    family = [p if f else math.nan for p, f in zip(gains["p"], finding)]
    gains["p_holm"], gains["q_bh"] = stats.holm(family), stats.benjamini_hochberg(family)
    gains["resolved"] = [stats.resolved(n, z, p, m) if f else "" for n, z, p, m, f in
                         zip(gains["n"], gains["zero_width"], gains["p_holm"], gains["mean"], finding)]
    return gains[columns]


def pooled_gains(gains: pd.DataFrame) -> pd.DataFrame:
    """The pooled estimate of each comparison (and measure kind: top-1, or omitted-class recall) over the cells of a
    table that are findings, with the **teacher seed as the unit**: per teacher seed, the mean over cells of that
    seed's gain; then a one-sample t-interval over the teacher seeds (`mcmikd.stats.paired`). This is the summary-
    measures form of a mixed model with a random teacher-seed effect (exact for a balanced design); a bootstrap over
    3 teacher seeds would have 10 distinct resamples and undercover, so none is used. A cell without every teacher
    seed (a student that did not finish) is left out of the pool (balanced). Columns: comparison, measure, cells,
    left_out, seeds, mean, ci95, p, mde (of the
    pooled estimate), resolved (≥ 3 seeds, width, p < 0.05: one test per comparison and measure), cell_mde (the
    table's minimal detectable effect per cell: its root-mean-square per-seed std at its median n)."""
    from mcmikd import stats

    rows = []
    if not len(gains):
        return pd.DataFrame(columns=["comparison", "measure", "cells", "left_out", "seeds", "mean", "ci95", "p",
                                     "mde", "resolved", "cell_mde"])
    kind = gains["measure"].map(lambda m: "top-1" if m == "top-1" else "omitted-class recall")
    for (comparison, measure), frame in gains[gains["not_working"] != True].groupby(  # noqa: E712
            ["comparison", kind[gains["not_working"] != True]], sort=False):  # noqa: E712
        per_seed = [json.loads(v) for v in frame["per_seed"]]
        seeds = sorted(set().union(*per_seed), key=int) if per_seed else []
        complete = [p for p in per_seed if set(p) == set(seeds)]  # a cell missing a seed is left out, not the seed
        unit = [sum(p[s] for p in complete) / len(complete) for s in seeds] if complete else []
        t = stats.paired(unit)
        spread = frame["std"].dropna()
        cell_std = math.sqrt((spread ** 2).mean()) if len(spread) else math.nan
        rows.append({"comparison": comparison, "measure": measure, "cells": len(complete),
                     "left_out": len(per_seed) - len(complete), "seeds": len(seeds),
                     "mean": t["mean"], "ci95": t["ci"], "p": t["p"], "mde": stats.mde(t["std"], t["n"]),
                     "resolved": stats.resolved(t["n"], t["zero_width"], t["p"], t["mean"]),
                     "cell_mde": stats.mde(cell_std, int(frame["n"].median()) if len(frame) else 0)})
    return pd.DataFrame(rows)


GAINS_LEGEND = (
    "Seed-paired gains, points of {metric}-epoch top-1 % (or of the omitted class's recall): mean ± std (paired seeds) "
    "of the per-seed gain (student seed s learns from teacher seed s of every teacher, from the same student "
    "initialisation). `*` resolved: ≥ 3 seeds, an interval with width, and the paired t-test significant at 5 % "
    "after Holm's correction over every gain of this table; `zero width`: every seed gave the same gain (accuracy "
    "moves in steps of one test image), never counted; `n < 3`: shown, never counted; [ ]: both students of the "
    "comparison are more than tables.not_working_margin points below the no-teacher student (not a finding).")
POOLED_LEGEND = (
    "Pooled over the table's cells that are findings, the teacher seed as the unit (per teacher seed the mean gain "
    "over cells, then a t-interval over the teacher seeds; `mcmikd.aggregate.pooled_gains`): mean [95 % interval], "
    "`*` where it excludes 0 with ≥ 3 seeds. MDE pooled: the smallest pooled effect these seeds detect (80 % power); "
    "MDE per cell: the same for one cell at the table's typical spread and seed count — a true gain below it is "
    "likely to go unresolved.")


def _gain_text(g) -> str:
    if g["n"] < 1 or pd.isna(g["mean"]):
        return "–"
    if g["n"] == 1:
        text = f"{fmt_delta(g['mean'])} (1, n < 3)"
    else:
        text = f"{fmt_delta(g['mean'])} ± {g['std']:.2f} ({g['n']}" + (", n < 3" if g["n"] < 3 else "") + \
               (", zero width" if g["zero_width"] else "") + ")"
    text += " *" if g["resolved"] else ""
    return f"[{text}]" if g["not_working"] is True else text


def paired_display(gains: pd.DataFrame) -> pd.DataFrame:
    """`paired_gains` as a Markdown-ready frame: one row per pair, setting, method and measure, one column per
    comparison (`_gain_text`: "mean ± std (n)", `*` resolved, notes for n < 3 and zero width, [bracketed] when not a
    finding); each cell's MDE is in the CSV (`mde`)."""
    out = {}
    for _, g in gains.iterrows():
        key = (g["pair"], g["setting"], method_label(g["method"]), g["measure"])
        out.setdefault(key, {})[g["comparison"]] = _gain_text(g)
    frame = pd.DataFrame([{"Pair": k[0], "Setting": k[1], "Framework": k[2], "Measure": k[3], **v}
                          for k, v in out.items()])
    if len(frame) and (frame["Measure"] == "top-1").all():
        frame = frame.drop(columns="Measure")
    return frame.fillna("–")


def pooled_display(pooled: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, p in pooled.iterrows():
        interval = ("–" if pd.isna(p["ci95"]) else
                    f"[{fmt_delta(p['mean'] - p['ci95'])}, {fmt_delta(p['mean'] + p['ci95'])}]")
        cells = f"{p['cells']}" + (f" ({p['left_out']} left out: a seed missing)" if p["left_out"] else "")
        rows.append({"Comparison": p["comparison"], "Measure": p["measure"], "Cells": cells,
                     "Teacher seeds": p["seeds"],
                     "Pooled gain": f"{fmt_delta(p['mean'])} {interval}" + (" *" if p["resolved"] else ""),
                     "MDE pooled": "–" if pd.isna(p["mde"]) else f"{p['mde']:.2f}",
                     "MDE per cell": "–" if pd.isna(p["cell_mde"]) else f"{p['cell_mde']:.2f}"})
    return pd.DataFrame(rows)


def gains_markdown(gains: pd.DataFrame, pooled: pd.DataFrame, metric: str, title: str | None = None) -> str:
    """The gains and pooled tables with their legends (empty string when there is no gain)."""
    if not len(gains):
        return ""
    text = to_markdown(paired_display(gains), title) + "\n" + GAINS_LEGEND.format(metric=metric) + "\n"
    if len(pooled):
        text += "\n" + to_markdown(pooled_display(pooled)) + "\n" + POOLED_LEGEND + "\n"
    return text


def write_gains(runs: pd.DataFrame, layout: dict, metrics: list[str], classes: bool, csv_out: str,
                extra: pd.DataFrame | None = None) -> str:
    """The seed-paired gains and pooled estimates of an experiment at each of `metrics` (the first is the primary):
    every number to `csv_out` (columns `metric` and `level`: cell / pooled, and the `extra` rows, e.g. level
    headroom), and their Markdown (returned)."""
    objectives = layout["objectives"]
    controls = {o: k for o, k in layout.get("controls", {}).items() if o in objectives and k in objectives}
    frames, md = [], []
    for i, metric in enumerate(metrics):
        gains = paired_gains(runs, objectives, controls, metric, layout.get("not_working_margin"), classes)
        pooled = pooled_gains(gains)
        frames += [gains.assign(metric=metric, level="cell"), pooled.assign(metric=metric, level="pooled")]
        label = f"{metric} epoch" + (", selected on the test set" if metric == "best" else "")
        title = f"Seed-paired gains ({label})" + ("" if i == 0 else ", beside the primary table above")
        md.append(gains_markdown(gains, pooled, metric, title))
    frames += [extra] if extra is not None else []
    write_text(csv_out, pd.concat([f for f in frames if len(f)] or [pd.DataFrame()],
                                  ignore_index=True).to_csv(index=False))
    return "\n".join(m for m in md if m)


def paired_main(argv: list[str]) -> int:
    """`mcmikd paired RUNS... --config C` (also `python -m mcmikd.aggregate paired ...`): print the seed-paired gains
    (`paired_gains`) and their pooled estimates (`pooled_gains`) of one or more runs tables; returns 0. A bad config
    raises ConfigError (one line)."""
    import argparse

    from mcmikd.teachers import get_objective

    ap = argparse.ArgumentParser(prog="mcmikd paired", description=paired_gains.__doc__.split(
        "\n")[0])
    ap.add_argument("runs", nargs="+", help="results/<name>/runs/<experiment>.csv (main, fewshot)")
    ap.add_argument("--config", required=True,
                    help="the run's config: its teachers.objectives (the reference first), tables.metric and "
                         "tables.not_working_margin")
    ap.add_argument("--classes", action="store_true", help="also the recall of each omitted class (zero-shot)")
    args = ap.parse_args(argv)
    import yaml

    from mcmikd.config import load_grid, schema_path

    # the config validated with the workflow's schema, so its defaults (tables.metric, …) are the run's
    config = load_grid(yaml.safe_load(Path(args.config).read_text()), schema_path()).config
    objectives = list(config["teachers"]["objectives"])
    metric, margin = config["tables"]["metric"], config["tables"].get("not_working_margin")
    controls = {o: get_objective(o).control for o in objectives if get_objective(o).control}
    gains = paired_gains(pd.concat([read_runs(f) for f in args.runs], ignore_index=True), objectives,
                         controls, metric, margin, args.classes)
    print(gains_markdown(gains, pooled_gains(gains), metric) or "no paired student cells")
    return 0


if __name__ == "__main__":
    import sys

    if len(sys.argv) >= 2 and sys.argv[1] == "paired":
        sys.exit(paired_main(sys.argv[2:]))
    sys.exit("usage: python -m mcmikd.aggregate paired results/<name>/runs/main.csv [...] --config <config>")
