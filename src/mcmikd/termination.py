"""What a run says when SIGTERM stops it (`kill`, a batch system's time limit on the head job, systemd).

Snakemake answers SIGTERM gracefully: it starts no new job, lets the running ones finish (their results are kept
and recorded) and then ends with "At least one job did not complete successfully" although no job failed. `watch`
(called from the workflow's `onstart`, after Snakemake installed its own handler) notes the signal and passes it on
to that handler unchanged; `report` (called from `onerror`) gives the line that says what really happened.
"""

from __future__ import annotations

import os
import signal
import time

_received: list[float] = []  # when SIGTERM arrived (this process)


def watch() -> None:
    """Note every SIGTERM this process receives, then hand it to the handler installed before (Snakemake's graceful
    stop; with none, the default action: the process ends)."""
    previous = signal.getsignal(signal.SIGTERM)

    def noted(signum, frame):
        _received.append(time.time())
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, noted)


def received() -> bool:
    """Whether this process has received SIGTERM since `watch`."""
    return bool(_received)


def report(missing: int | None = None) -> str | None:
    """The line to print when the run ends unsuccessfully after a SIGTERM (None when no SIGTERM came). `missing`:
    how many planned jobs have not produced their outputs (None: unknown)."""
    if not _received:
        return None
    when = time.strftime("%H:%M:%S", time.localtime(_received[0]))
    left = f"{missing} planned job(s) did not run" if missing is not None else "the jobs not yet started did not run"
    return (f"Stopped by SIGTERM at {when}: no job failed; the jobs already running were let finish and their results "
            f"are kept, {left}. Snakemake's 'At least one job did not complete successfully' below means only this "
            f"stop: rerun the same command to go on (only what is missing runs).")
