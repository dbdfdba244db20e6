"""Shared figure machinery: seaborn's theme, saving to PNG and PDF, the runs table, bars, labels and notes; and the
teachers' fine-tuning figure. Each experiment kind draws its own figures with these (`mcmikd.experiments`).

Each figure is drawn on its own `matplotlib.figure.Figure` (rendered by Agg, no pyplot state shared between
figures) and saved as PNG and PDF. A panel without data (a collapsed teacher whose students were skipped, a run
that is missing) shows a note saying so instead of failing the job. Series are keyed by teacher objective; `None`
stands for the student trained without a teacher.
"""

from __future__ import annotations

import importlib
import math
import textwrap

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mcmikd import aggregate
from mcmikd.aggregate import mean_std, method_label  # noqa: F401  (re-exported for the experiment figures)
from mcmikd.io import atomic_path, read_json

NO_TEACHER_COLOR = "#8C8C8C"
NO_TEACHER_LABEL = "CE only (no teacher)"
OMITTED_COLOR = "#C0143C"
DPI = 150
_RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.15),
       "axes.titleweight": "bold", "legend.frameon": False, "pdf.fonttype": 42}


def theme():
    """Context manager: the project's seaborn theme for one figure."""
    return mpl.rc_context(_RC)


def draw(spec: str, inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Call a figure function named "module:function" (an experiment's declared figure)."""
    module, name = spec.split(":")
    getattr(importlib.import_module(module), name)(inputs, layout, metric, png, pdf)


def save(fig: Figure, png: str, pdf: str) -> None:
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            # no creation date in the PDF: the same data give the same file
            fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight",
                        metadata={"CreationDate": None} if fmt == "pdf" else None)


def note(ax, text: str, y: float = 0.5) -> None:
    """A visible explanation in a panel that lacks (some of) its data (`y` in axes coordinates)."""
    ax.text(0.5, y, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.25", zorder=10,
            bbox={"boxstyle": "round,pad=0.4", "fc": "#FFF6E0", "ec": "0.6"})


def legend(fig: Figure, handles, ncol: int | None = None, where: str = "upper") -> None:
    fig.legend(handles=handles, loc=f"outside {where} center", ncol=ncol or len(handles))


def label(objective: str | None, layout: dict) -> str:
    """'MLL teacher', 'MCMI teacher', ...; the teacher-free student for None."""
    return NO_TEACHER_LABEL if objective is None else f"{layout['labels'][objective]} teacher"


def color(objective: str | None, layout: dict) -> str:
    return NO_TEACHER_COLOR if objective is None else layout["colors"][objective]


# --------------------------------------------------------------------------------------------- runs tables
_RUN_COLUMNS = ["role", "teacher_arch", "teacher_objective", "teacher_variant", "student", "method", "fraction",
                "omitted", "temperature", "seed", "status", "reason", "best_acc", "last_acc", "per_class_acc_best",
                "per_class_acc_last", "confusion_best", "confusion_last"]


def read_runs(path: str) -> pd.DataFrame:
    """A runs table with every column the figures use (absent ones empty)."""
    try:
        runs = aggregate.read_runs(path)
    except pd.errors.EmptyDataError:  # an experiment without a single run
        runs = pd.DataFrame()
    return runs.reindex(columns=list(dict.fromkeys([*runs.columns, *_RUN_COLUMNS])))


def students(runs: pd.DataFrame, method: str, objective: str | None, **eq) -> pd.DataFrame:
    """Student rows of one method taught by a teacher of one objective (None: the student without a teacher, any
    method given), further filtered by column == value pairs."""
    sel = runs[(runs["role"] == "student") & (runs["method"] == ("ce" if objective is None else method))]
    if objective is not None:
        sel = sel[sel["teacher_objective"] == objective]
    for col, value in eq.items():
        sel = sel[sel[col] == value]
    return sel


def ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"]


def why_missing(frame: pd.DataFrame, objective: str | None, layout: dict) -> str | None:
    """None when `frame` has a finished run, else why it has none."""
    if len(ok(frame)):
        return None
    if not len(frame):
        return f"{label(objective, layout)}: no runs"
    statuses = set(frame["status"])
    what = "students diverged" if statuses == {"diverged"} else "students skipped (collapsed teacher)"
    return f"{label(objective, layout)}: {what}"


def stat(values) -> tuple[float, float]:
    """Mean and std over seeds; the std is NaN (no error bar) below two seeds."""
    mean, std, n = mean_std(list(values))
    return mean, std if n > 1 else math.nan


def pair_title(method: str, teacher: str, student: str) -> str:
    return f"{method_label(method)}: {teacher} → {student}"


def kd_methods(layout: dict) -> list[str]:
    return [m for m in layout.get("methods", ["kd"]) if m != "ce"] or ["kd"]


def class_label(cls: int, names: list[str]) -> str:
    return names[cls] if cls < len(names) else str(cls)


def class_name(cls: int, names: list[str]) -> str:
    """"3" for digits, "3 (cat)" where classes have names."""
    name = class_label(cls, names)
    return name if name == str(cls) else f"{cls} ({name})"


def grouped_bars(ax, groups: list[str], series: list[tuple], values: bool = True, alpha: float = 1.0) -> None:
    """Bars of several series side by side per group; series = (label, color, means, stds). Missing values get
    an "n/a" mark; `values` prints each mean above its bar (so a 0 % bar is still visibly there)."""
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for i, (name, colour, means, stds) in enumerate(series):
        means, stds = np.asarray(means, float), np.asarray(stds, float)
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, np.nan_to_num(means), width * 0.92, color=colour, alpha=alpha, edgecolor=colour, label=name,
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


def extent(series: list[tuple]) -> tuple[float, float]:
    """Lowest and highest mean ∓ std of the bar series (NaN, NaN when none has a value)."""
    ends = [(m - s, m + s) for *_, means, stds in series for m, s in zip(means, np.nan_to_num(stds))
            if not math.isnan(m)]
    return (min(e[0] for e in ends), max(e[1] for e in ends)) if ends else (math.nan, math.nan)


def mean_confusion(frame: pd.DataFrame, metric: str) -> np.ndarray | None:
    """Row-normalised confusion (%) of the pooled seeds (every seed sees the same test set, so pooling the counts
    equals averaging the per-seed normalised matrices)."""
    from mcmikd.confusion import decode

    mats = [np.asarray(decode(c), float) for c in ok(frame)[f"confusion_{metric}"]]
    if not mats:
        return None
    counts = np.sum(mats, axis=0)
    return 100 * counts / counts.sum(axis=1, keepdims=True).clip(min=1)


def class_ticks(ax, n: int, omitted: list[int], names: list[str]) -> None:
    """Class ticks of a confusion matrix; many classes: every 20th class and the omitted ones (in red)."""
    ticks = list(range(n)) if n <= 20 else sorted(
        {t for t in range(0, n, 20) if all(abs(t - o) >= n / 15 for o in omitted)} | set(omitted))
    text = [names[t] if n <= 10 and t < len(names) else str(t) for t in ticks]
    ax.set_xticks([t + 0.5 for t in ticks], text, rotation=90 if n <= 10 and max(map(len, text)) > 2 else 0)
    ax.set_yticks([t + 0.5 for t in ticks], text, rotation=0)
    for axis in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, text_label in zip(ticks, axis):
            if tick in omitted:
                text_label.set(color=OMITTED_COLOR, fontweight="bold")


def show_image(ax, image: np.ndarray) -> None:
    """A uint8 (C, H, W) image, grey for one channel, colour for three."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    ax.grid(False)


# --------------------------------------------------------------------------------------------- fine-tuned teachers
_CURVES = {  # panel title -> value of one history record (records without the term: NaN)
    "train CE": lambda r, hp: r["train"]["ce"],
    "train CMI term (−neg_cmi / λ)": lambda r, hp: -r["train"]["neg_cmi"] / hp["lambda"],
    "test accuracy (%)": lambda r, hp: r["test_acc"],
    "test CMI": lambda r, hp: r["test_cmi"],
}


_CHECK = {  # the teacher-side check of each epoch (record["teacher"]): label -> (key, line style)
    "CMI (fresh centroids)": ("cmi", "-"),
    "KL to the loss's centroids": ("frozen_kl", "--"),
    "drift = KL − CMI": ("drift", ":"),
}
_CHECK_TITLE = "teacher check, train (nats)"


def _value(curve, record: dict | None, hp: dict) -> float:
    """A finite number, or NaN for a missing or diverged (inf/NaN) value."""
    try:
        value = float(curve(record, hp))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _main_phase(metrics: dict) -> list[dict]:
    return [r for r in metrics.get("history", []) if r.get("phase", "main") == "main"]


def _teacher_check(ax, histories: list[list[dict]], colour: str) -> None:
    """The teacher's CMI on the clean training images (eval mode, T = 1, fresh centroids), the mean KL to the
    centroids its loss uses and their difference, the drift (docs/paper.md, "What fine-tuning with frozen centroids
    does"), after each epoch; one thin line per teacher seed (`histories`)."""
    epochs = sorted({r["epoch"] for history in histories for r in history})
    drawn = False
    for label, (key, style) in _CHECK.items():
        for i, history in enumerate(histories):
            ys = [_value(lambda r, _: r["teacher"][key], r, {}) for r in history]  # noqa: B023 (called at once)
            if not all(math.isnan(y) for y in ys):
                ax.plot([r["epoch"] for r in history], ys, color=colour, ls=style, marker="o", ms=2.5,
                        lw=1.5 if len(histories) == 1 else 1.0, label=label if i == 0 else None)
                drawn = True
    ax.set(title=_CHECK_TITLE, xlabel="fine-tuning epoch")
    if drawn:
        ax.legend(fontsize=7, loc="best")
    else:
        note(ax, "not recorded")
    if 0 < len(epochs) <= 12:
        ax.set_xticks(epochs)


def teacher_seed(metrics: dict) -> int:
    """The teacher seed of a teacher's metrics.json (`seed`; older files: their provenance's seed)."""
    return int(metrics.get("seed", metrics.get("provenance", {}).get("seed", 0)) or 0)


def teachers_finetuning_figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Fine-tuning curves of every fine-tuned teacher (one row per architecture and variant, one thin line per
    teacher seed; `inputs` = all teachers' metrics.json, every seed) with the final values of the teacher of the
    same seed it started from as dashed references; a row with a collapsed seed says so in red.
    The last panel is the teacher-side check of each epoch (`TeacherObjective.epoch_diagnostics`): the true CMI,
    the KL to the loss's centroids and the drift, in nats.
    `layout['start_from']` maps each fine-tuning objective to the objective it starts from."""
    with theme():
        metrics = [read_json(f) for f in inputs]
        starts = layout["start_from"]
        by_key = {(m["teacher"]["arch"], m["teacher"]["objective"], teacher_seed(m)): m for m in metrics}
        order = list(starts)
        groups: dict[tuple, list[dict]] = {}
        for m in sorted((m for m in metrics if m["teacher"]["objective"] in starts), key=teacher_seed):
            t = m["teacher"]
            groups.setdefault((t["arch"], order.index(t["objective"]), t["variant"]), []).append(m)
        tuned = [groups[k] for k in sorted(groups)]
        fig = Figure(figsize=(3.2 * (len(_CURVES) + 1), 0.6 + 2.8 * max(len(tuned), 1)), layout="constrained")
        if not tuned:
            note(fig.subplots(), "no fine-tuned teacher in this workflow")
        for sub, seeds in zip(np.atleast_1d(fig.subfigures(max(len(tuned), 1), 1)), tuned):
            t = seeds[0]["teacher"]
            thin = len(seeds) > 1
            colour = layout["colors"].get(t["objective"], "#555555")
            ref_colour = layout["colors"].get(starts[t["objective"]], "#555555")
            accs = [m["model_acc"] for m in seeds]
            if thin:
                mean = sum(accs) / len(accs)
                std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))
                title = (f"{t['arch']}: {t['variant']} teacher, {len(seeds)} seeds (model accuracy {mean:.2f} ± "
                         f"{std:.2f} %)")
            else:
                title = (f"{t['arch']}: {t['variant']} teacher, seed {teacher_seed(seeds[0])} (model accuracy "
                         f"{accs[0]:.2f} %)")
            collapsed = [m for m in seeds if m.get("collapsed")]
            for m in collapsed:
                title += (f"\nCOLLAPSED (seed {teacher_seed(m)}): "
                          + textwrap.shorten(str(m.get("collapse_reason")), 100))
            sub.suptitle(title, color=OMITTED_COLOR if collapsed else "black", fontweight="bold")
            axes = sub.subplots(1, len(_CURVES) + 1)
            _teacher_check(axes[-1], [_main_phase(m) for m in seeds], colour)
            for ax, (name, curve) in zip(axes, _CURVES.items()):
                all_nan, epochs = True, set()
                for m in seeds:
                    history = _main_phase(m)
                    ref = by_key.get((t["arch"], starts[t["objective"]], teacher_seed(m)))
                    ref_last = (_main_phase(ref) or [None])[-1] if ref else None
                    ys = [_value(curve, r, t["hp"]) for r in history]
                    all_nan &= all(math.isnan(y) for y in ys)
                    epochs |= {r["epoch"] for r in history}
                    ax.plot([r["epoch"] for r in history], ys, color=colour, marker="o", ms=2.5 if thin else 3.5,
                            lw=1.0 if thin else 1.5)
                    reference = (_value(lambda r, _: r["model_acc"], ref, t["hp"])
                                 if name.startswith("test acc") and ref else _value(curve, ref_last, t["hp"]))
                    if not math.isnan(reference):
                        ax.axhline(reference, color=ref_colour, ls="--", lw=1.0 if thin else 1.5)
                ax.set(title=name, xlabel="fine-tuning epoch")
                epochs = sorted(epochs)
                if 0 < len(epochs) <= 12:
                    ax.set_xticks(epochs)  # whole epochs only, also for one or two epochs
                else:
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if not epochs:
                    note(ax, "no epochs recorded")
                elif all_nan:
                    note(ax, "not part of this objective's loss")
                    ax.set(xticks=[], yticks=[])
        handles = [Line2D([], [], color=layout["colors"][o], marker="o", ms=3.5, label=f"{layout['labels'][o]} "
                          "fine-tuning") for o in starts if o in layout["colors"]]
        handles += [Line2D([], [], color=layout["colors"][s], ls="--", label=f"{layout['labels'][s]} teacher "
                           "(final value)") for s in sorted(set(starts.values())) if s in layout["colors"]]
        legend(fig, handles)
        save(fig, png, pdf)
