"""Table `cam` and its figure: the CAM measurements (`mcmikd.jobs.cam.run_cam_measure`, one JSON per teacher
architecture and seed) summarised with seed-level intervals (`mcmikd.stats.paired`).

Two claims are measured (issue 18):
* Eigen-CAM's (Muhammad & Yeasin, IJCNN 2020, abstract: "up to 12 % better" weakly-supervised localization than
  Grad-CAM / Grad-CAM++): localization accuracy (IoU ≥ 0.5, GT-known), mean IoU and the pointing game of each
  map method on the same teachers and layer, and the paired differences Eigen-CAM − Grad-CAM(++);
* the MCMI paper's (Ye et al., ICLR 2024, §4.4: MCMI teachers' maps "capture more contextual information"): the
  Eigen-CAM map's mass outside the object box (context), its area above a fraction of its maximum and its spatial
  entropy per compared teacher, and the paired differences of each teacher against the reference (MLL) teacher.

Each seed's value is the mean over the test images; differences are paired by image within a seed, then the
seeds' mean differences get a Student-t interval (n = teacher seeds). Units: accuracy and pointing in %, IoU,
context and area as fractions, entropy normalised to [0, 1].
"""

from __future__ import annotations

import math

METRICS = {"localized": ("Loc. acc. (%)", 100.0), "maxbox": ("MaxBoxAcc (%)", 100.0), "iou": ("IoU", 1.0),
           "pointing": ("Pointing (%)", 100.0),
           "context": ("Context (mass outside box)", 1.0), "area": ("Area above threshold", 1.0),
           "entropy": ("Spatial entropy", 1.0)}
METHOD_LABELS = {"eigencam": "Eigen-CAM (centred)", "eigencam_uncentered": "Eigen-CAM (paper's, uncentred)",
                 "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++"}
LOCALIZATION = ("localized", "maxbox", "iou", "pointing")
CONTEXT = ("context", "area", "entropy")


def _mean(values) -> float:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(v) / len(v) if v else math.nan


def read_measures(paths: list[str]) -> list[dict]:
    """The measurement records (validated: every per-image list as long as `images`). DamagedError / DataError for
    a file that cannot be trusted."""
    from mcmikd.errors import DataError
    from mcmikd.io import read_json, verify_file

    out = []
    for path in paths:
        verify_file(path)
        record = read_json(path)
        n = record.get("images")
        for objective, methods in record.get("metrics", {}).items():
            for method, scores in methods.items():
                for key, values in scores.items():
                    if not isinstance(values, list) or len(values) != n:
                        raise DataError(f"{path}: {objective}/{method}/{key} holds {len(values)} values for {n} "
                                        f"images; rerun its cam_measure job")
        out.append(record)
    return out


def _maxbox(scores: dict) -> list | None:
    """Per image, localization at the threshold where this map method's accuracy over the images is best
    (MaxBoxAcc, Choe et al., CVPR 2020), or None without a threshold sweep."""
    swept = [k for k in scores if k.startswith("localized@")]
    if not swept:
        return None
    return scores[max(swept, key=lambda k: (_mean(scores[k]), -float(k.split("@")[1])))]


def per_seed(records: list[dict]) -> list[dict]:
    """One row per (arch, teacher seed, objective, method, metric): the mean over the test images (MaxBoxAcc: at
    the best threshold of that seed, objective and method)."""
    rows = []
    for r in records:
        for objective, methods in r["metrics"].items():
            for method, scores in methods.items():
                for key in METRICS:
                    values = _maxbox(scores) if key == "maxbox" else scores.get(key)
                    if values is not None:
                        rows.append({"arch": r["arch"], "teacher_seed": r["teacher_seed"], "objective": objective,
                                     "method": method, "metric": key, "value": _mean(values) * METRICS[key][1]})
    return rows


def paired_seed_differences(records: list[dict], a: tuple[str, str], b: tuple[str, str], metric: str) -> list[float]:
    """Per teacher seed, the mean over images of (a − b) for `metric`; a, b: (objective, method)."""
    diffs = []
    for r in records:
        try:
            sa, sb = r["metrics"][a[0]][a[1]], r["metrics"][b[0]][b[1]]
            x, y = (_maxbox(sa), _maxbox(sb)) if metric == "maxbox" else (sa[metric], sb[metric])
        except KeyError:
            continue
        if x is None or y is None:
            continue
        pairs = [(float(u), float(v)) for u, v in zip(x, y) if u is not None and v is not None
                 and not math.isnan(float(u)) and not math.isnan(float(v))]
        if pairs:
            diffs.append(sum(u - v for u, v in pairs) / len(pairs) * METRICS[metric][1])
    return diffs


def _show(s: dict, digits: int) -> str:
    if s["n"] == 0 or math.isnan(s["mean"]):
        return "–"
    if s["n"] < 2 or math.isnan(s["ci"]):
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['ci']:.{digits}f}"


def tables(records: list[dict], layout: dict):
    """(numbers: long DataFrame, summary display frame, differences display frame). `layout`: objectives (display
    order, the first the reference), labels, methods, archs, thresholds."""
    import pandas as pd

    from mcmikd.stats import paired

    rows = per_seed(records)
    frame = pd.DataFrame(rows)
    numbers, summary, diffs = [], [], []
    objectives, methods = layout["objectives"], layout["methods"]
    labels = layout["labels"]
    for arch in layout["archs"]:
        mine = [r for r in records if r["arch"] == arch]
        if not mine:
            continue
        images = mine[0]["images"]
        for objective in objectives:
            for method in methods:
                shown = {"Teacher": f"{arch} {labels.get(objective, objective)}", "Map": METHOD_LABELS[method],
                         "Seeds × images": f"{len(mine)} × {images}"}
                for key, (title, _) in METRICS.items():
                    if method not in ("eigencam", "eigencam_uncentered") and key in CONTEXT:
                        shown[title] = ""  # the context claim is about the paper's Eigen-CAM maps only
                        continue
                    sel = frame[(frame["arch"] == arch) & (frame["objective"] == objective)
                                & (frame["method"] == method) & (frame["metric"] == key)] if len(frame) else frame
                    s = paired(list(sel["value"])) if len(sel) else paired([])
                    numbers.append({"part": "summary", "arch": arch, "objective": objective, "method": method,
                                    "metric": key, "versus": "", "n_seeds": s["n"], "images": images,
                                    "mean": s["mean"], "std": s["std"], "ci95": s["ci"], "p": math.nan})
                    shown[title] = _show(s, 1 if METRICS[key][1] == 100 else 3)
                summary.append(shown)
        # Eigen-CAM's claim: each Eigen-CAM against each gradient baseline, per teacher, paired by image
        for objective in objectives:
            for eigen in [m for m in methods if m.startswith("eigencam")]:
                for base in [m for m in methods if m.startswith("gradcam")]:
                    row = {"Comparison": f"{arch} {labels.get(objective, objective)}: {METHOD_LABELS[eigen]} − "
                                         f"{METHOD_LABELS[base]}"}
                    for key in LOCALIZATION:
                        s = paired(paired_seed_differences(mine, (objective, eigen), (objective, base), key))
                        numbers.append({"part": "difference", "arch": arch, "objective": objective, "method": eigen,
                                        "metric": key, "versus": f"{objective}/{base}", "n_seeds": s["n"],
                                        "images": images, "mean": s["mean"], "std": s["std"], "ci95": s["ci"],
                                        "p": s["p"]})
                        row[f"Δ {METRICS[key][0]}"] = _show(s, 1 if METRICS[key][1] == 100 else 3)
                    diffs.append(row)
        # the MCMI paper's claim: each teacher's Eigen-CAM against the reference teacher's, paired by image
        reference = objectives[0]
        for objective in objectives[1:]:
            for eigen in [m for m in methods if m.startswith("eigencam")]:
                row = {"Comparison": f"{arch} {METHOD_LABELS[eigen]}: {labels.get(objective, objective)} − "
                                     f"{labels.get(reference, reference)}"}
                for key in (*CONTEXT, *LOCALIZATION):
                    s = paired(paired_seed_differences(mine, (objective, eigen), (reference, eigen), key))
                    numbers.append({"part": "difference", "arch": arch, "objective": objective, "method": eigen,
                                    "metric": key, "versus": f"{reference}/{eigen}", "n_seeds": s["n"],
                                    "images": images, "mean": s["mean"], "std": s["std"], "ci95": s["ci"],
                                    "p": s["p"]})
                    if key in CONTEXT or key == "localized":
                        row[f"Δ {METRICS[key][0]}"] = _show(s, 1 if METRICS[key][1] == 100 else 3)
                diffs.append(row)
    summary, diffs = pd.DataFrame(summary), pd.DataFrame(diffs).fillna("")
    summary.attrs["footnotes"] = [
        f"Mean over teacher seeds of the per-seed mean over every test image, ± the half-width of its 95 % Student-t "
        f"interval over seeds. Box: largest connected region above {layout['box_threshold']:g} of the map's maximum "
        f"(CAM protocol); localized: IoU ≥ 0.5 with the object box, whatever the prediction (GT-known); MaxBoxAcc: "
        f"the same at each method's best threshold of {layout.get('box_thresholds', [])} (Choe et al., CVPR 2020); "
        f"pointing: "
        f"the map's maximum inside the box (no tolerance); Grad-CAM/Grad-CAM++ (pytorch-grad-cam) of the true class. "
        f"Context: share of the map's mass outside the object box; area: share of pixels above "
        f"{layout['area_threshold']:g} of the maximum; entropy: Shannon entropy of the normalised map / log(H·W)."]
    diffs.attrs["footnotes"] = [
        "Differences paired by image within each teacher seed (the same image, teacher and layer), then the seeds' "
        "mean differences with a 95 % Student-t interval; an interval that contains 0 is no evidence either way."]
    return pd.DataFrame(numbers), summary, diffs


def write_cam_table(measures: list[str], layout: dict, csv_out: str, md_out: str, tex_out: str,
                    seeds_out: str | None = None):
    """Writes table `cam` (CSV numbers; Markdown and LaTeX display) from the measurement files, and with `seeds_out`
    the per-seed means (arch, teacher_seed, objective, method, metric, value, images; what `mcmikd compare` reads)."""
    from mcmikd.aggregate import to_latex, to_markdown
    from mcmikd.io import write_text

    records = read_measures(measures)
    numbers, summary, diffs = tables(records, layout)
    split = records[0].get("evaluated_on", "test") if records else "test"
    first = f"CAM localization and context on every {split} image (mean ± 95 % CI over teacher seeds)"
    second = "Paired differences (Eigen-CAM against the gradient baselines; each teacher against the reference)"
    write_text(csv_out, numbers.to_csv(index=False))
    if seeds_out is not None:
        import pandas as pd

        images = {(r["arch"], r["teacher_seed"]): r["images"] for r in records}
        seeds = pd.DataFrame([{**row, "images": images[(row["arch"], row["teacher_seed"])]}
                              for row in per_seed(records)])
        write_text(seeds_out, seeds.to_csv(index=False))
    write_text(md_out, to_markdown(summary, first) + "\n" + to_markdown(diffs, second))
    write_text(tex_out, to_latex(summary, first) + "\n" + to_latex(diffs, second))
    return numbers


def figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Left: localization accuracy (%) of each map method per compared teacher (bars: mean over teacher seeds,
    whiskers: 95 % t-interval). Right: context, area and entropy of the Eigen-CAM maps per compared teacher."""
    import numpy as np
    from matplotlib.figure import Figure as MplFigure

    from mcmikd import plots
    from mcmikd.stats import paired

    with plots.theme():
        records = read_measures(inputs)
        frame = per_seed(records)
        objectives, methods = layout["objectives"], layout["methods"]
        fig = MplFigure(figsize=(14, 3.6), layout="constrained")
        axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [2.2, 1, 1, 1]})

        def stat(objective, method, key):
            s = paired([r["value"] for r in frame if r["objective"] == objective and r["method"] == method
                        and r["metric"] == key])
            return s["mean"], (0.0 if math.isnan(s["ci"]) else s["ci"])

        width = 0.8 / max(1, len(objectives))
        x = np.arange(len(methods))
        shown = "maxbox" if any(r["metric"] == "maxbox" for r in frame) else "localized"
        for k, objective in enumerate(objectives):
            vals = [stat(objective, m, shown) for m in methods]
            axes[0].bar(x + (k - (len(objectives) - 1) / 2) * width, [v[0] for v in vals], width,
                        yerr=[v[1] for v in vals], capsize=3, color=plots.color(objective, layout),
                        label=plots.label(objective, layout))
        axes[0].set_xticks(x)
        axes[0].set_xticklabels([METHOD_LABELS[m].replace(" (", "\n(") for m in methods], fontsize=8)
        axes[0].set(ylabel=f"{METRICS[shown][0]}, IoU ≥ 0.5", title="Weakly-supervised localization")
        axes[0].legend(fontsize=8)
        eigen = "eigencam" if "eigencam" in methods else next((m for m in methods if m.startswith("eigencam")), None)
        for ax, key in zip(axes[1:], CONTEXT):
            if eigen is None:
                plots.note(ax, "no Eigen-CAM measured")
                continue
            vals = [stat(o, eigen, key) for o in objectives]
            ax.bar(range(len(objectives)), [v[0] for v in vals], yerr=[v[1] for v in vals], capsize=3,
                   color=[plots.color(o, layout) for o in objectives])
            ax.set_xticks(range(len(objectives)))
            ax.set_xticklabels([plots.label(o, layout) for o in objectives], fontsize=8, rotation=20)
            ax.set(title=f"{METRICS[key][0]}\n({METHOD_LABELS[eigen]})")
        fig.suptitle(f"CAMs measured against the object boxes ({', '.join(layout['archs'])} teachers, "
                     f"{len(records)} teacher seed-files)", fontweight="bold")
        plots.save(fig, png, pdf)
