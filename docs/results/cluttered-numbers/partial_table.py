"""A part of the cluttered-numbers study cut by the session's end: the table of one experiment from the student runs
that finished (every teacher of the experiment's pairs must have finished), made by the code the workflow's rules call
(`aggregate.write_runs`, `aggregate.write_table`), in a results-shaped folder that `mcmikd publish` reads (runs/,
tables/, figures/, and the run's students/ and teachers/ linked for machine.json).

    .venv/bin/python docs/results/cluttered-numbers/partial_table.py OUT [RUN] [--experiment EXPERIMENT]
    .venv/bin/mcmikd publish OUT docs/results/cluttered-numbers/<part>

OUT: the folder to write (e.g. results/cluttered-numbers-part2); RUN: the run's name under results/ (default the
config's `name`; another run of the same config is `--config name=<name>`, e.g. the teachers and CAMs rerun under
another CPU kernel set); EXPERIMENT: main (default; the CAM tables and figures of the run are copied with it) or
another experiment of config/cluttered-numbers.yaml (fewshot, zeroshot); the experiment's figures that the run made
(figures/<experiment>*) are copied too. With no student finished only the runs
table (teacher rows) is written, which is what `mcmikd compare` reads. Each student not found is printed.
"""
import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "src")
import yaml  # noqa: E402

from mcmikd.aggregate import write_runs, write_table  # noqa: E402
from mcmikd.config import load_grid, schema_path, teacher_dir  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("out")
ap.add_argument("run", nargs="?")
ap.add_argument("--experiment", default="main")
args = ap.parse_args()
cfg = yaml.safe_load(open("config/cluttered-numbers.yaml"))
grid = load_grid(cfg, schema_path())
if args.experiment not in grid.runs:
    sys.exit(f"Error: experiment '{args.experiment}' is not in config/cluttered-numbers.yaml; choose one of "
             f"{sorted(grid.runs)}")
exp, res, out = args.experiment, Path("results") / (args.run or cfg["name"]), Path(args.out)
for sub in ("runs", "tables", "figures"):
    (out / sub).mkdir(parents=True, exist_ok=True)
students = []
for run in grid.runs[exp]:
    f = res / run.path()
    if f.exists():
        students.append(str(f))
    else:
        print("not run:", f)
teachers = []  # the teachers of the experiment's table, as the workflow's rule reads them; every one must have finished
for arch, variant, tseed in grid.experiment_teachers(exp):
    f = res / teacher_dir(arch, variant, tseed)
    teachers += [str(f / "metrics.json"), str(f / "cmi.json")]
runs_csv = out / "runs" / f"{exp}.csv"
write_runs(students, teachers, exp, str(runs_csv))
if students:
    write_table(runs_csv=str(runs_csv), experiment=exp, layout=grid.experiments[exp].layout(),
                metric=cfg["tables"]["metric"], csv_out=str(out / "tables" / f"{exp}.csv"),
                md_out=str(out / "tables" / f"{exp}.md"), tex_out=str(out / "tables" / f"{exp}.tex"),
                gains_out=str(out / "tables" / f"{exp}_gains.csv"))
# the experiment's figures the run made (figures/<experiment>*), and with main the CAM tables and figures
for pattern in (f"figures/{exp}*",) + (("tables/cam*", "figures/cam*") if exp == "main" else ()):
    for f in res.glob(pattern):
        shutil.copyfile(f, out / f.relative_to(res))
for sub in ("students", "teachers"):
    if not (out / sub).exists():
        (out / sub).symlink_to((res / sub).resolve())
print(f"{len(students)} students, {len(teachers) // 2} teachers -> {out}")
