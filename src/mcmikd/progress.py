"""Show the per-epoch progress of the workflow's training jobs while it runs (files: `mcmikd.jobprogress`).

    python -m mcmikd.progress [config.yaml | results/<name> | logs/<name>] [--running]

prints one line per job (running ones first): job, state, epoch i/N, test accuracy (best), s/epoch, ETA.
Without an argument it reads every run under `logs/`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from mcmikd.jobprogress import SUFFIX


def find_dir(target: str | os.PathLike | None) -> Path:
    """The folder to scan for `target`: a config file (its `name` → logs/<name>), results/<name> (→ logs/<name>),
    any other folder as it is; None → logs/."""
    if target is None:
        return Path("logs")
    target = Path(target)
    if target.is_file():
        import yaml

        name = (yaml.safe_load(target.read_text()) or {}).get("name")
        if not name:
            raise SystemExit(f"Error: {target} has no 'name'; pass logs/<name> instead")
        return Path("logs") / str(name)
    if target.parent.name == "results" and not any(target.rglob(f"*{SUFFIX}")):
        return target.parent.parent / "logs" / target.name
    return target


def read_all(folder: Path) -> list[dict]:
    """Every progress record under `folder`, each with `job` set to its path relative to `folder`."""
    records = []
    for path in sorted(folder.rglob(f"*{SUFFIX}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced this instant, or not ours
        record["job"] = str(path.relative_to(folder))[: -len(SUFFIX)]
        records.append(record)
    return records


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def state_of(record: dict, now: float | None = None) -> str:
    """running, done, failed, interrupted, or `killed` (a running job whose process on this host is gone; its
    resume checkpoint remains), or `running?` (on another host, and silent for longer than two epochs and 5 min)."""
    state = record.get("state", "running")
    if state != "running":
        return state
    if record.get("host") == socket.gethostname() and record.get("pid") and not _alive(int(record["pid"])):
        return "killed"
    quiet = (now or time.time()) - record.get("updated", 0)
    if quiet > 2 * (record.get("seconds_per_epoch") or 0) + 300:
        return "running?"
    return state


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def line(record: dict, width: int = 0, now: float | None = None) -> str:
    state = state_of(record, now)
    phase = "init " if record.get("phase") == "init" else ""
    epoch = f"{phase}epoch {record.get('epoch', 0)}/{record.get('epochs', '?')}"
    acc = record.get("test_acc")
    acc = "acc –" if acc is None else f"acc {acc:.2f}"
    if record.get("best_acc") is not None:
        acc += f" (best {record['best_acc']:.2f})"
    per = record.get("seconds_per_epoch")
    speed = "–" if per is None else f"{per:.1f}s/epoch"
    eta = f"ETA {duration(record.get('eta_s'))}" if state in ("running", "running?") else ""
    return f"{record['job']:<{width}}  {state:<11} {epoch:<15} {acc:<26} {speed:<13} {eta}".rstrip()


ORDER = {"running": 0, "running?": 1, "killed": 2, "interrupted": 3, "failed": 4, "done": 5}


def report(records: list[dict], running_only: bool = False, now: float | None = None) -> str:
    now = now or time.time()
    states = [state_of(r, now) for r in records]
    rows = sorted(zip(states, records), key=lambda sr: (ORDER.get(sr[0], 9), sr[1]["job"]))
    if running_only:
        rows = [(s, r) for s, r in rows if s.startswith("running")]
    width = max((len(r["job"]) for _, r in rows), default=0)
    counts = {s: states.count(s) for s in ORDER if s in states}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no training job has started"
    return "\n".join([*(line(r, width, now) for _, r in rows), summary])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcmikd.progress",
                                     description="Epoch progress of the workflow's training jobs.")
    parser.add_argument("target", nargs="?", help="a config file, results/<name> or logs/<name> (default: logs/)")
    parser.add_argument("--running", action="store_true", help="only jobs still training")
    args = parser.parse_args(argv)
    folder = find_dir(args.target)
    if not folder.is_dir():
        print(f"Error: {folder} does not exist (no job of this run has started yet?)", file=sys.stderr)
        return 1
    print(report(read_all(folder), args.running))
    return 0


if __name__ == "__main__":
    sys.exit(main())
