"""Every job runs the config its run planned, even if a config file is edited while the run is queued.

A job that Snakemake runs in its own process (a SLURM or other cluster job, `--exec-mode remote`; group jobs)
parses the Snakefile again and re-reads the config files: an edit made after the head process planned the run
would give that job other values than the plan (and the head's params check, which ran before the edit, would
not see it). So:

* the head process (`announce`, at parse time) puts the digest of the config it read into the environment
  (`MCMIKD_PLANNED_CONFIG`; SLURM jobs inherit it, `--export=ALL`; the Snakefile also declares it in `envvars:`
  for executors that pass variables on the command line) and, before any job (`save`, from `onstart`), stores the
  config under `.snakemake/mcmikd/planned-config/<digest>.json` in the working directory (shared with the jobs);
* a job process (`for_job`) compares the digest of the config it read with the planned one: equal, nothing
  happens; different, it runs the stored planned config instead and says so in one line; no stored config (or a
  damaged one): it refuses in one line, before any work.

The digest is of the canonical form (`mcmikd.canonical`): reformatting a file is no edit. Torch-free.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

from mcmikd.canonical import canonical
from mcmikd.errors import ConfigError

ENV = "MCMIKD_PLANNED_CONFIG"
FOLDER = Path(".snakemake") / "mcmikd" / "planned-config"


def digest(config: dict) -> str:
    """Hex SHA-256 (first 20 digits) of the canonical JSON of `config`."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def announce(config: dict) -> str:
    """Head process: the plan's digest, also put into the environment its jobs inherit."""
    os.environ[ENV] = digest(config)
    return os.environ[ENV]


def save(config: dict, folder: str | os.PathLike = FOLDER) -> Path:
    """Head process, before any job: store `config` (as read, before defaults) for the jobs. Returns its path."""
    from mcmikd.io import write_json

    path = Path(folder) / f"{digest(config)}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, config)
    return path


def for_job(config: dict, folder: str | os.PathLike = FOLDER) -> tuple[dict | None, str | None]:
    """Job process: (the planned config to run instead of `config`, the line saying so), or (None, None) when
    `config` is what was planned (or no plan is known: a job started by hand; then `config` becomes the plan). Raises a
    one-line ConfigError when the config changed and the planned one is not stored."""
    planned = os.environ.get(ENV)
    if not planned:  # no plan known (a job started by hand): this config is its own plan
        os.environ[ENV] = digest(config)  # (the Snakefile's `envvars:` needs the variable set)
        return None, None
    if planned == digest(config):
        return None, None
    path = Path(folder) / f"{planned}.json"
    stored = None
    if path.exists():
        from mcmikd.io import read_json

        try:
            stored = read_json(path)
        except Exception:  # damaged or unreadable: treated as missing
            stored = None
    if not isinstance(stored, dict) or digest(stored) != planned:
        raise ConfigError(f"the config files changed after this run was planned (planned {planned}, now "
                          f"{digest(config)}) and {path} does not hold the planned config; edit configs only when no "
                          f"run is queued: let the run end or cancel it, then start it again")
    return copy.deepcopy(stored), (f"note: the config files changed after this run was planned; this job runs the "
                                   f"planned config ({path}), as every job of the run does")
