"""The λ sweep: for each teacher → student pair, one teacher fine-tuned at each value of a fine-tuning objective's
path hyper-parameter (by default MCMI's λ in CE − λ·KL(P_x ‖ Q_y), Ye et al., ICLR 2024, §4 and the official sweep
λ ∈ {0.1, …, 0.35}), its test accuracy and train-set CMI (nats, T = 1), and the KD student distilled from it.

Every swept teacher fine-tunes the one shared teacher its objective starts from (MLL); its variant is the objective's
usual result folder (`mcmi-0.1`, ...), so a λ equal to the one other experiments use is the same teacher, and its
KD student (setting `full`) the main experiment's KD student. The other compared objectives (`objectives`, default
`teachers.objectives`, minus the swept one) are reference rows: the first (MLL, λ = 0 conceptually) is the
reference of every Δ, and the λ = 0 control (`ce_finetune`) shows what the extra fine-tuning alone does.

The sweep's table reports accuracy at every λ; the rule `choose_lambda` applies the recipe rule (`choose`) to it
and writes `tables/lambda_sweep_choice.{yaml,md}` (in the report), saying which data it was chosen on. The λ every
other experiment uses stays fixed in `teachers.hp.<objective>` (or an experiment's `hp` override): a choice is
copied there by hand. To choose λ on held-out training data rather than the test set, run the sweep in a config of
its own with `dataset.validation` on (its tables then say "validation"); `mcmikd recipe` applies the same rule over
several runs (e.g. two machines).
"""

from __future__ import annotations

import sys

from mcmikd.errors import ConfigError
from mcmikd.experiments.base import NUMBERS, PAIR, Experiment, Figure

CAPTION = (
    "The λ sweep: for each teacher → student pair, left, each swept teacher's conditional mutual information on the "
    "training set (nats, T = 1; mean ± std over the teacher seeds) against the swept hyper-parameter; right, the "
    "top-1 test accuracy (%, "
    "{{ snakemake.params.metric }} epoch, mean ± std over seeds) of the KD student distilled from it. Horizontal "
    "dashed lines: the reference teacher (MLL, λ = 0) and any other compared teacher (the λ = 0 fine-tuning "
    "control), which the sweep does not change. A cross marks a λ with a collapsed teacher seed (no student "
    "distilled from that seed).")


class LambdaSweep(Experiment):
    name = "lambda_sweep"
    title = "λ sweep"
    properties = {
        "pairs": {"type": "array", "items": PAIR, "minItems": 1,
                  "description": "teacher → KD student pairs; one sweep per pair"},
        "lambdas": {**NUMBERS, "description": "values of the swept hyper-parameter (> 0): one teacher fine-tuned "
                                              "at each from the shared start teacher, with its KD student"},
        "objective": {"type": "string", "description": "the fine-tuning objective whose path hyper-parameter is "
                                                       "swept (default: the first compared one that has one)"},
        "key": {"type": "string", "description": "the path hyper-parameter swept (default: the objective's first)"},
        "cliff": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 1.0,
                  "description": "points of test (or validation) accuracy by which a swept teacher seed may fall "
                                 "below its own MLL start seed before it counts as gone over the cliff (the recipe "
                                 "rule's accuracy margin)"},
    }
    required = ("pairs", "lambdas")
    caption = "Teacher accuracy (%), teacher CMI (nats) and KD student accuracy (%) against λ"
    note = (
        "λ sweep: for each teacher → student pair and each value of λ (the weight of the CMI term the teacher is "
        "fine-tuned with, starting from the shared MLL teacher), the fine-tuned teacher's test accuracy and CMI on the "
        "training set (nats, softmax at T = 1), and the accuracy of the KD student distilled from it (mean ± std over "
        "seeds) with its gain Δ over the student of the reference (first) teacher. The reference rows (λ column "
        "\"–\") are the compared teachers the sweep does not change: the MLL teacher (λ = 0) and, when compared, the "
        "λ = 0 fine-tuning control. A \"collapsed teacher\" cell means the fine-tuning destroyed that teacher, so no "
        "student was distilled from it. Test accuracy at every λ is reported; λ is not chosen on held-out data.")

    # ------------------------------------------------------------------ config (parse time)
    def swept(self) -> str:
        """The objective whose path hyper-parameter is swept."""
        if "objective" in self.body:
            return self.body["objective"]
        named = [o for o in self.objectives() if self.grid.objective_class(o).path_keys
                 and self.grid.objective_class(o).start_from is not None]  # MLL's stop_epoch is not swept
        return named[0] if named else ""

    def key(self) -> str:
        if "key" in self.body:
            return self.body["key"]
        keys = self.grid.objective_class(self.swept()).path_keys if self.swept() else ()
        return keys[0] if keys else ""

    def references(self) -> list[str]:
        """The compared objectives the sweep leaves alone; the first is the reference of every Δ."""
        return [o for o in self.objectives() if o != self.swept()]

    def check(self, where: str) -> None:
        from mcmikd.registry import lookup
        from mcmikd.teachers import OBJECTIVES

        if not self.swept():
            raise ConfigError(f"config key '{where}.objective': no compared objective has a path hyper-parameter to "
                              f"sweep; name one (e.g. a fine-tuning objective of teachers.objectives)")
        cls = lookup(OBJECTIVES, self.swept(), "teacher objective", key=f"{where}.objective")
        if cls.start_from is None:
            raise ConfigError(f"config key '{where}.objective': '{cls.name}' trains from scratch; sweep a fine-tuning "
                              f"objective, which starts from the shared teacher")
        numeric = [k for k in cls.path_keys if isinstance(cls.defaults.get(k), (int, float))
                   and not isinstance(cls.defaults.get(k), bool)]
        if self.key() not in numeric:
            what = "takes no numbers" if self.key() in cls.path_keys else "is not a path hyper-parameter"
            raise ConfigError(f"config key '{where}.key': {self.key()!r} {what} of '{cls.name}'; sweep one of "
                              f"{numeric or '(none)'} (other choices, e.g. centroids: experiments.recipes)")
        if not self.references():
            raise ConfigError(f"config key '{where}.objectives': the sweep needs a reference teacher besides "
                              f"'{cls.name}'; list it first (e.g. {cls.start_from})")
        if self.objectives()[0] == self.swept():
            raise ConfigError(f"config key '{where}.objectives': the first objective is the reference of every Δ and "
                              f"cannot be the swept '{cls.name}'; list {cls.start_from} first")
        for i, value in enumerate(self.body["lambdas"]):
            cls.check_hp({self.key(): value}, f"{where}.lambdas[{i}]")

    def methods(self) -> list[str]:
        return ["kd"]

    def lambdas(self) -> list[float]:
        return [float(v) for v in self.body["lambdas"]]

    def compared_teachers(self, pair: dict) -> list[tuple[str, dict]]:
        return ([(o, {}) for o in self.references()]
                + [(self.swept(), {self.key(): value}) for value in self.lambdas()])

    def layout(self) -> dict:
        layout = super().layout()
        cls = self.grid.objective_class(self.swept())
        layout["labels"][cls.name], layout["colors"][cls.name] = cls.label, cls.color
        return layout

    def extra_layout(self) -> dict:
        variants = {}  # teacher arch -> {"references": {objective: variant}, "sweep": [variant per λ]}
        for pair in self.pairs():
            arch, n = pair["teacher"], len(self.references())
            named = [self.grid.teacher_variant(arch, o, self, override) for o, override in self.compared_teachers(pair)]
            variants[arch] = {"references": dict(zip(self.references(), named[:n])), "sweep": named[n:]}
        return {"swept": self.swept(), "key": self.key(), "lambdas": self.lambdas(), "references": self.references(),
                "variants": variants, "cliff": float(self.body.get("cliff", 1.0))}

    def figures(self) -> list[Figure]:
        return [Figure(self.name, "mcmikd.experiments.lambda_sweep:figure", (self.runs_file(),), CAPTION,
                       self.title, "teacher CMI and KD student vs λ", self.layout())]

    # ------------------------------------------------------------------ job time
    @classmethod
    def rows(cls, runs, layout: dict, metric: str) -> list[dict]:
        """One dict per (pair, compared teacher): references first, then the swept teachers in λ order, each with
        pair, teacher_objective, teacher_variant, lambda (None for a reference), teacher_acc (%), teacher_cmi
        (nats, train set, T = 1), each a mean over the teacher seeds with its `_std` and `teacher_n` (seeds),
        collapsed (how many teacher seeds collapsed), and the KD students' `cell` (mean, std, n, ...) plus delta
        over the reference teacher's students (points). Swept teachers also carry the per-seed teacher check
        (`seed_check`): seeds_checked, cmi_raised (seeds whose CMI is above that of the same seed of every teacher
        the objective must beat, e.g. MLL and the λ = 0 control) and over_cliff (seeds whose accuracy fell more than
        `layout['cliff']` points below the same seed of the reference teacher)."""
        from mcmikd.aggregate import cell, not_working_verdict, pair_label, teacher_fields

        if not len(runs):
            runs = runs.reindex(columns=["role", "teacher_arch", "teacher_variant", "student", "method", "status",
                                         "reason", f"{metric}_acc"])
        students, teachers = runs[runs["role"] == "student"], runs[runs["role"] == "teacher"]
        out = []
        for t_arch, s_arch in layout["pairs"]:
            by = layout["variants"][t_arch]
            entries = ([(o, by["references"][o], None) for o in layout["references"]]
                       + [(layout["swept"], v, lam) for v, lam in zip(by["sweep"], layout["lambdas"])])
            ref = ref_broken = None
            ce = students[(students["student"] == s_arch) & (students["method"] == "ce")]
            floor = cell(ce, metric) if len(ce) else None  # the sweep runs no CE student: normally not checked
            for objective, variant, lam in entries:
                t = teachers[(teachers["teacher_arch"] == t_arch) & (teachers["teacher_variant"] == variant)]
                sel = students[(students["teacher_arch"] == t_arch) & (students["teacher_variant"] == variant)
                               & (students["student"] == s_arch) & (students["method"] == "kd")]
                c = cell(sel, metric)
                extra = {}
                if "not_working_margin" in layout:  # every arm judged alike; a gain between two broken arms is none
                    own = not_working_verdict(c, floor, layout["not_working_margin"])
                    ref_broken = own if ref is None else ref_broken
                    extra = {"not_working": own, "delta_bracketed": bool(own) and bool(ref_broken)}
                ref = c if ref is None else ref
                check = {} if lam is None else cls.seed_check(teachers, t_arch, variant, layout)
                out.append({"pair": pair_label(t_arch, s_arch), "teacher_objective": objective,
                            "teacher_variant": variant, "lambda": lam,
                            **teacher_fields(t),  # means over the teacher seeds
                            **c, "delta": c["mean"] - ref["mean"], **check, **extra})
        return out

    @staticmethod
    def seed_check(teachers, arch: str, variant: str, layout: dict) -> dict:
        """The per-seed teacher check of one swept variant (see `rows`)."""
        refs = layout["variants"][arch]["references"]
        beat = [refs[o] for o in layout.get("must_raise", {}).get(layout["swept"], []) if o in refs]
        reference = refs[layout["references"][0]]
        by = teachers_by_variant_and_seed(teachers[teachers["teacher_arch"] == arch])
        checked = raised = over = 0
        for (v, seed), r in by.items():
            if v != variant or (reference, seed) not in by:
                continue
            checked += 1
            others = [by[(b, seed)]["cmi_T1"] for b in beat if (b, seed) in by]
            raised += bool(others) and all(r["cmi_T1"] > o for o in others)
            over += bool(r["model_acc"] < by[(reference, seed)]["model_acc"] - layout.get("cliff", 1.0))
        return {"seeds_checked": checked, "cmi_raised": raised, "over_cliff": over}

    @classmethod
    def table(cls, runs, layout, metric):
        import math

        import pandas as pd

        from mcmikd.aggregate import (
            NOT_WORKING,
            bracketed,
            fmt_delta,
            not_working_footnote,
            show,
            show_teacher,
            teacher_of,
        )

        rows = cls.rows(runs, layout, metric)
        display = []
        reference = layout["references"][0]
        for r in rows:
            is_ref = r["lambda"] is None
            display.append({
                "Pair": r["pair"],
                "Teacher": layout["labels"][r["teacher_objective"]] + (" (reference)" if r["teacher_objective"]
                                                                       == reference else ""),
                "λ": "–" if is_ref else f"{r['lambda']:g}",
                "Teacher acc.": show_teacher(teacher_of(r, "acc")),
                "Teacher CMI": show_teacher({**teacher_of(r, "cmi"), "collapsed": 0}, digits=4),
                "CMI raised (seeds)": "" if is_ref else f"{r['cmi_raised']} of {r['seeds_checked']}",
                f"Over the cliff (seeds, > {layout.get('cliff', 1.0):g} pt)": "" if is_ref else
                f"{r['over_cliff']} of {r['seeds_checked']}",
                "KD student": show(r) + (NOT_WORKING if r.get("not_working") else ""),
                f"Δ over {layout['labels'][reference]}": ("" if r["teacher_objective"] == reference and is_ref
                                                          else (bracketed if r.get("delta_bracketed")
                                                                else fmt_delta)(r["delta"])),
            })
        numbers = pd.DataFrame(rows)
        if len(numbers):
            numbers["lambda"] = numbers["lambda"].map(lambda v: math.nan if v is None else v)
        display = pd.DataFrame(display)
        labels = layout["labels"]
        beaten = " and ".join(labels.get(o, o) for o in layout.get("must_raise", {}).get(layout["swept"], []))
        display.attrs["footnotes"] = [
            f"Per-seed teacher check: \"CMI raised\" counts the teacher seeds whose training CMI (T = 1) is above that "
            f"of the same seed of {beaten or 'the reference'}; \"over the cliff\" those whose accuracy fell more than "
            f"{layout.get('cliff', 1.0):g} accuracy points below the same seed of the {labels[reference]} teacher "
            f"(experiments.lambda_sweep.cliff). A recipe for the other experiments should pass the first on every seed "
            f"and stay off the cliff on every seed, on every machine it is run on (python -m mcmikd recipe)."
        ] + not_working_footnote(layout, rows, "the student trained without a teacher")
        return numbers, display


def teachers_by_variant_and_seed(teachers) -> dict:
    """{(teacher_variant, teacher seed): its row} of the teacher rows of a runs frame (one architecture)."""
    from mcmikd.aggregate import teacher_seeds

    return {(v, s): r for (_, r), s, v in zip(teachers.iterrows(), teacher_seeds(teachers),
                                              teachers["teacher_variant"])}


def choose(runs: dict[str, list[dict]], accuracy_margin: float | None = None) -> dict:
    """The recipe rule over one or more runs of the same λ sweep (e.g. two machines): {"rows": per λ, run and pair
    the check, "passing": the λ that pass in every run, "safe": those that also stay off the cliff on every seed of
    every run, "chosen": the choice}. A λ passes a run when, for every teacher → student pair of the run, its
    teacher's CMI is raised on every teacher seed and its mean accuracy is within `accuracy_margin` points (default 1)
    of that pair's reference teacher's mean. Among the λ that pass in every run the rule prefers the safe ones, then
    the largest mean CMI gain over the pair's control (mean over runs and pairs); None when no λ passes everywhere.
    `runs`: {run name: `LambdaSweep.rows` of it}: per pair its reference rows (the reference, then the control) and
    its swept rows; each λ is compared with the references of its own pair."""
    margin = 1.0 if accuracy_margin is None else accuracy_margin
    table, per_lambda = [], {}
    for name, rows in runs.items():
        for pair in dict.fromkeys(r["pair"] for r in rows):
            refs = [r for r in rows if r["pair"] == pair and r["lambda"] is None]
            reference, control = refs[0], (refs[1] if len(refs) > 1 else None)
            for r in rows:
                if r["pair"] != pair or r["lambda"] is None:
                    continue
                ok = (r["seeds_checked"] > 0 and r["cmi_raised"] == r["seeds_checked"]
                      and r["teacher_acc"] >= reference["teacher_acc"] - margin)
                gain = r["teacher_cmi"] - (control or reference)["teacher_cmi"]
                table.append({"run": name, "pair": pair, "lambda": r["lambda"], "passes": ok,
                              "cmi_raised": f"{r['cmi_raised']} of {r['seeds_checked']}",
                              "over_cliff": f"{r['over_cliff']} of {r['seeds_checked']}",
                              "acc_vs_reference": r["teacher_acc"] - reference["teacher_acc"], "cmi_gain": gain})
                entry = per_lambda.setdefault(r["lambda"], {"passes": True, "safe": True, "gains": [], "runs": set()})
                entry["runs"].add(name)
                entry["passes"] &= ok
                entry["safe"] &= r["over_cliff"] == 0
                entry["gains"].append(gain)
    passing = [lam for lam, e in per_lambda.items() if e["passes"] and e["runs"] == set(runs)]  # swept everywhere
    safe = [lam for lam in passing if per_lambda[lam]["safe"]]
    pool = safe or passing
    chosen = max(pool, key=lambda lam: sum(per_lambda[lam]["gains"]) / len(per_lambda[lam]["gains"])) if pool else None
    return {"rows": table, "passing": passing, "safe": safe, "chosen": chosen}


def figure(inputs: list[str], layout: dict, metric: str, png: str, pdf: str) -> None:
    """Per pair (one row of panels): the swept teachers' train-set CMI (nats, T = 1; left panel) and their KD
    students' test accuracy (%, mean ± std over seeds; right panel) against λ, with each reference teacher (MLL,
    the control) as a dashed horizontal line. The CMI is the mean ± std over the teacher seeds. A λ with a
    collapsed teacher seed is a cross; a panel without data says why."""
    import math

    import numpy as np
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    from mcmikd import plots

    with plots.theme():
        runs = plots.read_runs(inputs[0])
        rows = LambdaSweep.rows(runs, layout, metric)
        split = layout.get("evaluated_on", "test")
        pairs, swept, key = layout["pairs"], layout["swept"], layout["key"]
        symbol = {"lambda": "λ"}.get(key, key)
        fig = MplFigure(figsize=(9.5, 3.4 * len(pairs)), layout="constrained")
        axes = fig.subplots(len(pairs), 2, squeeze=False)
        for (ax_cmi, ax_acc), (teacher, student) in zip(axes, pairs):
            mine = [r for r in rows if r["pair"] == f"{teacher} → {student}"]
            sweep = [r for r in mine if r["lambda"] is not None]
            lams = np.array([r["lambda"] for r in sweep], dtype=float)

            def accuracy(row, teacher=teacher, student=student):  # one variant's KD students: mean, std (NaN: n < 2)
                sel = plots.students(runs, "kd", row["teacher_objective"], teacher_arch=teacher, student=student,
                                     teacher_variant=row["teacher_variant"])
                return plots.stat(plots.ok(sel)[f"{metric}_acc"])

            values = {"cmi": [(r["teacher_cmi"], r["teacher_cmi_std"] if r["teacher_n"] > 1 else math.nan)
                              for r in sweep], "acc": [accuracy(r) for r in sweep]}
            refs = {o: next(r for r in mine if r["teacher_objective"] == o and r["lambda"] is None)
                    for o in layout["references"]}
            ref_values = {"cmi": {o: r["teacher_cmi"] for o, r in refs.items()},
                          "acc": {o: accuracy(r)[0] for o, r in refs.items()}}
            for ax, what, ylabel in ((ax_cmi, "cmi", "teacher CMI (training set, nats)"),
                                     (ax_acc, "acc", f"KD student acc. (%, {split}, {metric} epoch)")):
                ys = np.array([v[0] for v in values[what]], dtype=float)
                errs = np.array([v[1] for v in values[what]], dtype=float)
                ax.errorbar(lams, ys, yerr=np.where(np.isnan(errs), 0, errs), color=plots.color(swept, layout),
                            marker="o", markeredgecolor="white", markersize=7, lw=2, capsize=3)
                for r in sweep:
                    if r["collapsed"]:
                        ax.plot([r["lambda"]], [0.06], transform=ax.get_xaxis_transform(), marker="x",
                                color="black", markersize=9, mew=2, ls="")
                for objective, value in ref_values[what].items():
                    if not math.isnan(value):
                        ax.axhline(value, color=plots.color(objective, layout), ls="--", lw=1.5)
                ax.set(title=f"{teacher} → {student}", xlabel=f"{symbol} ({layout['labels'][swept]} teacher)",
                       ylabel=ylabel)
                if np.isnan(ys).all():
                    missing = "no CMI measured" if what == "cmi" else "no finished KD student"
                    plots.note(ax, f"{layout['labels'][swept]} teachers: {missing}")
                if len(lams) and lams.min() > 0 and lams.max() / lams.min() >= 4:  # e.g. 0.1 … 1: log spacing
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_locator(NullLocator())
                if len(lams):
                    ax.set_xticks(lams)
                    ax.set_xticklabels([f"{v:g}" for v in lams], rotation=45 if len(lams) > 5 else 0)
                shown = [v for v in [*ys, *ref_values[what].values()] if not math.isnan(v)]
                if what == "cmi" and shown and min(shown) > 0 and max(shown) / min(shown) > 20:
                    ax.set_yscale("log")  # CMI spans orders of magnitude across λ: keep the small ones readable
        handles = ([Line2D([], [], color=plots.color(swept, layout), marker="o", markeredgecolor="white",
                           markersize=7, lw=2, label=f"{layout['labels'][swept]} teacher at each {symbol}")]
                   + [Line2D([], [], color=plots.color(o, layout), ls="--", lw=1.5,
                             label=f"{plots.label(o, layout)} (reference)") for o in layout["references"]]
                   + [Line2D([], [], color="black", marker="x", ls="", mew=2, label="collapsed teacher")])
        plots.legend(fig, handles, where="lower")
        plots.save(fig, png, pdf)


def main(argv: list[str]) -> int:
    """`python -m mcmikd recipe RUN [RUN ...] --config CONFIG`: the recipe rule (`choose`) over the λ sweep of one or
    more finished runs of CONFIG (e.g. the same config on two machines): per λ and run the per-seed teacher check,
    then the λ chosen. Exit status 0 when a λ passes in every run, 1 when none does, 2 on bad input."""
    import argparse
    from pathlib import Path

    import yaml

    from mcmikd.aggregate import read_runs, to_markdown
    from mcmikd.config import load_grid, schema_path
    from mcmikd.errors import first_line

    ap = argparse.ArgumentParser(prog="python -m mcmikd recipe", description=main.__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="results folders (results/<name>) or their runs/lambda_sweep.csv")
    ap.add_argument("--config", required=True, help="the config the runs were made with (its λ sweep block)")
    ap.add_argument("--accuracy-margin", type=float, default=1.0,
                    help="points the mean teacher accuracy may fall below the reference's (default 1)")
    args = ap.parse_args(argv)
    try:
        grid = load_grid(yaml.safe_load(Path(args.config).read_text()), schema_path())
        if "lambda_sweep" not in grid.experiments:
            raise ValueError(f"{args.config}: no enabled experiments.lambda_sweep block")
        layout, metric = grid.experiments["lambda_sweep"].layout(), grid.config["tables"]["metric"]
        rows = {}
        for where in args.runs:
            path = Path(where)
            csv = path if path.suffix == ".csv" else path / "runs" / "lambda_sweep.csv"
            if not csv.exists():
                raise ValueError(f"{where}: no {csv.name}; give a finished run of {args.config}")
            rows[where] = LambdaSweep.rows(read_runs(str(csv)), layout, metric)
    except Exception as exc:  # bad input: one line
        print(f"Error: {first_line(exc)}", file=sys.stderr)
        return 2
    import pandas as pd

    result = choose(rows, args.accuracy_margin)
    frame = pd.DataFrame(result["rows"]).assign(
        acc_vs_reference=lambda f: f["acc_vs_reference"].map("{:+.2f}".format),
        cmi_gain=lambda f: f["cmi_gain"].map("{:+.4f}".format))
    print(to_markdown(frame))
    passing = ", ".join(f"{v:g}" for v in result["passing"]) or "none"
    safe = ", ".join(f"{v:g}" for v in result["safe"]) or "none"
    print(f"λ passing in every run (CMI raised on every teacher seed, mean accuracy within "
          f"{args.accuracy_margin:g} accuracy points of the reference): {passing}")
    print(f"of those, off the cliff on every seed of every run: {safe}")
    chosen = result["chosen"]
    print("chosen: " + ("none" if chosen is None else f"{chosen:g}"))
    return 0 if result["chosen"] is not None else 1
