"""Atomic file output, JSON helpers and run provenance."""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mcmikd.errors import McmiError, OutputError


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    A job killed half-way leaves only a hidden `.tmp` file, never a file that looks complete. A file system that
    refuses the write (read-only `results/`, no permission, disk full) raises `OutputError`, a one-line user error
    naming the file and the folder to fix, instead of a traceback.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results should be as readable as any other
        yield tmp_path
        os.replace(tmp_path, path)
    except McmiError:
        raise
    except OSError as err:
        raise OutputError(_cannot_write(path, err)) from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _cannot_write(path: Path, err: OSError) -> str:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the folder that refused to hold a new one
        folder = folder.parent
    return (f"cannot write {path} ({err.strerror or type(err).__name__}); make {folder} writable or choose another "
            f"name")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as strict JSON (RFC 8259): every non-finite float (NaN, ±inf — a diverged loss, say),
    also inside tensors and arrays, is written as `null`, never as the bare `NaN`/`Infinity` that
    `json.dumps` emits by default and strict parsers reject. Finite values are written as before."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(strict_json(data), indent=1, sort_keys=False, default=_jsonable,
                                  allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def strict_json(value: Any) -> Any:
    """`value` with every non-finite float in it (in dicts, lists, tuples) replaced by None; other values are
    returned as they are (objects `json` cannot serialise are left to `_jsonable`, which cleans its output)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return strict_json(value.tolist())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def git_commit(cwd: str | os.PathLike | None = None) -> dict:
    """Commit of the package's source checkout (None outside git) and whether it had local changes."""
    where = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance(job_config: dict, seed: int | None, device: str, wall_time_s: float | None = None) -> dict:
    """Everything needed to tell how a result was made: the job's own config, seed, versions, host, and the
    code that ran: the file the `mcmikd` package was imported from and the commit of that checkout."""
    import numpy
    import torch

    import mcmikd

    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
                "mcmikd": mcmikd.__version__}
    try:
        from importlib.metadata import version

        versions["snakemake"] = version("snakemake")
    except Exception:  # pragma: no cover - snakemake is a dependency, but provenance must never fail a job
        versions["snakemake"] = None
    dev = {"device": device, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        dev["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return {
        "config": job_config,
        "seed": seed,
        "versions": versions,
        "package_file": mcmikd.__file__,
        "git": git_commit(Path(mcmikd.__file__).resolve().parent),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **dev,
        "wall_time_s": wall_time_s,
    }
