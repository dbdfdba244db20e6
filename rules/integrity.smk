# Damaged intermediates. The binary files jobs write and later jobs read (the data, every teacher's model, the
# Eigen-CAM maps) carry a content record (`.<file>.sha256`, mcmikd.io); one that is missing or does not match it
# (its size at every parse, its sha256 where affordable) is found before any job (mcmikd.repair). A missing one is
# requested by the default target, so the job that writes it runs and every job reading it reruns; one that is
# there but damaged stops the run with the `--forcerun` line that rebuilds it, unless the run forces it already.
# Jobs check the full sha256 of what they read.
from mcmikd.repair import damaged_files, plan_repair


def intermediate_files():
    """{recorded intermediate file: the rule that writes it}."""
    files = {"<results>/data.pt": "prepare_data"}
    for a, v, t in GRID.teacher_jobs():
        fine_tuned = GRID.start_variant(a, v) is not None
        files[teacher_files(a, v, t)["model"]] = "finetune_teacher" if fine_tuned else "train_teacher"
        if fine_tuned:
            files[teacher_files(a, v, t)["best"]] = "finetune_teacher"
    for exp in GRID.experiments.values():  # the student models a t-SNE job reads
        files.update({f"<results>/{path}": "train_student" for path in getattr(exp, "tsne_student_models", list)()})
    for exp in GRID.cam_experiments():
        files.update({f"<results>/cam/{arch}.pt": "eigen_cam" for arch in exp.teacher_archs()})
    return {workflow.pathvars.apply(f): rule for f, rule in files.items()}


# the main process only: a cluster job step parses this file again and builds just its own job
INTERMEDIATES = intermediate_files() if workflow.is_main_process else {}
DAMAGED = damaged_files(INTERMEDIATES)
_REPAIR = {}


def damaged_intermediates(wildcards):
    """The default target's input function: the missing recorded intermediates (requested, so rebuilt). Reads this
    run's `--forcerun` targets (Snakemake's DAG settings, known once the DAG is built; read, never changed)."""
    if "missing" not in _REPAIR:
        try:
            _REPAIR["missing"], warnings = plan_repair(DAMAGED, INTERMEDIATES, getattr(workflow, "dag_settings", None))
        except McmiError as err:
            sys.exit(f"Error: {err}")
        for line in warnings:
            print(line, file=sys.stderr)
    return _REPAIR["missing"]
