"""Imported first by every script: puts the workflow's own package (src/) first on sys.path, so a job runs the
code that sits next to the Snakefile (and that the rules declare as inputs), installed or not — e.g. inside a
`--sdm conda` environment built from environment.yml."""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
