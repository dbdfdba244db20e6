"""Parse-time repair of damaged intermediate files (rules/integrity.smk): find the recorded intermediates that are
missing or do not match their content record (`mcmikd.io.write_record`), and make Snakemake rerun the jobs that
write them, and so every job that reads them, as `--forcerun <file>` would.

How, with documented Snakemake mechanisms only: Snakemake looks for a missing file only among the inputs of jobs
that have to run, so when every job downstream of a deleted intermediate is finished it plans nothing. The default
target's input function (rules/integrity.smk) therefore requests every missing recorded intermediate: requested
and missing, its producer runs, and every job downstream of a job that runs reruns. A file that is there but does
not match its record cannot be rebuilt that way (an existing output is rebuilt only when forced), so the run stops
with one line naming the `--forcerun` command, unless that run already forces it. Only the main Snakemake process
checks: a cluster job step builds just its own job. No job imports this module (editing it reruns nothing), nor
torch.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable

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


def forcerun_command(files: Iterable[str], configfile: str | None = None) -> str:
    """The shell-quoted `snakemake [--configfile C] --forcerun FILE...` line that rebuilds `files` and everything
    downstream of them (`--forcerun` last: it takes every word after it)."""
    words = ["snakemake", *(["--configfile", configfile] if configfile else []), "--forcerun", *files]
    return shlex.join(words)


def _forced(path: str, rule: str, settings) -> bool:
    """Whether this run's `--forcerun`/`-R` (files or rule names) or `--forceall` already rebuilds `path`."""
    if settings is None:
        return False
    forced = {str(target) for target in getattr(settings, "forcerun", None) or ()}
    return bool(getattr(settings, "forceall", False)) or path in forced or rule in forced


def plan_repair(damaged: dict[str, str], producers: dict[str, str], settings) -> tuple[list[str], list[str]]:
    """What a run does about the `damaged` intermediates ({path: reason}, from `damaged_files`): returns the
    missing ones, which the run requests (a requested file that is not there is rebuilt by the job that writes
    it, and every job reading it reruns), and one warning line per damaged file. Raises a one-line
    DamagedFileError for files that are there but do not match their record unless this run forces them
    (`settings`: Snakemake's DAG settings, read-only; `producers`: {path: rule that writes it}): a run cannot make
    Snakemake rebuild an existing file by any documented means other than `--forcerun`, and the error says so."""
    missing = [path for path in damaged if not os.path.exists(path)]
    present = [path for path in damaged if path not in missing]
    unforced = [path for path in present if not _forced(path, producers.get(path, ""), settings)]
    if unforced:
        from mcmikd.errors import DamagedFileError

        what = "; ".join(f"{path}: {damaged[path]}" for path in unforced)
        one = len(unforced) == 1
        raise DamagedFileError(
            f"{'a' if one else len(unforced)} recorded intermediate file{'' if one else 's'} "
            f"{'is' if one else 'are'} damaged ({what}); rebuild {'it' if one else 'them'} and every job that reads "
            f"{'it' if one else 'them'} with `{forcerun_command(unforced)}` plus the options "
            f"you ran the workflow with (`mcmikd repair` prints the line)")
    warnings = [f"Warning: {path} is damaged ({damaged[path]}); it is rebuilt and every job that reads it reruns"
                for path in damaged]
    return missing, warnings
