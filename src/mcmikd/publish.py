"""`python -m mcmikd publish RESULTS DEST`: keep a finished run's readable results where others can compare with them.

Copies from RESULTS (`results/<name>`) into DEST (e.g. `docs/results/default`): every table (`tables/*.md`,
`tables/*.csv`), every figure as PNG (`figures/*.png`), every runs table as `runs_<experiment>.csv` (what
`python -m mcmikd compare` reads), and `machine.json`: the machine fingerprints (`mcmikd.machine.fingerprint`) found
in the provenance of the run's results, so that a later rerun can tell whether it should match bit for bit (same
fingerprint) or only statistically (another machine). Nothing else in DEST is touched.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def fingerprints(results: Path) -> list[dict]:
    """The distinct machine fingerprints in the provenance of the run's result files (students' JSON, teachers'
    metrics.json), in the order first seen."""
    seen: list[dict] = []
    for path in sorted(results.glob("students/**/*.json")) + sorted(results.glob("teachers/**/metrics.json")):
        try:
            fp = json.loads(path.read_text()).get("provenance", {}).get("machine")
        except (OSError, ValueError):
            continue
        if fp and fp not in seen:
            seen.append(fp)
    return seen


def publish(results: str, dest: str) -> list[Path]:
    """Copy the readable results of `results` into `dest` (module docstring); returns the files written. Raises
    ValueError (one line) when `results` has no runs tables."""
    src, out = Path(results), Path(dest)
    runs = sorted((src / "runs").glob("*.csv"))
    if not runs:
        raise ValueError(f"{results}: no runs/*.csv; give the results folder of a finished run (results/<name>)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in runs:
        written.append(Path(shutil.copyfile(path, out / f"runs_{path.stem}.csv")))
    for pattern in ("tables/*.md", "tables/*.csv", "figures/*.png"):
        for path in sorted(src.glob(pattern)):
            written.append(Path(shutil.copyfile(path, out / path.name)))
    machine = out / "machine.json"
    machine.write_text(json.dumps({"results": str(src), "machines": fingerprints(src)}, indent=1) + "\n")
    return written + [machine]


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mcmikd publish", description=__doc__.split("\n")[0])
    ap.add_argument("results", help="results folder of a finished run (results/<name>)")
    ap.add_argument("dest", help="where to keep its tables, figures, runs tables and machine.json")
    args = ap.parse_args(argv)
    try:
        files = publish(args.results, args.dest)
    except (ValueError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(files)} files written to {args.dest}")
    return 0
