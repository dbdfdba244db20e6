# Damaged intermediates. The binary files jobs write and later jobs read (the data, every teacher's model, the
# Eigen-CAM maps) carry a content record (`.<file>.sha256`, mcmikd.io); one that is missing or does not match it
# (its size at every parse, its sha256 where affordable) is rebuilt first: its job is forced,
# as with --forcerun <file>, so every job reading it reruns and nothing else does. Jobs check the full sha256.
from mcmikd.repair import repair_damaged


def intermediate_files():
    files = ["<results>/data.pt"] + [teacher_files(a, v, t)["model"] for a, v, t in GRID.teacher_jobs()]
    files += [teacher_files(a, v, t)["best"] for a, v, t in GRID.teacher_jobs() if GRID.start_variant(a, v) is not None]
    files += [f"<results>/cam/{arch}.pt" for exp in GRID.cam_experiments() for arch in exp.teacher_archs()]
    return [workflow.pathvars.apply(f) for f in dict.fromkeys(files)]


DAMAGED = repair_damaged(workflow, intermediate_files())
