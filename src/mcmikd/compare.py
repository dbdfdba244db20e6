"""`python -m mcmikd compare RUN REFERENCE`: does my run agree with yours, or with the paper?

RUN is a results folder (`results/<name>`, or a folder of committed results such as `docs/results/default`) or one
or more runs tables (`runs/<experiment>.csv`, `runs_<experiment>.csv`). REFERENCE is either another such folder or
file list, or a config whose `reference:` block holds published numbers (config/cifar100.yaml).

**Cells.** Against another run, every measured quantity of both runs' tables is a cell: each student cell
(experiment, teacher → student, setting, framework, teacher variant) with its last- and best-epoch top-1 accuracy
and, in the zero-shot experiment, the recall of each omitted class; each teacher (architecture, variant) with its
test accuracy and its training-set CMI (T = 1, nats); and, where the run measured CAMs (`tables/cam_seeds.csv`), each
(teacher, map method, CAM metric). The values of a cell are its seeds (students: the student seed; teachers and
CAMs: the teacher seed). Against a config's `reference:` block, each published entry is a cell matched
to a row of the experiment's table (`mcmikd.references.matches`), at the entry's `metric` (default best epoch, what
the official logs report), with the entry's `trials` (default 1) and optional `std`.

**Rule** (`verdict`; `mcmikd.stats`). For each cell, d = mean(ours) − mean(theirs), with the standard error of two
independent samples (Welch; where one side is a single run or a published mean without spread, the other side's
seed spread stands for both; each side's std is floored at the measurement's resolution, one test image). A
margin δ says which differences matter: ``--margin`` points for accuracies (default 1, never below one test image),
``--cmi-margin`` × the reference's mean for CMI (default 0.25), ``--cam-margin`` for the CAM fractions (IoU,
context, area, entropy; default 0.02). Then

* ``differ``: |true d| > δ is shown by a one-sided t-test at α = 0.05 after Holm's correction over all cells
  compared (p_differ = t.sf((|d| − δ)/se, df));
* ``agree``: |true d| < δ is shown by two one-sided tests at α = 0.05 (TOST: the 90 % interval of d lies inside
  ±δ; p_agree = t.sf((δ − |d|)/se, df));
* ``can't tell``: neither (too few seeds, or too much spread, to say) — including cells where neither side has two
  values.

A cell whose every seed has the same value on both sides (a rerun on the same machine) is ``agree`` whatever its
spread. A cell measured on one side only is listed as ``only ours`` / ``only theirs`` and counted apart. The exit
status is 0 when no cell differs, 1 when one does, 2 on bad input.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from mcmikd.stats import ALPHA, difference, difference_from_summary, equivalence, holm

VERDICTS = ("agree", "differ", "can't tell")
MARGIN, CMI_MARGIN, CAM_MARGIN = 1.0, 0.25, 0.02
CAM_ROLE = "cam measurement"  # the role of the CAM cells (tables/cam_seeds.csv) beside "student" and "teacher"


# --------------------------------------------------------------------------------------------- reading runs
def runs_files(where: str) -> list[Path]:
    """The runs tables of a results folder (runs/*.csv, or the runs_*.csv a committed docs/results folder keeps),
    or the given CSV itself. Raises ValueError (one line) when there is none."""
    path = Path(where)
    if path.is_file() and path.suffix == ".csv":
        return [path]
    if path.is_dir():
        found = sorted((path / "runs").glob("*.csv")) or sorted(path.glob("runs_*.csv"))
        if found:
            return found
        raise ValueError(f"{where}: no runs tables (runs/*.csv or runs_*.csv); give a results folder of a finished "
                         f"run, e.g. results/digits, or docs/results/default")
    raise ValueError(f"{where}: no such results folder or runs table")


def read(where: list[str]):
    """All runs tables of `where` (folders or CSV files) as one frame, with its experiment per row."""
    import pandas as pd

    from mcmikd.aggregate import read_runs

    frames = []
    for w in where:
        for f in runs_files(w):
            frame = read_runs(str(f))
            if "experiment" not in frame:
                frame["experiment"] = f.stem.removeprefix("runs_")
            frames.append(frame)
        folder = Path(w)
        for cam in (folder / "tables" / "cam_seeds.csv", folder / "cam_seeds.csv"):
            if folder.is_dir() and cam.is_file():  # the CAM measurements' per-seed means (mcmikd.cam_table)
                frames.append(pd.read_csv(cam).assign(role=CAM_ROLE, experiment=CAM_ROLE))
                break
    return pd.concat(frames, ignore_index=True)


def _resolution(confusion: str | float, row: int | None = None) -> float:
    """One image in points: 100 / (test images), or / (test images of class `row`)."""
    from mcmikd.confusion import decode

    try:
        m = decode(confusion)
    except (TypeError, ValueError):
        return 0.0
    total = sum(m[row]) if row is not None else sum(sum(r) for r in m)
    return 100.0 / total if total else 0.0


def cells(runs) -> dict[tuple, dict]:
    """{cell key: {"values": {seed: value}, "floor": resolution, "unit": "points" | "nats"}} of a runs frame (see the
    module docstring for the cells). Runs that did not finish (status not ok) have no value; collapsed teachers
    keep theirs (their accuracy is the finding)."""
    out: dict[tuple, dict] = {}

    def put(key, seed, value, floor, unit):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        c = out.setdefault(key, {"values": {}, "floor": 0.0, "unit": unit})
        c["values"].setdefault(int(seed), float(value))
        c["floor"] = max(c["floor"], floor)

    students = runs[(runs["role"] == "student") & (runs["status"] == "ok")] if len(runs) else runs
    test_floor = 0.0
    for _, r in students.iterrows():
        pair = (f"{r['teacher_arch']} → {r['student']}" if r["teacher_arch"] != "none"
                else f"no teacher → {r['student']}")
        base = ("student", r["experiment"], pair, str(r["setting"]), r["method"], r["teacher_variant"])
        for metric in ("last", "best"):
            floor = _resolution(r.get(f"confusion_{metric}"))
            test_floor = max(test_floor, floor)
            put(base + (f"top-1 % ({metric} epoch)",), r["seed"], r.get(f"{metric}_acc"), floor, "points")
            if r.get("omitted"):
                per_class = json.loads(r[f"per_class_acc_{metric}"])
                for c in str(r["omitted"]).split("."):
                    put(base + (f"class {c} recall % ({metric} epoch)",), r["seed"], per_class[int(c)],
                        _resolution(r.get(f"confusion_{metric}"), int(c)), "points")
    teachers = runs[runs["role"] == "teacher"] if len(runs) else runs
    for _, r in teachers.iterrows():
        base = ("teacher", "", r["teacher_arch"], "", "", r["teacher_variant"])
        seed = 0 if r.get("teacher_seed") is None or math.isnan(float(r["teacher_seed"])) else r["teacher_seed"]
        put(base + ("test accuracy %",), seed, r.get("model_acc"), test_floor, "points")
        put(base + ("CMI (train, T = 1, nats)",), seed, r.get("cmi_T1"), 0.0, "nats")
    cams = runs[runs["role"] == CAM_ROLE] if len(runs) and "role" in runs else runs.iloc[0:0]
    for _, r in cams.iterrows():  # CAM measurements: one value per teacher seed (the mean over the test images)
        from mcmikd.cam_table import METHOD_LABELS, METRICS

        label, scale = METRICS[r["metric"]]
        put((CAM_ROLE, "", r["arch"], "", METHOD_LABELS.get(r["method"], r["method"]), r["objective"], label),
            r["teacher_seed"], r["value"], scale / float(r["images"]) if scale == 100 else 0.0,
            "points" if scale == 100 else "fraction")
    return out


def machines(runs) -> list[str]:
    """The distinct machines (`mcmikd.machine.describe`) the runs of a frame were computed on."""
    if "machine" not in runs:
        return []
    return sorted({m for m in runs["machine"].dropna().astype(str) if m})


# --------------------------------------------------------------------------------------------- the rule
def margin_for(key: tuple, reference_mean: float, floor: float, margin: float, cmi_margin: float,
               cam_margin: float = 0.02) -> float:
    """δ of a cell: `margin` points for accuracies and CAM percentages (never below the resolution `floor`),
    `cmi_margin` × |reference mean| for CMI, `cam_margin` (absolute) for the CAM fractions (IoU, context, area,
    entropy)."""
    if key[-1].startswith("CMI"):
        return cmi_margin * abs(reference_mean)
    if key[0] == CAM_ROLE and not key[-1].endswith("(%)"):
        return cam_margin
    return max(margin, floor)


def verdict(p_differ_adjusted: float, p_agree: float, alpha: float = ALPHA) -> str:
    if not math.isnan(p_differ_adjusted) and p_differ_adjusted < alpha:
        return "differ"
    if not math.isnan(p_agree) and p_agree < alpha:
        return "agree"
    return "can't tell"


def judge(rows: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Add p_differ_holm and the verdict to rows that carry d, se, df and margin (Holm over the rows compared)."""
    for r in rows:
        r.update(equivalence(r["d"], r["se"], r["df"], r["margin"]))
    adjusted = holm([r["p_differ"] for r in rows])
    for r, p in zip(rows, adjusted):
        r["p_differ_holm"] = p
        r["verdict"] = verdict(p, r["p_agree"], alpha)
    return rows


def _show(values: list[float], unit: str) -> str:
    digits = 4 if unit in ("nats", "fraction") else 2
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (n = 1)"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({len(values)})"


def compare_runs(ours, theirs, margin: float = MARGIN, cmi_margin: float = CMI_MARGIN,
                 cam_margin: float = CAM_MARGIN) -> list[dict]:
    """One row per cell of either runs frame: what, ours, theirs, d, se, df, margin, p-values and verdict."""
    a, b = cells(ours), cells(theirs)
    rows, only = [], []
    for key in sorted(a.keys() | b.keys(), key=lambda k: tuple(str(x) for x in k)):
        what = describe_key(key)
        if key not in a or key not in b:
            side = "only theirs" if key not in a else "only ours"
            unit = (a.get(key) or b.get(key))["unit"]
            only.append({"cell": what, "ours": _show(list(a[key]["values"].values()) if key in a else [], unit),
                         "theirs": _show(list(b[key]["values"].values()) if key in b else [], unit),
                         "d": math.nan, "margin": math.nan, "verdict": side})
            continue
        va, vb = list(a[key]["values"].values()), list(b[key]["values"].values())
        floor = max(a[key]["floor"], b[key]["floor"])
        diff = difference(va, vb, floor)
        rows.append({"cell": what, "ours": _show(va, a[key]["unit"]), "theirs": _show(vb, b[key]["unit"]), **diff,
                     "margin": margin_for(key, sum(vb) / len(vb), floor, margin, cmi_margin, cam_margin),
                     "identical": a[key]["values"] == b[key]["values"]})
    judge(rows)
    for r in rows:  # the same value for every seed on both sides: the same bits, whatever the spread
        if r["identical"]:
            r["verdict"] = "agree"
    return rows + only


def describe_key(key: tuple) -> str:
    role, experiment, pair, setting, method, variant, measure = key
    if role == "teacher":
        return f"teacher {pair} {variant}: {measure}"
    if role == CAM_ROLE:
        return f"CAM {pair} {variant} teacher, {method}: {measure}"
    return f"{experiment} {pair} {setting} {method} ({variant}): {measure}"


# --------------------------------------------------------------------------------------------- against a config
def compare_paper(ours, config_path: str, margin: float = MARGIN) -> list[dict]:
    """One row per entry of the config's `reference:` block, matched to our table cell (module docstring)."""
    import pandas as pd
    import yaml

    from mcmikd.config import load_grid, schema_path
    from mcmikd.experiments import get_experiment
    from mcmikd.references import META_KEYS, matches

    grid = load_grid(yaml.safe_load(Path(config_path).read_text()), schema_path())
    block = grid.config.get("reference") or {}
    if not (block.get("experiments") or {}):
        raise ValueError(f"{config_path}: no reference.experiments block with published numbers; give a config "
                         f"that has one (config/cifar100.yaml) or a results folder")
    test_floor = max([v["floor"] for k, v in cells(ours).items() if k[0] == "student"] or [0.0])
    rows = []
    for experiment, entries in block["experiments"].items():
        runs = ours[ours["experiment"] == experiment]
        layout = grid.experiments[experiment].layout()
        tables = {}
        for entry in entries:
            metric = entry.get("metric", block.get("metric", "best"))
            if metric not in tables:
                tables[metric] = get_experiment(experiment).table(runs, layout, metric)[0] if len(runs) else \
                    pd.DataFrame()
            numbers = tables[metric]
            match = {k: v for k, v in entry.items() if k not in META_KEYS}
            what = f"{experiment}: " + ", ".join(f"{k} {v}" for k, v in match.items()) + f" ({metric} epoch)"
            hit = [r for _, r in numbers.iterrows() if matches(r.to_dict(), match)] if len(numbers) else []
            theirs = f"{entry['value']:.2f}" + (f" ± {entry['std']:.2f}" if "std" in entry else "") + \
                     f" ({entry.get('trials', 1)} trial{'s' if entry.get('trials', 1) != 1 else ''})"
            if not hit or not hit[0].get("n"):
                rows.append({"cell": what, "ours": "not run", "theirs": theirs, "d": math.nan, "margin": math.nan,
                             "verdict": "only theirs", "source": entry["source"]})
                continue
            r = hit[0]
            std = float(r["std"]) if r.get("std") is not None and not math.isnan(float(r["std"])) else math.nan
            diff = difference_from_summary(float(r["mean"]), std, int(r["n"]), float(entry["value"]),
                                           entry.get("std"), int(entry.get("trials", 1)), test_floor)
            ours_text = f"{float(r['mean']):.2f}" + (f" ± {std:.2f}" if int(r["n"]) > 1 else "") + f" ({int(r['n'])})"
            rows.append({"cell": what, "ours": ours_text, "theirs": theirs, **diff,
                         "margin": max(margin, test_floor), "source": entry["source"]})
    judge([r for r in rows if "se" in r])
    return rows


# --------------------------------------------------------------------------------------------- output
def summary(rows: list[dict]) -> str:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (*VERDICTS, "only ours", "only theirs")}
    compared, unclear = sum(counts[v] for v in VERDICTS), counts["can't tell"]
    text = f"{compared} cells compared: {counts['agree']} agree, {counts['differ']} differ, {unclear} can't tell"
    apart = [f"{counts[v]} {v}" for v in ("only ours", "only theirs") if counts[v]]
    return text + (f" ({', '.join(apart)})" if apart else "") + "."


def to_markdown(rows: list[dict]) -> str:
    head = "| cell | ours | theirs | ours − theirs | margin | verdict |\n|---|---|---|---|---|---|\n"
    order = {"differ": 0, "can't tell": 1, "agree": 2, "only ours": 3, "only theirs": 4}
    lines = []
    for r in sorted(rows, key=lambda r: order[r["verdict"]]):
        d = "–" if math.isnan(r["d"]) else f"{r['d']:+.4g}"
        m = "–" if math.isnan(r["margin"]) else f"±{r['margin']:.3g}"
        lines.append(f"| {r['cell']} | {r['ours']} | {r['theirs']} | {d} | {m} | {r['verdict']} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mcmikd compare", description=__doc__.split("\n")[0],
                                 epilog="The rule: the module docstring of mcmikd.compare "
                                        "(and docs/reproducibility.md).")
    ap.add_argument("run", help="results folder (results/<name>) or runs table(s) of your run")
    ap.add_argument("reference", help="results folder or runs table of the other run (docs/results/default), or "
                                      "a config with a reference: block of published numbers")
    ap.add_argument("--margin", type=float, default=MARGIN,
                    help=f"accuracy difference that matters, points (default {MARGIN:g})")
    ap.add_argument("--cmi-margin", type=float, default=CMI_MARGIN,
                    help=f"CMI difference that matters, as a fraction of the reference's (default {CMI_MARGIN:g})")
    ap.add_argument("--cam-margin", type=float, default=CAM_MARGIN,
                    help=f"CAM IoU/context/area/entropy difference that matters, absolute (default {CAM_MARGIN:g})")
    ap.add_argument("--csv", help="also write every cell's numbers (d, se, df, p-values) to this CSV")
    ap.add_argument("--all", action="store_true", help="list every cell (default: those that differ or can't tell)")
    args = ap.parse_args(argv)
    if not (args.margin > 0 and args.cmi_margin > 0 and args.cam_margin > 0):
        print("Error: --margin, --cmi-margin and --cam-margin must be > 0", file=sys.stderr)
        return 2
    try:
        ours = read([args.run])
        if args.reference.endswith((".yaml", ".yml", ".json")):
            rows = compare_paper(ours, args.reference, args.margin)
            where = f"the published numbers in {args.reference}"
        else:
            theirs = read([args.reference])
            rows = compare_runs(ours, theirs, args.margin, args.cmi_margin, args.cam_margin)
            where = args.reference
            for side, frame in (("yours", ours), ("reference", theirs)):
                if machines(frame):
                    print(f"{side} computed on: {'; '.join(machines(frame))}")
    except (ValueError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a config error, an unreadable table: one line
        from mcmikd.errors import first_line

        print(f"Error: {first_line(exc)}", file=sys.stderr)
        return 2
    shown = rows if args.all else [r for r in rows if r["verdict"] != "agree"]
    print(f"{args.run} against {where}; margin ±{args.margin:g} points for accuracies, ±{args.cmi_margin:g} × "
          f"the reference for CMI (rule: python -m mcmikd compare --help).\n")
    if shown:
        print(to_markdown(shown))
    print(summary(rows))
    if args.csv:
        import pandas as pd

        from mcmikd.io import write_text

        write_text(args.csv, pd.DataFrame(rows).to_csv(index=False))
    return 1 if any(r["verdict"] == "differ" for r in rows) else 0
