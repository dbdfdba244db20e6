"""Imported first by every script, and run by rules/common.smk at parse time: the workflow's own package
(src/ next to the Snakefile) is the `mcmikd` that runs, installed or not and whatever other `mcmikd` is
installed — e.g. inside a `--sdm conda` environment built from environment.yml, or in a venv holding an
editable install of a second clone. The rules declare exactly these files as code inputs.

src/ goes first on sys.path even when it is already there (Snakemake appends its search paths at the end,
after site-packages), and a `mcmikd` already imported from elsewhere is dropped from `sys.modules`."""

import importlib
import os
import sys
from pathlib import Path

SRC = os.path.realpath(Path(__file__).resolve().parents[2] / "src")


def use_checkout(src: str = SRC) -> None:
    """Make `src`'s `mcmikd` the one `import mcmikd` finds, now and for the rest of the process."""
    sys.path[:] = [src, *(p for p in sys.path if not (p and os.path.realpath(p) == src))]
    loaded = sys.modules.get("mcmikd")
    origin = getattr(loaded, "__file__", None) or ""
    if loaded is not None and not os.path.realpath(origin).startswith(src + os.sep):
        for name in [n for n in sys.modules if n == "mcmikd" or n.startswith("mcmikd.")]:
            del sys.modules[name]
    importlib.invalidate_caches()


use_checkout()
