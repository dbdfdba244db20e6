"""From result files to the paper's tables: a long runs table per experiment, then CSV, Markdown and LaTeX.

`collect_runs` turns the JSON results of one experiment (students, and the teachers they used) into one row
per run. The table builders reduce those rows to the paper's layouts, mean ± std over seeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from mcmikd.config import parse_setting
from mcmikd.io import read_json, write_text

TEACHER_LABEL = {"mll": "MLL", "mcmi": "MCMI", "none": "none"}


# --------------------------------------------------------------------------------------------- collection
def _student_row(path: str, experiment: str) -> dict:
    r = read_json(path)
    teacher = r.get("teacher") or {}
    setting = parse_setting(Path(path).parent.name)
    hp = r.get("provenance", {}).get("config", {}).get("hp", {})
    row = {
        "experiment": experiment, "role": "student", "file": path,
        "teacher_arch": teacher.get("arch", "none"), "teacher_kind": teacher.get("kind", "none"),
        "lambda": teacher.get("lambda"), "student": r["student"], "method": r["method"],
        "setting": Path(path).parent.name, "fraction": setting.get("fraction", 1.0),
        "omitted": ".".join(str(c) for c in setting.get("omitted", [])),
        "temperature": setting.get("temperature", hp.get("temperature")),
        "seed": r["seed"], "status": r.get("status", "ok"), "reason": r.get("reason"),
    }
    if row["status"] == "ok":
        row.update(best_acc=r["best_acc"], last_acc=r["last_acc"], best_epoch=r["best_epoch"],
                   extra_params=r.get("extra_params"), wall_time_s=r["provenance"].get("wall_time_s"),
                   per_class_acc_best=json.dumps(r["per_class_acc_best"]),
                   per_class_acc_last=json.dumps(r["per_class_acc_last"]),
                   confusion_best=json.dumps(r["confusion_best"]), confusion_last=json.dumps(r["confusion_last"]))
    return row


def _teacher_row(metrics_path: str, cmi_path: str | None, experiment: str) -> dict:
    m = read_json(metrics_path)
    t = m["teacher"]
    row = {"experiment": experiment, "role": "teacher", "file": metrics_path, "teacher_arch": t["arch"],
           "teacher_kind": t["kind"], "lambda": t["lambda"], "status": "collapsed" if m.get("collapsed") else "ok",
           "reason": m.get("collapse_reason"), "best_acc": m["best_acc"], "last_acc": m["last_acc"],
           "model_acc": m["model_acc"], "best_epoch": m["best_epoch"],
           "wall_time_s": m["provenance"].get("wall_time_s")}
    if cmi_path and Path(cmi_path).exists():
        c = read_json(cmi_path)
        row["train_acc"] = c["train"]["acc"]
        for t_, v in c["train"]["cmi"].items():
            row[f"cmi_T{float(t_):g}"] = v
        row["test_cmi"] = c["test"]["cmi"].get("1.0", c["test"]["cmi"].get("1"))
    return row


def collect_runs(student_files: list[str], teacher_files: list[str], experiment: str) -> pd.DataFrame:
    """One row per student run and per teacher (teacher files: metrics.json and cmi.json pairs)."""
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


def fmt(mean: float, std: float | None = None, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_delta(delta: float, digits: int = 2) -> str:
    return "–" if delta is None or math.isnan(delta) else f"{delta:+.{digits}f}"


def to_markdown(frame: pd.DataFrame, title: str | None = None) -> str:
    cols = [str(c) for c in frame.columns]
    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(v) for v in row.values) + " |")
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
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- tables
METHOD_LABELS = {"ce": "Student (no KD)", "kd": "KD", "fitnet": "FitNet", "at": "AT", "sp": "SP", "cc": "CC",
                 "vid": "VID", "rkd": "RKD", "pkt": "PKT", "ab": "AB", "ft": "FT", "fsp": "FSP", "nst": "NST",
                 "crd": "CRD", "dkd": "DKD", "reviewkd": "ReviewKD", "dist": "DIST"}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _students(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["role"] == "student"]


def _cell(frame: pd.DataFrame, metric: str) -> dict:
    """mean ± std of a metric over the seeds in `frame`, or the reason nothing could be measured."""
    ok = frame[frame["status"] == "ok"]
    mean, std, n = mean_std(ok[f"{metric}_acc"]) if len(ok) else (math.nan, math.nan, 0)
    skipped = frame[frame["status"] != "ok"]
    return {"mean": mean, "std": std, "n": n, "skipped": len(skipped),
            "reason": skipped["reason"].iloc[0] if len(skipped) else None}


def _show(cell: dict) -> str:
    if cell["n"] == 0 and cell["skipped"]:
        return "collapsed teacher"
    return fmt(cell["mean"], cell["std"])


def _pair_label(teacher: str, student: str) -> str:
    return f"{teacher} → {student}"


def main_table(runs: pd.DataFrame, layout: dict, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's main table: teacher accuracy and CMI (MLL / MCMI), the student without KD, and one row per
    framework with the MLL teacher and one with the MCMI teacher (its gain Δ in brackets)."""
    students = _students(runs)
    teachers = runs[runs["role"] == "teacher"]
    long_rows, display = [], {}
    methods = [m for m in layout["methods"] if m != "ce"]
    for t_arch, s_arch in layout["pairs"]:
        col = _pair_label(t_arch, s_arch)
        cells: dict[str, str] = {}
        for kind in ("mll", "mcmi"):
            t = teachers[(teachers["teacher_arch"] == t_arch) & (teachers["teacher_kind"] == kind)]
            label = "MLL" if kind == "mll" else f"MCMI (λ={t['lambda'].iloc[0]:g})" if len(t) else "MCMI"
            acc = float(t["model_acc"].iloc[0]) if len(t) else math.nan
            cmi = float(t["cmi_T1"].iloc[0]) if len(t) and "cmi_T1" in t else math.nan
            collapsed = bool(len(t)) and t["status"].iloc[0] == "collapsed"
            cells[f"Teacher acc. ({'MLL' if kind == 'mll' else 'MCMI'})"] = (
                fmt(acc) + (" (collapsed)" if collapsed else ""))
            cells[f"Teacher CMI ({'MLL' if kind == 'mll' else 'MCMI'})"] = fmt(cmi, digits=4)
            long_rows.append({"pair": col, "row": "teacher", "teacher_kind": kind, "label": label, "mean": acc,
                              "std": None, "n": 1, "cmi": cmi, "collapsed": collapsed})
        ce = _cell(students[(students["method"] == "ce") & (students["student"] == s_arch)], metric)
        cells["Student (no KD)"] = _show(ce)
        long_rows.append({"pair": col, "row": "ce", "teacher_kind": "none", **ce})
        for method in methods:
            sel = students[(students["method"] == method) & (students["teacher_arch"] == t_arch)
                           & (students["student"] == s_arch)]
            mll = _cell(sel[sel["teacher_kind"] == "mll"], metric)
            mcmi = _cell(sel[sel["teacher_kind"] == "mcmi"], metric)
            delta = mcmi["mean"] - mll["mean"]
            cells[method_label(method)] = _show(mll)
            cells[f"{method_label(method)} + MCMI teacher"] = (
                _show(mcmi) + ("" if math.isnan(delta) else f" ({fmt_delta(delta)})"))
            long_rows.append({"pair": col, "row": method, "teacher_kind": "mll", **mll})
            long_rows.append({"pair": col, "row": method, "teacher_kind": "mcmi", **mcmi, "delta": delta})
        display[col] = cells
    frame = pd.DataFrame(display)
    frame.insert(0, f"Top-1 % ({metric} epoch)", frame.index)
    return pd.DataFrame(long_rows), frame.reset_index(drop=True)


def fewshot_table(runs: pd.DataFrame, layout: dict, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Student accuracy against the fraction of training data it sees, MLL vs MCMI teacher, per framework."""
    students = _students(runs)
    long_rows, rows = [], []
    for fraction in sorted(layout["fractions"]):
        row = {"Fraction": f"{100 * fraction:g} %"}
        at = students[(students["fraction"] - fraction).abs() < 1e-12]
        for method in layout["methods"]:
            sel = at[at["method"] == method]
            if method == "ce":
                cell = _cell(sel, metric)
                row[method_label(method)] = _show(cell)
                long_rows.append({"fraction": fraction, "method": method, "teacher_kind": "none", **cell})
                continue
            mll = _cell(sel[sel["teacher_kind"] == "mll"], metric)
            mcmi = _cell(sel[sel["teacher_kind"] == "mcmi"], metric)
            delta = mcmi["mean"] - mll["mean"]
            name = method_label(method)
            row[f"{name}, MLL"], row[f"{name}, MCMI"], row[f"{name}, Δ"] = _show(mll), _show(mcmi), fmt_delta(delta)
            long_rows.append({"fraction": fraction, "method": method, "teacher_kind": "mll", **mll})
            long_rows.append({"fraction": fraction, "method": method, "teacher_kind": "mcmi", **mcmi, "delta": delta})
        rows.append(row)
    return pd.DataFrame(long_rows), pd.DataFrame(rows)


def per_class(frame: pd.DataFrame, metric: str, cls: int) -> dict:
    ok = frame[frame["status"] == "ok"]
    vals = [json.loads(v)[cls] for v in ok[f"per_class_acc_{metric}"]]
    mean, std, n = mean_std(vals)
    skipped = frame[frame["status"] != "ok"]
    return {"mean": mean, "std": std, "n": n, "skipped": len(skipped), "reason": None}


def zeroshot_table(runs: pd.DataFrame, layout: dict, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy (recall) of the student on each omitted class: CE only (0 by construction), KD from the MLL
    teacher and KD from the MCMI teacher; and the overall test accuracy of the two KD students."""
    students = _students(runs)
    names = layout.get("class_names") or []
    long_rows, rows = [], []
    kd_methods = [m for m in layout["methods"] if m != "ce"]
    for omitted in layout["omitted"]:
        key = ".".join(str(c) for c in sorted(set(omitted)))
        at = students[students["omitted"].astype(str) == key]
        for cls in omitted:
            cname = names[cls] if cls < len(names) else str(cls)
            row = {"Omitted classes": "{" + ", ".join(str(c) for c in omitted) + "}", "Class": f"{cls} ({cname})"}
            ce = per_class(at[at["method"] == "ce"], metric, cls)
            row["CE only"] = _show(ce)
            long_rows.append({"omitted": key, "class": cls, "method": "ce", "teacher_kind": "none", **ce})
            for method in kd_methods:
                sel = at[at["method"] == method]
                mll = per_class(sel[sel["teacher_kind"] == "mll"], metric, cls)
                mcmi = per_class(sel[sel["teacher_kind"] == "mcmi"], metric, cls)
                if mcmi["n"] == 0 and len(sel[sel["teacher_kind"] == "mcmi"]):
                    mcmi["skipped"] = 1
                name = method_label(method)
                row[f"{name}, MLL"], row[f"{name}, MCMI"] = _show(mll), _show(mcmi)
                row[f"{name}, Δ"] = fmt_delta(mcmi["mean"] - mll["mean"])
                long_rows.append({"omitted": key, "class": cls, "method": method, "teacher_kind": "mll", **mll})
                long_rows.append({"omitted": key, "class": cls, "method": method, "teacher_kind": "mcmi", **mcmi,
                                  "delta": mcmi["mean"] - mll["mean"]})
            for method in kd_methods:
                sel = at[at["method"] == method]
                for kind in ("mll", "mcmi"):
                    cell = _cell(sel[sel["teacher_kind"] == kind], metric)
                    row[f"{method_label(method)}, {TEACHER_LABEL[kind]}, all classes"] = _show(cell)
            rows.append(row)
    return pd.DataFrame(long_rows), pd.DataFrame(rows)


def temperature_table(runs: pd.DataFrame, layout: dict, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 1 in numbers: teacher CMI at temperature T and the KD student's accuracy at that T."""
    students = _students(runs)
    teachers = runs[runs["role"] == "teacher"]
    long_rows, rows = [], []
    for t_arch, s_arch in layout["pairs"]:
        for temp in layout["temperatures"]:
            row = {"Pair": _pair_label(t_arch, s_arch), "T": f"{temp:g}"}
            sel = students[(students["teacher_arch"] == t_arch) & (students["student"] == s_arch)
                           & (students["method"] == "kd") & ((students["temperature"] - temp).abs() < 1e-9)]
            cells = {}
            for kind in ("mll", "mcmi"):
                t = teachers[(teachers["teacher_arch"] == t_arch) & (teachers["teacher_kind"] == kind)]
                col = f"cmi_T{float(temp):g}"
                cmi = float(t[col].iloc[0]) if len(t) and col in t else math.nan
                cells[kind] = _cell(sel[sel["teacher_kind"] == kind], metric)
                row[f"Teacher CMI, {TEACHER_LABEL[kind]}"] = fmt(cmi, digits=4)
                long_rows.append({"pair": row["Pair"], "temperature": temp, "teacher_kind": kind, "teacher_cmi": cmi,
                                  **cells[kind]})
            row["KD student, MLL"], row["KD student, MCMI"] = _show(cells["mll"]), _show(cells["mcmi"])
            row["Δ"] = fmt_delta(cells["mcmi"]["mean"] - cells["mll"]["mean"])
            rows.append(row)
    return pd.DataFrame(long_rows), pd.DataFrame(rows)


TABLES = {"main": main_table, "fewshot": fewshot_table, "zeroshot": zeroshot_table, "temperature": temperature_table}
CAPTIONS = {
    "main": "Top-1 test accuracy (%) of students distilled from an MLL and from an MCMI teacher, mean ± std over seeds",
    "fewshot": "Few-shot: student accuracy (%) when it sees only a fraction of the training set",
    "zeroshot": "Zero-shot: student accuracy (%) on classes omitted from its training data",
    "temperature": "Teacher CMI and KD student accuracy (%) against the KD temperature T",
}


def write_table(runs_csv: str, experiment: str, layout: dict, metric: str, csv_out: str, md_out: str,
                tex_out: str) -> pd.DataFrame:
    runs = read_runs(runs_csv)
    numbers, display = TABLES[experiment](runs, layout, metric)
    write_text(csv_out, numbers.to_csv(index=False))
    caption = f"{CAPTIONS[experiment]} ({metric}-epoch accuracy)."
    write_text(md_out, to_markdown(display, caption))
    write_text(tex_out, to_latex(display, caption))
    return display


# --------------------------------------------------------------------------------------------- MCMI gains


def gain_summary(main_numbers: pd.DataFrame) -> pd.DataFrame:
    """Per framework, over the pairs of a main table (its CSV): the mean gain Δ of the MCMI teacher, on how many
    pairs Δ > 0, and on how many the gain or loss exceeds two standard errors of the difference of the seed means
    (√(s²_MLL/n + s²_MCMI/n)), a rough guide to which differences the seeds resolve."""
    students = main_numbers[~main_numbers["row"].isin(["teacher", "ce"])]
    rows = []
    for method, frame in students.groupby("row", sort=False):
        mll = frame[frame["teacher_kind"] == "mll"].set_index("pair")
        mcmi = frame[frame["teacher_kind"] == "mcmi"].set_index("pair")
        pairs = mll.index.intersection(mcmi.index)
        delta = mcmi.loc[pairs, "mean"] - mll.loc[pairs, "mean"]
        se = ((mll.loc[pairs, "std"].fillna(0) ** 2 / mll.loc[pairs, "n"])
              + (mcmi.loc[pairs, "std"].fillna(0) ** 2 / mcmi.loc[pairs, "n"])) ** 0.5
        measured = delta.notna()
        rows.append({"Framework": method_label(method), "pairs": int(measured.sum()),
                     "mean Δ": fmt_delta(delta[measured].mean()) if measured.any() else "–",
                     "Δ > 0": int((delta > 0).sum()),
                     "Δ > +2 s.e.": int((delta > 2 * se).sum()), "Δ < −2 s.e.": int((delta < -2 * se).sum())})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "gains":
        sys.exit("usage: python -m mcmikd.aggregate gains results/<name>/tables/main.csv")
    print(to_markdown(gain_summary(pd.read_csv(sys.argv[2]))))
