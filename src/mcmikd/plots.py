"""The paper's figures: few-shot and zero-shot students, Fig. 1 (KD accuracy and teacher CMI against T), the
MCMI fine-tuning curves and Fig. 3 (Eigen-CAM of the MLL and the MCMI teacher).

Each figure is drawn on its own `matplotlib.figure.Figure` (rendered by Agg, no pyplot state shared between
figures) under seaborn's theme, and saved as PNG and PDF. A panel without data (a collapsed MCMI teacher whose
students were skipped, a run that is missing) shows a note saying so instead of failing the job.
"""

from __future__ import annotations

import functools
import json
import math
import textwrap

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator, NullLocator

from mcmikd import aggregate
from mcmikd.aggregate import mean_std, method_label
from mcmikd.io import atomic_path, read_json

KINDS = ("mll", "mcmi")
COLORS = {"mll": "#0173B2", "mcmi": "#DE8F05", "ce": "#8C8C8C"}
LABELS = {"mll": "MLL teacher", "mcmi": "MCMI teacher", "ce": "CE only (no teacher)"}
OMITTED_COLOR = "#C0143C"
DPI = 150
_RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.15),
       "axes.titleweight": "bold", "legend.frameon": False, "pdf.fonttype": 42}


def _themed(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(_RC):
            return func(*args, **kwargs)
    return wrapper


def _save(fig: Figure, png: str, pdf: str) -> None:
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            # no creation date in the PDF: the same data give the same file
            fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight",
                        metadata={"CreationDate": None} if fmt == "pdf" else None)


def _note(ax, text: str, y: float = 0.5) -> None:
    """A visible explanation in a panel that lacks (some of) its data (`y` in axes coordinates)."""
    ax.text(0.5, y, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.25", zorder=10,
            bbox={"boxstyle": "round,pad=0.4", "fc": "#FFF6E0", "ec": "0.6"})


def _legend(fig: Figure, handles, ncol: int | None = None, where: str = "upper") -> None:
    fig.legend(handles=handles, loc=f"outside {where} center", ncol=ncol or len(handles))


# --------------------------------------------------------------------------------------------- runs tables
_RUN_COLUMNS = ["role", "teacher_arch", "teacher_kind", "lambda", "student", "method", "fraction", "omitted",
                "temperature", "seed", "status", "reason", "best_acc", "last_acc", "per_class_acc_best",
                "per_class_acc_last", "confusion_best", "confusion_last"]


def read_runs(path: str) -> pd.DataFrame:
    """A runs table with every column the figures use (absent ones empty)."""
    try:
        runs = aggregate.read_runs(path)
    except pd.errors.EmptyDataError:  # an experiment without a single run
        runs = pd.DataFrame()
    return runs.reindex(columns=list(dict.fromkeys([*runs.columns, *_RUN_COLUMNS])))


def _students(runs: pd.DataFrame, method: str, kind: str, **eq) -> pd.DataFrame:
    """Student rows of one method taught by one kind of teacher ("ce": the student without a teacher), further
    filtered by column == value pairs."""
    sel = runs[(runs["role"] == "student") & (runs["method"] == ("ce" if kind == "ce" else method))]
    if kind != "ce":
        sel = sel[sel["teacher_kind"] == kind]
    for col, value in eq.items():
        sel = sel[sel[col] == value]
    return sel


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"]


def _why_missing(frame: pd.DataFrame, kind: str) -> str | None:
    """None when `frame` has a finished run, else why it has none."""
    if len(_ok(frame)):
        return None
    return f"{LABELS[kind]}: " + ("students skipped (collapsed teacher)" if len(frame) else "no runs")


def _stat(values) -> tuple[float, float]:
    """Mean and std over seeds; the std is NaN (no error bar) below two seeds."""
    mean, std, n = mean_std(list(values))
    return mean, std if n > 1 else math.nan


def _pair_title(method: str, teacher: str, student: str) -> str:
    return f"{method_label(method)}: {teacher} → {student}"


def _kd_methods(layout: dict) -> list[str]:
    return [m for m in layout.get("methods", ["kd"]) if m != "ce"] or ["kd"]


def _label(cls: int, names: list[str]) -> str:
    return names[cls] if cls < len(names) else str(cls)


def _class_name(cls: int, names: list[str]) -> str:
    """"3" for digits, "3 (cat)" where classes have names."""
    name = _label(cls, names)
    return name if name == str(cls) else f"{cls} ({name})"


def _grouped_bars(ax, groups: list[str], series: list[tuple], values: bool = True, alpha: float = 1.0) -> None:
    """Bars of several series side by side per group; series = (label, color, means, stds). Missing values get
    an "n/a" mark; `values` prints each mean above its bar (so a 0 % bar is still visibly there)."""
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for i, (label, color, means, stds) in enumerate(series):
        means, stds = np.asarray(means, float), np.asarray(stds, float)
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, np.nan_to_num(means), width * 0.92, color=color, alpha=alpha, edgecolor=color, label=label,
               yerr=stds, capsize=3, error_kw={"elinewidth": 1, "ecolor": "0.2"})  # NaN std: no error bar
        for p, m, s in zip(pos, means, np.nan_to_num(stds)):
            if math.isnan(m):
                ax.text(p, 0.02, "n/a", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7,
                        color="0.3", rotation=90)
            elif values:
                ax.annotate(f"{m:.1f}", (p, m + s), xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", fontsize=7)
    ax.set_xticks(x, groups)
    ax.grid(axis="x", visible=False)


def _extent(series: list[tuple]) -> tuple[float, float]:
    """Lowest and highest mean ∓ std of the bar series (NaN, NaN when none has a value)."""
    ends = [(m - s, m + s) for *_, means, stds in series for m, s in zip(means, np.nan_to_num(stds))
            if not math.isnan(m)]
    return (min(e[0] for e in ends), max(e[1] for e in ends)) if ends else (math.nan, math.nan)


# --------------------------------------------------------------------------------------------- few-shot
@_themed
def fewshot_figure(runs_csv: str, layout: dict, metric: str, png: str, pdf: str) -> None:
    """Student accuracy against the fraction of training data, MLL vs MCMI teacher, one panel per method."""
    runs = read_runs(runs_csv)
    methods = _kd_methods(layout)
    teacher, student = layout["pairs"][0]
    fractions = sorted(layout["fractions"])
    acc = f"{metric}_acc"
    fig = Figure(figsize=(0.6 + 4.4 * len(methods), 3.6), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    ce = _ok(_students(runs, "ce", "ce"))
    for ax, method in zip(axes, methods):
        notes = []
        curves = [(kind, _students(runs, method, kind)) for kind in KINDS] + ([("ce", ce)] if len(ce) else [])
        for kind, frame in curves:
            if why := _why_missing(frame, kind):
                notes.append(why)
                continue
            ok = _ok(frame).assign(pct=lambda f: 100 * f["fraction"].astype(float))
            sns.lineplot(ok, x="pct", y=acc, ax=ax, color=COLORS[kind], label=LABELS[kind], marker="o",
                         errorbar="sd", err_style="band", linestyle="--" if kind == "ce" else "-", legend=False)
        ax.set_xscale("log")
        ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g}" for f in fractions])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set(title=_pair_title(method, teacher, student), xlabel="training data seen by the student (%, log)",
               ylabel=f"student test accuracy (%, {metric} epoch)")
        if notes:
            _note(ax, "\n".join(notes), y=0.5 if len(notes) == len(curves) else 0.08)
    handles = [Line2D([], [], color=COLORS[k], marker="o", label=LABELS[k]) for k in KINDS]
    if len(ce):
        handles.append(Line2D([], [], color=COLORS["ce"], marker="o", linestyle="--", label=LABELS["ce"]))
    _legend(fig, handles)
    _save(fig, png, pdf)


# --------------------------------------------------------------------------------------------- zero-shot
def _per_class(frame: pd.DataFrame, metric: str, cls: int) -> tuple[float, float]:
    return _stat(json.loads(v)[cls] for v in _ok(frame)[f"per_class_acc_{metric}"])


def _omitted_sets(layout: dict) -> list[tuple[str, list[int]]]:
    return [(".".join(str(c) for c in sorted(set(o))), sorted(set(o))) for o in layout["omitted"]]


@_themed
def zeroshot_bars_figure(runs_csv: str, layout: dict, metric: str, png: str, pdf: str) -> None:
    """Accuracy on each omitted class: CE only (0 % by construction), KD from the MLL and the MCMI teacher."""
    runs = read_runs(runs_csv)
    names = layout.get("class_names") or []
    methods = _kd_methods(layout)
    teacher, student = layout["pairs"][0]
    groups = [(key, omitted, cls) for key, omitted in _omitted_sets(layout) for cls in omitted]
    labels = [f"class {_class_name(c, names)}\nomitted {{{', '.join(map(str, o))}}}" for _, o, c in groups]
    fig = Figure(figsize=(1.2 + max(4.0, 1.6 * len(groups)) * len(methods), 3.8), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    for ax, method in zip(axes, methods):
        series, notes = [], []
        for kind in ("ce", *KINDS):
            sel = _students(runs, method, kind)
            stats = [_per_class(sel[sel["omitted"] == key], metric, cls) for key, _, cls in groups]
            series.append((LABELS[kind], COLORS[kind], [s[0] for s in stats], [s[1] for s in stats]))
            if why := _why_missing(sel, kind):
                notes.append(why)
        _grouped_bars(ax, labels, series)
        high = _extent(series)[1]
        ax.set_ylim(0, 1.35 * high if high >= 4 else 5)  # headroom for the values and a note
        ax.set(title=_pair_title(method, teacher, student), ylabel=f"accuracy on the class (%, {metric} epoch)")
        if notes:
            _note(ax, "\n".join(notes), y=0.92)
    _legend(fig, [Patch(color=COLORS[k], label=LABELS[k]) for k in ("ce", *KINDS)])
    _save(fig, png, pdf)


def _mean_confusion(frame: pd.DataFrame, metric: str) -> np.ndarray | None:
    """Row-normalised confusion (%) of the pooled seeds (every seed sees the same test set, so pooling the counts
    equals averaging the per-seed normalised matrices)."""
    mats = [np.asarray(json.loads(c), float) for c in _ok(frame)[f"confusion_{metric}"]]
    if not mats:
        return None
    counts = np.sum(mats, axis=0)
    return 100 * counts / counts.sum(axis=1, keepdims=True).clip(min=1)


def _class_ticks(ax, n: int, omitted: list[int], names: list[str]) -> None:
    # many classes: every 20th class and the omitted ones, dropping regular ticks too close to an omitted one
    ticks = list(range(n)) if n <= 20 else sorted(
        {t for t in range(0, n, 20) if all(abs(t - o) >= n / 15 for o in omitted)} | set(omitted))
    text = [names[t] if n <= 10 and t < len(names) else str(t) for t in ticks]
    ax.set_xticks([t + 0.5 for t in ticks], text, rotation=90 if n <= 10 and max(map(len, text)) > 2 else 0)
    ax.set_yticks([t + 0.5 for t in ticks], text, rotation=0)
    for axis in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, label in zip(ticks, axis):
            if tick in omitted:
                label.set(color=OMITTED_COLOR, fontweight="bold")


@_themed
def zeroshot_confusion_figure(runs_csv: str, layout: dict, metric: str, png: str, pdf: str) -> None:
    """Row-normalised confusion matrices (mean over seeds): one row per omitted set, columns CE only and KD from
    the MLL / MCMI teacher; the omitted classes' rows are boxed and their labels coloured."""
    runs = read_runs(runs_csv)
    names = layout.get("class_names") or []
    columns = [("ce", "ce")] + [(m, k) for m in _kd_methods(layout) for k in KINDS]
    sets = _omitted_sets(layout)
    cells = {(key, col): _students(runs, *col, omitted=key) for key, _ in sets for col in columns}
    cms = {cell: _mean_confusion(frame, metric) for cell, frame in cells.items()}
    n = next((cm.shape[0] for cm in cms.values() if cm is not None), len(names) or 10)
    side = 2.9 if n <= 10 else 3.4
    fig = Figure(figsize=(side * len(columns) + 1.0, side * len(sets) + 0.6), layout="constrained")
    axes = fig.subplots(len(sets), len(columns), squeeze=False)
    cmap = sns.color_palette("Blues", as_cmap=True)
    for row, (key, omitted) in enumerate(sets):
        for col, (method, kind) in enumerate(columns):
            ax, cm = axes[row, col], cms[(key, (method, kind))]
            ax.set_box_aspect(1)
            if cm is None:
                _note(ax, _why_missing(cells[(key, (method, kind))], kind).replace(": ", ":\n"))
                ax.set(xticks=[], yticks=[])
                ax.grid(False)
            else:
                annot = np.where(cm >= 0.5, np.vectorize(lambda v: f"{v:.0f}")(cm), "") if n <= 10 else False
                sns.heatmap(cm, ax=ax, vmin=0, vmax=100, cmap=cmap, cbar=False, annot=annot, fmt="",
                            annot_kws={"fontsize": 6.5}, linewidths=0.3 if n <= 10 else 0, linecolor="white")
                _class_ticks(ax, n, omitted, names)
                for c in omitted:
                    ax.add_patch(Rectangle((0, c), n, 1, fill=False, ec=OMITTED_COLOR, lw=1.6, clip_on=False))
            if row == 0:
                ax.set_title("CE only (no teacher)" if kind == "ce" else f"{method_label(method)} · {LABELS[kind]}",
                             color=COLORS[kind])
            if col == 0:
                ax.set_ylabel(f"omitted {{{', '.join(map(str, omitted))}}}\ntrue class")
            if row == len(sets) - 1:
                ax.set_xlabel("predicted class")
    fig.colorbar(mpl.cm.ScalarMappable(mpl.colors.Normalize(0, 100), cmap), ax=axes, shrink=0.7,
                 label="% of the true class's test images")
    fig.suptitle(f"Zero-shot students ({metric} epoch); omitted classes in red", fontweight="bold")
    _save(fig, png, pdf)


# --------------------------------------------------------------------------------------------- temperature
def _teacher_cmi(teachers: pd.DataFrame, temps: list[float]) -> list[float]:
    if not len(teachers):
        return [math.nan] * len(temps)
    row = teachers.iloc[0]
    return [float(row.get(f"cmi_T{t:g}", math.nan)) for t in temps]


@_themed
def temperature_figure(runs_csv: str, layout: dict, metric: str, png: str, pdf: str) -> None:
    """Fig. 1: KD student accuracy (bars, left axis) and the teacher's train-set CMI (lines, right axis)
    against the KD temperature T, for the MLL and the MCMI teacher; one panel per teacher–student pair."""
    runs = read_runs(runs_csv)
    temps = [float(t) for t in layout["temperatures"]]
    pairs = layout["pairs"]
    fig = Figure(figsize=(1.4 + max(4.5, 1.1 * len(temps)) * len(pairs), 3.9), layout="constrained")
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, (teacher, student) in zip(axes, pairs):
        series, notes = [], []
        for kind in KINDS:
            sel = _students(runs, "kd", kind, teacher_arch=teacher, student=student)
            stats = [_stat(_ok(sel[np.isclose(sel["temperature"].astype(float), t)])[f"{metric}_acc"]) for t in temps]
            series.append((LABELS[kind], COLORS[kind], [s[0] for s in stats], [s[1] for s in stats]))
            if why := _why_missing(sel, kind):
                notes.append(why)
        _grouped_bars(ax, [f"T = {t:g}" for t in temps], series, values=False, alpha=0.45)
        # bars start above 0 so that differences of a few tenths of a percent remain visible (see caption)
        low, high = _extent(series)
        if not math.isnan(low):
            span = max(high - low, 1.0)
            ax.set_ylim(max(0.0, low - 1.2 * span), min(100.0, high + 0.4 * span))
        ax.set(title=f"{teacher} → {student}", xlabel="KD temperature T",
               ylabel=f"KD student accuracy (%, {metric} epoch)")
        twin = ax.twinx()
        twin.grid(False)
        teachers = runs[runs["role"] == "teacher"]
        for kind, marker in zip(KINDS, "os"):
            cmi = _teacher_cmi(teachers[(teachers["teacher_arch"] == teacher) & (teachers["teacher_kind"] == kind)],
                               temps)
            twin.plot(np.arange(len(temps)), cmi, color=COLORS[kind], marker=marker, markeredgecolor="white",
                      markersize=7, lw=2)
            if all(math.isnan(c) for c in cmi):
                notes.append(f"{LABELS[kind]}: no CMI measured")
        twin.set_ylim(0, None)
        twin.set_ylabel("teacher CMI (training set)")
        if notes:
            _note(ax, "\n".join(notes), y=0.2)
    handles = ([Patch(facecolor=COLORS[k], alpha=0.45, edgecolor=COLORS[k],
                      label=f"KD student, {LABELS[k]} (bars, left)") for k in KINDS]
               + [Line2D([], [], color=COLORS[k], marker=m, markeredgecolor="white", markersize=7, lw=2,
                         label=f"CMI of the {LABELS[k]} (line, right)") for k, m in zip(KINDS, "os")])
    _legend(fig, handles, ncol=2, where="lower")
    _save(fig, png, pdf)


# --------------------------------------------------------------------------------------------- MCMI teachers
_CURVES = {  # panel title -> value of one history record (the MLL teacher's records have no neg_cmi: NaN)
    "train CE": lambda r, lam: r["train"]["ce"],
    "train CMI (−neg_cmi / λ)": lambda r, lam: -r["train"]["neg_cmi"] / lam,
    "test accuracy (%)": lambda r, lam: r["test_acc"],
    "test CMI": lambda r, lam: r["test_cmi"],
}


def _value(curve, record: dict | None, lam: float) -> float:
    """A finite number, or NaN for a missing or diverged (inf/NaN) value."""
    try:
        value = float(curve(record, lam))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _main_phase(metrics: dict) -> list[dict]:
    return [r for r in metrics.get("history", []) if r.get("phase", "main") == "main"]


@_themed
def teachers_mcmi_figure(metrics_files: list[str], png: str, pdf: str) -> None:
    """MCMI fine-tuning curves of every MCMI teacher (one row each) with the final values of the MLL teacher it
    started from as dashed references; a collapsed teacher's row says so in red."""
    metrics = [read_json(f) for f in metrics_files]
    mll = {m["teacher"]["arch"]: m for m in metrics if m["teacher"]["kind"] == "mll"}
    mcmi = sorted((m for m in metrics if m["teacher"]["kind"] == "mcmi"),
                  key=lambda m: (m["teacher"]["arch"], m["teacher"]["lambda"]))
    fig = Figure(figsize=(3.2 * len(_CURVES), 0.6 + 2.8 * max(len(mcmi), 1)), layout="constrained")
    if not mcmi:
        _note(fig.subplots(), "no MCMI teacher in this workflow")
    for sub, m in zip(np.atleast_1d(fig.subfigures(max(len(mcmi), 1), 1)), mcmi):
        arch, lam = m["teacher"]["arch"], float(m["teacher"]["lambda"])
        history, ref = _main_phase(m), mll.get(arch)
        ref_last = (_main_phase(ref) or [None])[-1] if ref else None
        title = f"{arch}: MCMI teacher, λ = {lam:g} (model accuracy {m['model_acc']:.2f} %)"
        if m.get("collapsed"):
            title += "\nCOLLAPSED: " + textwrap.shorten(str(m.get("collapse_reason")), 110)
        sub.suptitle(title, color=OMITTED_COLOR if m.get("collapsed") else "black", fontweight="bold")
        for ax, (name, curve) in zip(sub.subplots(1, len(_CURVES)), _CURVES.items()):
            ax.plot([r["epoch"] for r in history], [_value(curve, r, lam) for r in history], color=COLORS["mcmi"],
                    marker="o", ms=3.5)
            reference = (_value(lambda r, _: r["model_acc"], ref, lam) if name.startswith("test acc") and ref
                         else _value(curve, ref_last, lam))
            if not math.isnan(reference):
                ax.axhline(reference, color=COLORS["mll"], ls="--", lw=1.5)
            ax.set(title=name, xlabel="fine-tuning epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if not history:
                _note(ax, "no epochs recorded")
    _legend(fig, [Line2D([], [], color=COLORS["mcmi"], marker="o", ms=3.5, label="MCMI fine-tuning"),
                  Line2D([], [], color=COLORS["mll"], ls="--", label="MLL teacher (final value)")])
    _save(fig, png, pdf)


# --------------------------------------------------------------------------------------------- Eigen-CAM
def _show_image(ax, image: np.ndarray) -> None:
    """A uint8 (C, H, W) image, grey for one channel, colour for three."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    ax.grid(False)


@_themed
def cam_figure(cam_path: str, png: str, pdf: str, per_row: int = 5) -> None:
    """Fig. 3: each fixed test image beside its Eigen-CAM overlay, for the MLL (upper) and the MCMI teacher
    (lower row); `per_row` images per row, more images continue in further row pairs."""
    import torch

    cam = torch.load(cam_path, map_location="cpu", weights_only=False)
    images, labels = np.asarray(cam["images"]), np.asarray(cam["labels"]).tolist()
    names = list(cam.get("class_names") or [])
    teachers = [(key, cam["teachers"].get(key)) for key in ("MLL", "MCMI")]
    per_row = max(1, min(per_row, len(images)))
    blocks = max(1, math.ceil(len(images) / per_row))
    fig = Figure(figsize=(2.0 * per_row + 1.2, 3.0 * blocks + 0.5))
    outer = fig.add_gridspec(blocks, 1, hspace=0.28, left=0.08, right=0.9, top=0.9, bottom=0.04)
    grids = [outer[b].subgridspec(len(teachers), per_row, hspace=0.32, wspace=0.14) for b in range(blocks)]
    for i, image in enumerate(images):
        block, col = divmod(i, per_row)
        for r, (key, t) in enumerate(teachers):
            ax_img, ax_cam = (fig.add_subplot(g) for g in grids[block][r, col].subgridspec(1, 2, wspace=0.04))
            _show_image(ax_img, image)
            _show_image(ax_cam, image)
            if r == 0:  # the image's true class, centred over its pair of panels
                ax_img.text(1.02, 1.06, f"true: {_label(labels[i], names)}", transform=ax_img.transAxes,
                            ha="center", va="bottom", fontsize=9, fontweight="bold")
            if col == 0:
                lam = f"\nλ = {t['lambda']:g}" if t and t.get("lambda") is not None else ""
                ax_img.set_ylabel(f"{key} teacher{lam}", color=COLORS[key.lower()], fontweight="bold")
            if not t:
                _note(ax_cam, "no map")
                continue
            ax_cam.imshow(np.asarray(t["maps"][i]), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="nearest")
            pred = int(t["pred"][i])
            ax_cam.set_xlabel(f"pred: {_label(pred, names)}" + ("" if pred == labels[i] else " ✗"), fontsize=8,
                              color="0.25" if pred == labels[i] else OMITTED_COLOR, labelpad=2)
    arch, layer = next(((t["arch"], t["layer"]) for _, t in teachers if t), ("?", "?"))
    fig.suptitle(f"Eigen-CAM of the {arch} teachers at {layer} (each pair: input, map over the input)",
                 fontweight="bold")
    fig.colorbar(mpl.cm.ScalarMappable(mpl.colors.Normalize(0, 1), "jet"), cax=fig.add_axes((0.92, 0.3, 0.012, 0.4)),
                 label="Eigen-CAM (min–max scaled)")
    _save(fig, png, pdf)



# --------------------------------------------------------------------------------------------- main table
@_themed
def main_delta_figure(runs_csv: str, layout: dict, metric: str, png: str, pdf: str) -> None:
    """Gain of the MCMI teacher over the MLL teacher (Δ accuracy) for every framework and pair, as a heat map;
    each cell also gives the MLL → MCMI accuracies. Blank: not run (excluded) or no finished run."""
    runs = read_runs(runs_csv)
    numbers, _ = aggregate.main_table(runs, layout, metric)
    methods = [m for m in layout["methods"] if m != "ce"]
    pairs = [f"{t} → {s}" for t, s in layout["pairs"]]
    delta = pd.DataFrame(np.nan, index=[method_label(m) for m in methods], columns=pairs)
    text = pd.DataFrame("", index=delta.index, columns=pairs)
    if len(numbers):
        rows = numbers[numbers["row"].isin(methods)]
        for (pair, method), cell in rows.groupby(["pair", "row"]):
            by_kind = cell.set_index("teacher_kind")
            if {"mll", "mcmi"} <= set(by_kind.index):
                mll, mcmi = by_kind.loc["mll", "mean"], by_kind.loc["mcmi", "mean"]
                if not (math.isnan(mll) or math.isnan(mcmi)):
                    delta.loc[method_label(method), pair] = mcmi - mll
                    text.loc[method_label(method), pair] = f"{mcmi - mll:+.2f}\n{mll:.1f}→{mcmi:.1f}"
    fig = Figure(figsize=(max(6.0, 1.9 + 1.55 * len(pairs)), 1.6 + 0.48 * len(methods)))
    ax = fig.subplots()
    # symmetric colour scale around 0 (white), never narrower than ±0.1 points so a zero gain stays white
    limit = max(float(np.nanmax(np.abs(delta.to_numpy()))) if delta.notna().any().any() else 0.0, 0.1)
    sns.heatmap(delta, ax=ax, cmap="RdBu", center=0, vmin=-limit, vmax=limit, annot=text, fmt="",
                annot_kws={"fontsize": 7}, linewidths=0.5, linecolor="white",
                cbar_kws={"label": f"Δ top-1, points ({metric} epoch)"})
    ax.set_xlabel("teacher → student")
    ax.set_ylabel("")
    ax.set_title("Student accuracy: MCMI teacher − MLL teacher\n(mean over seeds; cells: Δ and MLL → MCMI accuracy)")
    ax.tick_params(axis="x", labelrotation=20)
    if not delta.notna().any().any():
        _note(ax, "no finished MLL/MCMI student pairs")
    _save(fig, png, pdf)
