"""Per-epoch progress files of training jobs (the writing side; `python -m mcmikd.progress` reads them).

Every training job started through `mcmikd.smk.run_job` keeps a small JSON file beside its log,
`logs/<name>/<rule>/<job>.progress.json` (the log `….log` → `….progress.json`): phase, epoch i of N, the last
test accuracy, the best so far, seconds per epoch and an ETA, rewritten atomically after every epoch by
`engine.fit` (`epoch_done`), and the job's end state (done, failed, interrupted) by `run_job` (`finish`).
Progress files are a side channel: they are no workflow output, nothing reads them back, and a write that fails
is reported once in the job's log and never fails the job. This module is a code input of every job; the command
that shows the files lives apart (`mcmikd.progress`), so changing how it prints reruns nothing.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

SUFFIX = ".progress.json"
_RECENT = 5  # seconds per epoch: the mean of the last few epochs this process ran

_path: Path | None = None
_record: dict = {}
_seconds: list[float] = []
_failed = False


def progress_path(log_path: str | os.PathLike) -> Path:
    """The progress file of the job whose log is `log_path`."""
    log_path = Path(log_path)
    return log_path.with_name(log_path.name.removesuffix(".log") + SUFFIX)


def record_to(path: str | os.PathLike | None) -> None:
    """Send this process's progress to `path` (None: record nothing). A file left there by an earlier run of the
    same job is removed: a job shows up once its training has started (`started`)."""
    global _path, _record, _seconds, _failed
    _path, _seconds, _failed = (Path(path) if path else None), [], False
    _record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    if _path is not None:
        try:
            _path.unlink(missing_ok=True)
        except OSError:
            pass


def active() -> bool:
    return _path is not None and not _failed


def current_path() -> Path | None:
    """The progress file this process records to (None: none)."""
    return _path


def adopt() -> None:
    """Take over the record another process wrote to this process's progress file (rank 0 of a multi-process job,
    `mcmikd.distributed.launch`), so that `finish` writes the job's end state into it; nothing when there is none."""
    global _record
    if _path is None or not _path.exists():
        return
    try:
        _record = json.loads(_path.read_text())
    except (OSError, ValueError):
        pass


def started(phase: str, epoch: int, epochs: int, later: int = 0, **fields) -> None:
    """Training begins (or resumes) in `phase` with `epoch` of its `epochs` done; `later` epochs follow in later
    phases."""
    _write(state="running", phase=phase, epoch=epoch, epochs=epochs, later=later, **fields)


def epoch_done(phase: str, epoch: int, epochs: int, seconds: float, later: int = 0, **fields) -> None:
    """Epoch `epoch` of `epochs` of `phase` took `seconds`; `later` epochs follow in later phases; `fields` e.g.
    test_acc, best_acc."""
    if not active():
        return
    _seconds.append(float(seconds))
    per_epoch = sum(_seconds[-_RECENT:]) / len(_seconds[-_RECENT:])
    remaining = 0 if fields.get("stopped") else epochs - epoch + later
    _write(state="running", phase=phase, epoch=epoch, epochs=epochs, later=later, seconds_per_epoch=per_epoch,
           eta_s=per_epoch * remaining, **fields)


def finish(state: str, **fields) -> None:
    """The job ended: `state` is done, failed or interrupted. Nothing is written for a job that never trained."""
    if active() and "state" in _record:
        _write(state=state, eta_s=0.0 if state == "done" else None, **fields)


def _write(**fields) -> None:
    global _failed
    if not active():
        return
    _record.update(fields, updated=time.time())
    try:
        from mcmikd.io import strict_json, write_text

        write_text(_path, json.dumps(strict_json(_record), allow_nan=False, default=str) + "\n")
    except (OSError, ValueError) as err:  # a side channel: say so once, never fail the training
        _failed = True
        print(f"progress not recorded: {err}", file=sys.stderr, flush=True)
