"""Glue between a Snakemake `script:` job and the package: log redirection, progress file, one-line user errors.

What reaches the terminal: Snakemake prints a failed job's log (`show-failed-logs` in the profiles), so anything
written to the log is shown there once. A job therefore writes a failure to its log only and never lets an
exception escape to the interpreter, which would print its traceback a second time:
* a user error (`McmiError`, e.g. a read-only output folder): one line, also on the terminal as it happens;
* Ctrl-C: one line (the epoch checkpoint stays, so the rerun resumes), exit status 130;
* anything else (a bug): its traceback, once.
"""

from __future__ import annotations

import os
import sys
import traceback

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


def run_job(snakemake, func, **kwargs) -> None:
    """Send stdout/stderr to the job's log (its progress file beside it: `mcmikd.progress`), call `func(**kwargs)`,
    and turn a user error or an interruption into one clear line."""
    from mcmikd import jobprogress as progress
    from mcmikd.errors import McmiError

    log_path = snakemake.log[0] if snakemake.log else None
    try:
        handle = open(log_path, "w", buffering=1) if log_path else None
    except OSError as err:
        folder = os.path.dirname(log_path) or "."
        print(f"Error: cannot write {log_path} ({err.strerror or type(err).__name__}); make {folder} writable",
              file=sys.stderr)
        raise SystemExit(1) from None
    if handle:
        sys.stderr = sys.stdout = handle
        progress.record_to(progress.progress_path(log_path))
    status = 0
    try:
        func(**kwargs)
        progress.finish("done")
    except McmiError as err:
        progress.finish("failed", error=str(err))
        message = f"Error: {err}"
        print(message, file=sys.stderr)
        if handle:
            print(message, file=sys.__stderr__)
        status = 1
    except KeyboardInterrupt:
        progress.finish("interrupted")
        print(_interrupted(kwargs.get("resume_path")), file=sys.stderr)
        status = INTERRUPTED
    except SystemExit:
        raise
    except BaseException as err:
        progress.finish("failed", error=f"{type(err).__name__}: {err}")
        traceback.print_exc()
        status = 1
    finally:
        if handle:
            sys.stderr, sys.stdout = sys.__stderr__, sys.__stdout__
            handle.close()
        progress.record_to(None)
    if status:
        raise SystemExit(status)


def _interrupted(resume_path: str | None) -> str:
    if resume_path and os.path.exists(resume_path):
        return f"Interrupted (Ctrl-C); its epoch checkpoint {resume_path} is kept: a rerun resumes from it"
    return "Interrupted (Ctrl-C)"
