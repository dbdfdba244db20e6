"""Atomic file output, JSON helpers, content records of intermediate files, and run provenance."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcmikd.errors import McmiError, OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike, report: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    A job killed half-way leaves only a hidden `.tmp` file, never a file that looks complete. A file system that
    refuses the write (read-only `results/`, no permission, disk full) raises `OutputError`, a one-line user error
    naming the file (`report`, when the file written is a sidecar of it) and the folder to fix, instead of a
    traceback — also when the writer reports a full disk in its own words (`torch.save`'s "basic_ios::clear:
    iostream error" or "unexpected pos"): any error while the folder's file system has less than
    `LOW_SPACE` bytes free reads as "No space left on device".
    """
    path = Path(path)
    named = Path(report) if report is not None else path
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
        raise OutputError(_cannot_write(named, err)) from None
    except Exception:
        if _low_space(path.parent):
            raise OutputError(_cannot_write(named, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))) from None
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


LOW_SPACE = 64 << 20  # bytes free below which a failed write is reported as a full disk


def _low_space(folder: Path) -> bool:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


def _cannot_write(path: Path, err: OSError) -> str:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the folder that refused to hold a new one
        folder = folder.parent
    return (f"cannot write {path} ({err.strerror or type(err).__name__}); make {folder} writable or choose another "
            f"name")


def write_json(path: str | os.PathLike, data: Any, record: bool = True) -> None:
    """Write `data` as strict JSON (RFC 8259): every non-finite float (NaN, ±inf — a diverged loss, say),
    also inside tensors and arrays, is written as `null`, never as the bare `NaN`/`Infinity` that
    `json.dumps` emits by default and strict parsers reject. Finite values are written as before. With `record`,
    also its content record (`write_record`), which `read_json` checks: a result edited after its job wrote it
    reads as damaged, never reaches a table."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(strict_json(data), indent=1, sort_keys=False, default=_jsonable,
                                  allow_nan=False) + "\n")
        if record:
            write_record(path, tmp)


def read_json(path: str | os.PathLike) -> Any:
    """A result file; one that does not match its content record (edited after its job wrote it) or is not valid
    JSON (truncated, overwritten) is a one-line `DamagedFileError` naming the repair."""
    verify_file(path)
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise damaged_error(path, f"not valid JSON: {reason}") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def torch_save(obj: Any, path: str | os.PathLike, record: bool = True) -> None:
    """`torch.save` atomically; with `record`, also the file's content record (see `write_record`)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        if record:
            write_record(path, tmp)


# ----------------------------------------------------------------------------------------------- content records
# Every binary intermediate a job writes and later jobs read (the prepared data, each teacher's model, the
# Eigen-CAM maps) gets a record beside it, `.<name>.sha256`: JSON with the file's sha256 and size. It is a
# sidecar, not embedded, so the file stays a plain torch file and its size can be checked with one `stat`,
# without opening it (no mtime: Snakemake touches every output after its job). The record is written
# (atomically) before the file is renamed into place: a job killed between the two leaves a record that does not
# match, which reads as damaged and reruns the job, never a wrong file that looks verified. A file without a
# record (written before records existed) is not checked.
def record_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.sha256")


def recorded_name(record_name: str) -> str | None:
    """The name of the file whose content record is called `record_name` (the inverse of `record_path` on names),
    or None when `record_name` is not a record's name."""
    if record_name.startswith(".") and record_name.endswith(".sha256") and len(record_name) > len("..sha256"):
        name = record_name[1:-len(".sha256")]
        return name if record_path(name).name == record_name else None
    return None


def resume_path(output: str | os.PathLike) -> str:
    """A training job's epoch checkpoint, `.<stem>.resume.pt` beside its output (not among the outputs:
    Snakemake deletes a failed job's outputs). The rules and `mcmikd train` name it with this function."""
    out = Path(str(output))
    return str(out.parent / f".{out.stem}.resume.pt")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_record(path: str | os.PathLike, written: str | os.PathLike | None = None) -> None:
    """Record the content of `path`, or of `written`: the finished temporary file about to become `path`."""
    source = Path(written if written is not None else path)
    record = {"file": Path(path).name, "sha256": sha256_file(source), "size": source.stat().st_size}
    with atomic_path(record_path(path), report=path) as tmp:
        tmp.write_text(json.dumps(record) + "\n")


def read_record(path: str | os.PathLike) -> dict | None:
    """The record of `path` (None when it has none); an unreadable record is a `DamagedFileError`."""
    rec_path = record_path(path)
    try:
        record = json.loads(rec_path.read_text())
        if not isinstance(record.get("sha256"), str) or not isinstance(record.get("size"), int):
            raise ValueError("no sha256 and size")
        return record
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as exc:
        raise damaged_error(path, f"its record {rec_path} is unreadable ({exc})") from None


def check_record(path: str | os.PathLike, record: dict, full: bool = True) -> str | None:
    """Why `path` does not match `record` (None when it does): a missing file, another size, or, with `full`,
    another sha256."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return f"missing, but {record_path(path).name} records that it was written"
    if stat.st_size != record["size"]:
        return f"{stat.st_size} bytes, {record['size']} when written"
    if full and sha256_file(path) != record["sha256"]:
        return "its sha256 is not the one recorded when it was written"
    return None


def verify_file(path: str | os.PathLike) -> None:
    """Raise a one-line `DamagedFileError` when `path` does not match its record (full sha256)."""
    record = read_record(path)
    if record is not None and (reason := check_record(path, record)):
        raise damaged_error(path, reason)


def repair_command(path: str | os.PathLike) -> str:
    """The command that rebuilds `path` and reruns every job reading it (paths are relative to the working
    directory, as the jobs see them)."""
    return f"snakemake --forcerun {path}"


def damaged_error(path: str | os.PathLike, reason: str):
    """The one-line error for a damaged `path`, with the command that repairs it."""
    from mcmikd.errors import DamagedFileError

    return DamagedFileError(f"{path} is damaged ({reason}); repair it with `{repair_command(path)}` plus the "
                            f"options you ran the workflow with (--configfile, --profile)")


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
    """Everything needed to tell how a result was made: the job's own config, seed, versions, host, the machine
    fingerprint (`mcmikd.machine.fingerprint`: CPU model, ATen kernel set, kernel-forcing environment; what decides
    the float bits on the CPU), and the code that ran: the file the `mcmikd` package was imported from and the
    commit of that checkout."""
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
    from mcmikd.machine import fingerprint

    dev = {"device": device, "threads": torch.get_num_threads(), "machine": fingerprint()}
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
