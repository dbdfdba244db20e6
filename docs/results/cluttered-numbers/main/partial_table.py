"""Part 2 of the cluttered-numbers study, cut by the session's end: the main table of the student runs that finished
(every teacher; 9 of the 12 students: not the control teachers' KD students), made by the code the workflow's rules
call (`aggregate.write_runs`, `aggregate.write_table`), in a results-shaped folder that `mcmikd publish` reads (runs/,
tables/, figures/, and the run's students/ and teachers/ linked for machine.json).

    .venv/bin/python docs/results/cluttered-numbers/main/partial_table.py results/cluttered-numbers-part2
    .venv/bin/mcmikd publish results/cluttered-numbers-part2 docs/results/cluttered-numbers/main

A second argument reads another run of the same config (`--config name=<name>`), e.g. the teachers and CAMs rerun
under another CPU kernel set: with no student finished, only the runs table (teacher rows) and the CAM tables are
written, which is what `mcmikd compare` reads.
"""
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "src")
import yaml  # noqa: E402

from mcmikd.aggregate import write_runs, write_table  # noqa: E402
from mcmikd.config import NO_TEACHER, load_grid, schema_path  # noqa: E402

cfg = yaml.safe_load(open("config/cluttered-numbers.yaml"))
grid = load_grid(cfg, schema_path())
res = Path("results") / (sys.argv[2] if len(sys.argv) > 2 else cfg["name"])
out = Path(sys.argv[1])
for sub in ("runs", "tables", "figures"):
    (out / sub).mkdir(parents=True, exist_ok=True)
students = []
for run in grid.runs["main"]:
    f = res / "students" / run.t_arch / run.t_folder / run.student / run.method / run.setting / f"seed{run.seed}.json"
    if f.exists():
        students.append(str(f))
    else:
        print("not run:", f)
teachers = []  # the teachers of the experiment's pairs, every teacher seed (as rules/common.smk's experiment_teachers)
for arch, variant in sorted({(r.t_arch, r.t_variant) for r in grid.runs["main"] if r.t_arch != NO_TEACHER}):
    for tseed in grid.teacher_seeds():
        f = res / "teachers" / arch / variant / f"seed{tseed}"
        teachers += [str(f / "metrics.json"), str(f / "cmi.json")]  # every teacher must have finished
write_runs(students, teachers, "main", str(out / "runs" / "main.csv"))
if students:
    write_table(runs_csv=str(out / "runs" / "main.csv"), experiment="main", layout=grid.experiments["main"].layout(),
                metric=cfg["tables"]["metric"], csv_out=str(out / "tables" / "main.csv"),
                md_out=str(out / "tables" / "main.md"), tex_out=str(out / "tables" / "main.tex"),
                gains_out=str(out / "tables" / "main_gains.csv"))
for pattern in ("tables/cam*", "figures/cam*"):
    for f in res.glob(pattern):
        shutil.copyfile(f, out / f.relative_to(res))
for sub in ("students", "teachers"):
    if not (out / sub).exists():
        (out / sub).symlink_to((res / sub).resolve())
print(f"{len(students)} students, {len(teachers) // 2} teachers -> {out}")
