"""The run's reading: a few sentences, generated from the run's own tables, that head the Snakemake report's first page
(rule `reading`, rules/choices.smk; the Snakefile's `report:` directive shows `<results>/report/first_page.rst`, the
static workflow description followed by this text, once it exists).

What it reads, all from the main experiment (the paper's Table 1 layout, `mcmikd.experiments.main`):

* its seed-paired gains, `tables/<main>_gains.csv` (`mcmikd.aggregate.write_gains`): the rows of ``level`` pooled at
  the primary metric (`tables.metric`) give, per comparison of two teachers ("mcmi − mll"), the students' gain
  pooled over the table's cells that are findings with the teacher seed as the unit (`mcmikd.aggregate.pooled_gains`),
  its 95 % t-interval half-width (``ci95``), its minimal detectable effect (``mde``: 5 %, two-sided, 80 % power,
  `mcmikd.stats.mde`) and ``resolved`` ("+" / "−": at least 3 teacher seeds, an interval with width and p < 0.05,
  `mcmikd.stats.resolved`); the rows of ``level`` cell say how many single cells are resolved after Holm's
  correction; the rows of ``level`` headroom (`mcmikd.headroom`) give, per pair, the seed-paired differences
  "teacher − no teacher" (the reference teacher's accuracy minus the no-teacher student's) and "<method> − no
  teacher" (the reference teacher's student minus the no-teacher student);
* its table, `tables/<main>.csv` (`Main.table`), for the same differences from the means over seeds when the gains
  file has no headroom rows (older tables), without an interval.

The wording never claims more than the numbers: a gain is "resolved" only as `mcmikd.stats.resolved` says; an
interval that covers 0 is "within noise", with the MDE that says how large an effect these seeds could have seen; an
interval that excludes 0 without being resolved (fewer than 3 teacher seeds, zero width) says so. Headroom is claimed
only when both the teacher's lead over the no-teacher student and KD's gain over it have intervals above 0 (the
questions of `mcmikd.headroom`: is there room for a better teacher to show, and do the students learn from a teacher
at all?). Nothing here imports torch.
"""

from __future__ import annotations

import math
from typing import Any

NO_MAIN = ("This run has no main table (``experiments.main`` is not enabled in its config), so there is no reading "
           "of the teacher comparisons or of the students' headroom; the report's tables and figures are those of "
           "the experiments it ran.")


# ----------------------------------------------------------------------------------------------- small helpers
def rst_text(text: Any) -> str:
    """`text` with the characters reStructuredText would read as markup escaped (names, labels)."""
    out = str(text)
    for ch in ("\\", "*", "`", "|", "_"):
        out = out.replace(ch, "\\" + ch)
    return out


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def points(value: float) -> str:
    """A signed number of points (two decimals, a true minus sign)."""
    return f"{value:+.2f}".replace("-", "−")


def interval(mean: float, half: float) -> str:
    """"[lo, hi]" of a mean and its half-width, or "" when there is no interval."""
    if _missing(half):
        return ""
    return f"[{points(mean - half)}, {points(mean + half)}]"


def side(mean: float, half: float) -> str | None:
    """Where a 95 % interval lies: "above" or "below" 0, "covers" 0, "zero width" (every seed gave the same value),
    or None (no interval: fewer than two seeds)."""
    if _missing(mean) or _missing(half):
        return None
    if half == 0:
        return "zero width"
    if mean - half > 0:
        return "above"
    if mean + half < 0:
        return "below"
    return "covers"


def _label(name: str, labels: dict) -> str:
    return rst_text(labels.get(name, name))


def comparison_words(comparison: str, labels: dict) -> tuple[str, str]:
    """("MCMI", "MLL") of "mcmi − mll" (the gains file's names) in the table's labels."""
    left, _, right = str(comparison).partition(" − ")
    return _label(left.strip(), labels), _label(right.strip(), labels)


def split_words(layout: dict, metric: str) -> str:
    """The accuracy the tables use, in words: the epoch choice and the evaluation split."""
    data = "validation" if layout.get("evaluated_on") == "validation" else "test"
    epoch = (f"best-epoch (selected on the {data} set)" if metric == "best" else f"{metric}-epoch")
    return f"{epoch} top-1 {data} accuracy"


def _at_metric(frame, metric: str, level: str):
    if frame is None or not len(frame) or "level" not in frame:
        return frame.iloc[0:0] if frame is not None else None
    rows = frame[frame["level"] == level]
    if "metric" in rows:
        rows = rows[rows["metric"] == metric]
    return rows


def _resolved_sign(value: Any) -> str:
    """"+", "−" or "" of a `resolved` cell as read back from the CSV (NaN for "")."""
    if _missing(value):
        return ""
    value = str(value).strip()
    return {"-": "−"}.get(value, value) if value in ("+", "−", "-") else ""


# ----------------------------------------------------------------------------------------------- teacher comparisons
def pooled_sentence(row, labels: dict, cells=None) -> str:
    """One sentence on one pooled comparison (a ``level`` pooled row of the gains file): the pooled gain with its
    95 % interval, then resolved (`mcmikd.stats.resolved` via the ``resolved`` column) or why not, with the MDE;
    `cells` (the comparison's ``level`` cell rows) adds how many single cells are resolved after Holm."""
    left, right = comparison_words(row["comparison"], labels)
    measure = str(row.get("measure", "top-1"))
    what = f"Students of the {left} teachers against those of the {right} teachers"
    if measure not in ("top-1", "nan"):
        what += f" ({rst_text(measure)})"
    mean, half = row.get("mean"), row.get("ci95")
    if _missing(mean):
        return f"{what}: no seed-paired gain (no finished student pair)."
    seeds = row.get("seeds")
    n_cells = row.get("cells")
    over = []
    if not _missing(n_cells):
        over.append(f"{int(n_cells)} cell{'s' if int(n_cells) != 1 else ''}")
    if not _missing(seeds):
        over.append(f"{int(seeds)} teacher seed{'s' if int(seeds) != 1 else ''}")
    text = f"{what}: pooled gain {points(mean)} points"
    if interval(mean, half):
        text += f", 95 % interval {interval(mean, half)}"
    text += f" (over {' and '.join(over)})" if over else ""
    mde = row.get("mde")
    mde_words = "" if _missing(mde) else f"; the smallest pooled effect these seeds detect (MDE, 80 % power) is " \
                                         f"{float(mde):.2f} points"
    sign = _resolved_sign(row.get("resolved"))
    where = side(mean, half)
    if sign == "+":
        text += f" — resolved: the {left} teachers' students are better (the interval excludes 0)"
    elif sign == "−":
        text += f" — resolved: the {left} teachers' students are worse (the interval excludes 0)"
    elif where is None:
        text += " — not resolved: one teacher seed gives no interval"
    elif where == "zero width":
        text += " — not resolved: every teacher seed gave the same gain (an interval without width)"
    elif where in ("above", "below"):
        n = 0 if _missing(seeds) else int(seeds)
        text += (f" — not resolved: the interval excludes 0, but {n} teacher seed{'s' if n != 1 else ''} are too "
                 f"few to count it (3 are needed)")
    else:
        text += f" — within noise: the interval covers 0, so these students do not show a difference between the " \
                f"{left} and the {right} teachers{mde_words}"
        mde_words = ""
    text += mde_words
    if cells is not None and len(cells):
        found = cells[cells["not_working"] != True] if "not_working" in cells else cells  # noqa: E712
        signs = [_resolved_sign(v) for v in found.get("resolved", [])]
        plus, minus = signs.count("+"), signs.count("−")
        n = len(found)
        none = ("The only cell is not resolved after Holm's correction" if n == 1
                else f"None of the {n} single cells is resolved after Holm's correction")
        text += (f". {none}" if not plus + minus else
                 f". Single cells resolved after Holm's correction: {plus} better and {minus} worse, of {n}")
    return text + "."


def comparison_sentences(gains, labels: dict, metric: str) -> list[str]:
    """One `pooled_sentence` per pooled comparison of the gains file at `metric` (top-1 first)."""
    pooled = _at_metric(gains, metric, "pooled")
    if pooled is None or not len(pooled):
        return ["The main table has no pooled seed-paired gain: fewer than two compared teachers, or no pair of "
                "finished students of the same seed."]
    cells = _at_metric(gains, metric, "cell")
    out = []
    for _, row in pooled.iterrows():
        mine = None
        if cells is not None and len(cells):
            mine = cells[cells["comparison"] == row["comparison"]]
            kind = str(row.get("measure", "top-1"))
            if "measure" in mine:
                mine = mine[(mine["measure"] == "top-1") == (kind == "top-1")]
        out.append(pooled_sentence(row, labels, mine))
    return out


# ----------------------------------------------------------------------------------------------- headroom
def _headroom_from_table(table, reference: str) -> dict[str, dict[str, dict]]:
    """{pair: {comparison: {"mean", "ci95"}}} from the main table's means (no interval): teacher − no teacher and
    <method> − no teacher for the reference teacher's students."""
    out: dict[str, dict[str, dict]] = {}
    if table is None or not len(table) or "row" not in table:
        return out
    for pair, rows in table.groupby("pair", sort=False):
        ce = rows[rows["row"] == "ce"]
        teacher = rows[(rows["row"] == "teacher") & (rows["teacher_objective"] == reference)]
        if not len(ce) or _missing(ce["mean"].iloc[0]):
            continue
        floor = float(ce["mean"].iloc[0])
        found = out.setdefault(str(pair), {})
        if len(teacher) and not _missing(teacher["mean"].iloc[0]):
            found["teacher − no teacher"] = {"mean": float(teacher["mean"].iloc[0]) - floor, "ci95": math.nan}
        students = rows[~rows["row"].isin(["teacher", "ce"]) & (rows["teacher_objective"] == reference)]
        for _, s in students.iterrows():
            if not _missing(s["mean"]):
                found[f"{s['row']} − no teacher"] = {"mean": float(s["mean"]) - floor, "ci95": math.nan}
    return out


def _headroom_from_gains(gains, metric: str) -> dict[str, dict[str, dict]]:
    rows = _at_metric(gains, metric, "headroom")
    out: dict[str, dict[str, dict]] = {}
    if rows is None or not len(rows):
        return out
    for _, r in rows.iterrows():
        out.setdefault(str(r["pair"]), {})[str(r["comparison"])] = {"mean": float(r["mean"]), "ci95": r["ci95"]}
    return out


def headroom_sentence(pair: str, found: dict[str, dict], reference_label: str, paired: bool) -> str:
    """One sentence on one pair: the reference teacher's lead over the no-teacher student, KD's gain over it (or
    the first framework's when KD was not run), the other frameworks in brief, and the verdict: room for a better
    teacher to show only when the first two intervals lie above 0."""
    from mcmikd.aggregate import method_label

    def shown(entry):
        text = f"{points(entry['mean'])} points"
        return text + (f" {interval(entry['mean'], entry['ci95'])}" if interval(entry["mean"], entry["ci95"]) else "")

    teacher = found.get("teacher − no teacher")
    methods = [c.removesuffix(" − no teacher") for c in found
               if c.endswith(" − no teacher") and c != "teacher − no teacher"]
    first = "kd" if "kd" in methods else (methods[0] if methods else None)
    parts = []
    if teacher is not None:
        parts.append(f"{reference_label} teacher − student without a teacher {shown(teacher)}")
    if first is not None:
        parts.append(f"{rst_text(method_label(first))} student of the {reference_label} teacher − student without a "
                     f"teacher {shown(found[first + ' − no teacher'])}")
    text = f"{rst_text(pair)}: " + ("; ".join(parts) if parts else "no teacher or student to compare")
    others = {"above": [], "covers": [], "below": []}
    for m in methods:
        if m == first:
            continue
        where = side(found[m + " − no teacher"]["mean"], found[m + " − no teacher"]["ci95"])
        if where in others:
            others[where].append(rst_text(method_label(m)))
    brief = [f"{', '.join(names)} {words}" for words, names in
             (("above", others["above"]), ("within noise of", others["covers"]), ("below", others["below"])) if names]
    if brief:
        text += " (other frameworks' students: " + "; ".join(brief) + " the student without a teacher)"
    if not paired:
        verdict = ("means over seeds without a paired interval, so headroom is not tested here"
                   if parts else "")
    else:
        t = side(teacher["mean"], teacher["ci95"]) if teacher else None
        k = side(found[first + " − no teacher"]["mean"], found[first + " − no teacher"]["ci95"]) if first else None
        kd = rst_text(method_label(first)) if first else "distillation"
        if t == "above" and k == "above":
            verdict = "there is room for a better teacher to show"
        elif t in ("below", "covers") or (teacher is not None and teacher["mean"] <= 0):
            verdict = ("no headroom: the teacher is not resolved above the student trained without one, so no teacher "
                       "comparison can show here")
        elif k == "below":
            verdict = (f"no headroom for {kd}: its students are below the student trained without a teacher, so they "
                       f"cannot show which teacher is better")
        elif k == "covers":
            verdict = (f"headroom not shown: {kd}'s gain over the student trained without a teacher is within noise, "
                       f"so these students may not learn from a teacher at all here")
        else:
            verdict = "headroom not tested: too few seeds for an interval"
    return text + (f" — {verdict}." if verdict else ".")


def headroom_sentences(gains, table, layout: dict, metric: str) -> list[str]:
    """One `headroom_sentence` per pair: from the gains file's headroom rows (seed-paired, with intervals), else from
    the main table's means (no interval)."""
    objectives = layout.get("objectives") or []
    reference = objectives[0] if objectives else ""
    label = _label(reference, layout.get("labels", {})) if reference else "reference"
    found = _headroom_from_gains(gains, metric)
    paired = bool(found)
    if not found and reference:
        found = _headroom_from_table(table, reference)
    if not found:
        return ["No headroom can be read: the main table has no finished student trained without a teacher."]
    return [headroom_sentence(pair, comps, label, paired) for pair, comps in found.items()]


# ----------------------------------------------------------------------------------------------- choices
def choice_sentences(weights: dict | None = None, lam: dict | None = None) -> list[str]:
    """A sentence per choice file the run wrote (rules/choices.smk; `mcmikd.choices`): what was chosen, on which
    data."""
    out = []
    data = {"validation": "held-out validation data", None: "test data"}
    if weights is not None:
        chosen = ", ".join(f"{rst_text(m)} × {c['multiple']:g}" for m, c in (weights.get("methods") or {}).items())
        where = data.get(weights.get("evaluated_on"), "test data")
        out.append(f"Method weights chosen on {where} (highest mean accuracy, ties to × 1): {chosen or 'none'}"
                   + ("" if weights.get("evaluated_on") == "validation" else
                      " — chosen on the test set, so not a held-out choice") + ".")
    if lam is not None:
        chosen = lam.get("chosen")
        where = data.get(lam.get("evaluated_on"), "test data")
        out.append(f"The recipe rule over this run's λ sweep ({where}"
                   + ("" if lam.get("evaluated_on") == "validation" else ", so not a held-out choice")
                   + "): " + ("no λ passes for every pair" if chosen is None else f"λ = {float(chosen):g}") + ".")
    return out


# ----------------------------------------------------------------------------------------------- the page
def reading(table, gains, layout: dict | None, metric: str, weights: dict | None = None,
            lam: dict | None = None, sources: tuple[str, str] = ("the main table", "its gains file")) -> str:
    """The reading as reStructuredText. `table` and `gains` are the main experiment's table and gains frames (None:
    the experiment is off, and the text says there is no main table); `layout` its table layout (objectives, labels,
    evaluated_on); `weights` and `lam` the choice records of `mcmikd.choices`, when the run made them; `sources`
    the names of the table and gains files, for the text."""
    lines = ["**The run's reading.**", ""]
    if table is None or layout is None:
        lines += [NO_MAIN, ""]
    else:
        lines += [f"Generated by the rule ``reading`` from {sources[1]} and {sources[0]} "
                  f"({split_words(layout, metric)}; gains in points, seed-paired: student seed s learns from teacher "
                  f"seed s of every teacher). Teacher comparisons, pooled over the main table's cells with the "
                  f"teacher seed as the unit:", ""]
        lines += [f"* {s}" for s in comparison_sentences(gains, layout.get("labels", {}), metric)] + [""]
        lines += ["Headroom (is there room for a better teacher to show?), per teacher → student pair, "
                  "seed-paired where the gains file has it:", ""]
        lines += [f"* {s}" for s in headroom_sentences(gains, table, layout, metric)] + [""]
    choices = choice_sentences(weights, lam)
    if choices:
        lines += ["Choices made by this run (category Choices):", ""] + [f"* {s}" for s in choices] + [""]
    return "\n".join(lines)


def first_page(static: str, text: str) -> str:
    """The report's first page: the static workflow description, then the reading (kept out of Jinja, which the
    report runs over the page)."""
    return f"{static.rstrip()}\n\n{{% raw %}}\n{text.rstrip()}\n{{% endraw %}}\n"


def write_reading(out: str, page_out: str, static_rst: str, layout: dict | None, metric: str,
                  table_csv: str | None = None, gains_csv: str | None = None, weights_yaml: str | None = None,
                  lambda_yaml: str | None = None) -> str:
    """Read the run's tables (None: not made by this run), write the reading (`reading`) to `out` and the report's
    first page (`first_page` of `static_rst` and the reading) to `page_out`; returns the reading."""
    from pathlib import Path

    import pandas as pd
    import yaml

    from mcmikd.io import write_text

    def frame(path):
        if not path:
            return None
        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:  # a table without rows (write_gains of no gain)
            return pd.DataFrame()

    def record(path):
        return yaml.safe_load(Path(path).read_text()) if path else None

    table = frame(table_csv)
    sources = tuple(f"``{Path(p).name}``" for p in (table_csv or "", gains_csv or ""))
    text = reading(table, frame(gains_csv) if table is not None else None, layout if table is not None else None,
                   metric, record(weights_yaml), record(lambda_yaml), sources)
    write_text(out, text)
    write_text(page_out, first_page(Path(static_rst).read_text(), text))
    return text
