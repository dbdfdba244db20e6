"""Parse-time repair of damaged intermediate files (rules/integrity.smk): find the recorded intermediates that are
missing or do not match their content record (`mcmikd.io.write_record`), and make Snakemake rerun the jobs that
write them, and so every job that reads them, as `--forcerun <file>` would.

Why forcing is needed: Snakemake looks for a missing file only among the inputs of jobs that already have to run.
When every job downstream of a deleted (or moved-aside) intermediate is finished, it plans nothing ("Nothing to be
done"), so deleting a damaged file is no repair by itself; a forced producer is, because every job downstream of a
job that runs runs too. Only the main Snakemake process repairs: a cluster job step parses the Snakefile again and
must run just its own job. No job imports this module (editing it reruns nothing), nor torch.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable

from mcmikd.errors import DamagedFileError
from mcmikd.io import check_record, read_record

# Bytes of recorded files whose sha256 is checked at every parse (smallest files first: all of a digits-sized run,
# a CIFAR run's small teachers); the others are checked by size here, and fully by every job that reads them.
HASH_BUDGET = int(os.environ.get("MCMIKD_PARSE_HASH_BUDGET", 32 << 20))


def damaged_files(paths: Iterable[str], hash_budget: int = HASH_BUDGET) -> dict[str, str]:
    """{path: reason} of each of `paths` that has a record and is missing or does not match it."""
    damaged, recorded = {}, []
    for path in paths:
        try:
            record = read_record(path)
        except DamagedFileError as err:
            damaged[path] = str(err).split(" is damaged (", 1)[1].rsplit("); repair it", 1)[0]
            continue
        if record is not None:
            recorded.append((record["size"], path, record))
    for size, path, record in sorted(recorded):
        full = size <= hash_budget
        hash_budget -= size if full else 0
        if reason := check_record(path, record, full=full):
            damaged[path] = reason
    return damaged


def force_rerun(workflow, files: Iterable[str]) -> None:
    """Add `files` to this run's `--forcerun` targets (Snakemake 9 hands the workflow its DAG settings after the
    Snakefile is parsed: the settings are extended as they are set)."""
    files = frozenset(files)
    base = type(workflow)

    def extend(settings):
        if settings is not None:
            settings.forcerun = frozenset(settings.forcerun) | files
        return settings

    class Repairing(base):
        @property
        def dag_settings(self):
            return self.__dict__.get("dag_settings")

        @dag_settings.setter
        def dag_settings(self, settings):
            self.__dict__["dag_settings"] = extend(settings)

    Repairing.__name__ = Repairing.__qualname__ = base.__name__
    workflow.__class__ = Repairing
    extend(workflow.__dict__.get("dag_settings"))


def repair_damaged(workflow, paths: Iterable[str]) -> dict[str, str]:
    """Warn about and force the producers of the damaged `paths` (main process only); returns them."""
    if not workflow.is_main_process:
        return {}
    damaged = damaged_files(paths)
    for path, reason in damaged.items():
        print(f"Warning: {path} is damaged ({reason}); it is rebuilt and every job that reads it reruns",
              file=sys.stderr)
    if damaged:
        force_rerun(workflow, damaged)
    return damaged
