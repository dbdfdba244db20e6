"""Glue between a Snakemake `script:` job and the package: log redirection and one-line user errors."""

from __future__ import annotations

import sys
import traceback


def run_job(snakemake, func, **kwargs) -> None:
    """Send stdout/stderr to the job's log, call `func(**kwargs)`, and turn a user error into one clear line."""
    from mcmikd.errors import McmiError

    log_path = snakemake.log[0] if snakemake.log else None
    handle = open(log_path, "w", buffering=1) if log_path else None
    if handle:
        sys.stderr = sys.stdout = handle
    try:
        func(**kwargs)
    except McmiError as err:
        message = f"Error: {err}"
        print(message, file=sys.stderr)
        if handle:
            print(message, file=sys.__stderr__)
        raise SystemExit(1) from None
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        if handle:
            sys.stderr, sys.stdout = sys.__stderr__, sys.__stdout__
            handle.close()
