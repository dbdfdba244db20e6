"""Numbers recorded on one machine, checked on every machine.

A training run's float bits depend on the CPU kernels that computed it (`mcmikd.machine`): the same code and seed
give the same bits on one machine, other bits on another CPU or under another kernel set. A pinned run is therefore
recorded twice, in `tests/recorded/<file>.json` beside the fingerprint of the machine that recorded it:

* its **digest** (every bit of its history, and of its weights where the test hashes them), checked where the
  fingerprint equals the recording's (`same_kernels`): there any change of a bit is a change of behaviour;
* its **values** (per-epoch loss terms, accuracies, CMI), checked on every other machine within `TOLERANCE`.

`TOLERANCE` is a bound on kernel drift over these short runs, measured (`tests/pins.py measure`, numbers in
`tests/recorded/drift.md`): under five kernel sets on one machine (ATen AVX512, AVX2 and the scalar default; oneDNN
capped at AVX2 and at SSE4.1; MKL's conditional-numerical-reproducibility mode) the pinned runs' losses moved by at
most 0.2 % (4 % for the tiny test-set CMI of one run) and accuracies by at most 1.5 points, while a change of the
seed alone moves some loss of every run by ≥ 12 % and some accuracy by ≥ 4 points. The tolerance sits between the
two, so it passes a run on another CPU and fails a run that behaves differently
(`test_pins.py` checks both sides: every case's seed-1 run is refused).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RECORDED = Path(__file__).resolve().parent / "recorded"

# relative for losses (train terms, test loss) and the test-set CMI; absolute in points for accuracies
TOLERANCE = {"loss": 0.02, "cmi": 0.10, "acc": 3.0}
# the fingerprint keys that decide the bits (the host name does not)
KERNEL_KEYS = ("cpu", "cpu_flags", "machine", "aten_capability", "kernel_env", "torch", "threads")


def flatten(history: list[dict]) -> dict[str, float]:
    """A run's history as {"<phase><epoch>.<quantity>": value}: every training loss term, train/test accuracy,
    test loss and test CMI of every epoch (None values left out)."""
    out = {}
    for h in history:
        key = f"{h['phase']}{h['epoch']}"
        for term, value in sorted((h.get("train") or {}).items()):
            out[f"{key}.train.{term}"] = value
        for name in ("train_acc", "test_acc", "test_loss", "test_cmi"):
            if h.get(name) is not None:
                out[f"{key}.{name}"] = h[name]
    return {k: float(v) for k, v in out.items() if v is not None}


def kind(key: str) -> str:
    """Which tolerance a flattened value gets."""
    return "acc" if key.endswith("_acc") else "cmi" if key.endswith("_cmi") else "loss"


def mismatches(values: dict[str, float], recorded: dict[str, float], tolerance: dict | None = None) -> list[str]:
    """The values outside the tolerance of their recorded ones, each as one readable line ([] when all agree).
    A missing or extra value, or a finite/non-finite mismatch, is a mismatch too."""
    tol = tolerance or TOLERANCE
    bad = [f"{k}: missing (recorded {recorded[k]})" for k in recorded if k not in values]
    bad += [f"{k}: not recorded (got {values[k]})" for k in values if k not in recorded]
    for k in recorded.keys() & values.keys():
        a, b = values[k], recorded[k]
        if not (math.isfinite(a) and math.isfinite(b)):
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                bad.append(f"{k}: {a} vs recorded {b}")
            continue
        t = kind(k)
        limit = tol[t] if t == "acc" else tol[t] * abs(b)
        if abs(a - b) > limit:
            bad.append(f"{k}: {a:.6g} vs recorded {b:.6g} (|Δ| {abs(a - b):.3g} > {limit:.3g}, {t} tolerance)")
    return sorted(bad)


def same_kernels(a: dict, b: dict) -> bool:
    """Whether two machine fingerprints give the same float bits (same CPU, flags, kernel set, torch, threads)."""
    return all(a.get(k) == b.get(k) for k in KERNEL_KEYS)


def load(file: str) -> dict:
    return json.loads((RECORDED / f"{file}.json").read_text())


def check(file: str, case: str, history: list[dict], digest: str) -> str:
    """Assert a pinned run: bit for bit (`digest`) on the recording machine's kernels, within `TOLERANCE`
    (`history`'s values) elsewhere. Returns which check ran ("bits" or "tolerance")."""
    from mcmikd.machine import describe, fingerprint

    rec = load(file)
    entry = rec["cases"][case]
    here = fingerprint()
    if same_kernels(here, rec["machine"]):
        assert digest == entry["digest"], f"{case}: the bits changed on the recording machine's kernels"
        return "bits"
    bad = mismatches(flatten(history), entry["values"])
    assert not bad, (f"{case}: outside the kernel-drift tolerance of the run recorded on "
                     f"{describe(rec['machine'])} (here: {describe(here)}):\n" + "\n".join(bad))
    return "tolerance"


def record(file: str, runs: dict[str, tuple[list[dict], str]], note: str) -> Path:
    """Write `tests/recorded/<file>.json`: this machine's fingerprint and, per case, the digest and the values."""
    from mcmikd.machine import fingerprint

    RECORDED.mkdir(exist_ok=True)
    path = RECORDED / f"{file}.json"
    body = {"note": note, "machine": fingerprint(),
            "cases": {case: {"digest": digest, "values": flatten(history)} for case, (history, digest) in runs.items()}}
    path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    return path


# --------------------------------------------------------------------------------------------- recording, measuring
# every pinned run: file -> (module, its cases); a module's `pinned(case, seed)` returns (history, digest)
PINNED = {"step": ("test_step", "CASES"), "distill": ("test_distill", "PINNED_CASES")}
# the kernel sets `measure` runs the pinned cases under (seed 0), besides this machine's own
KERNEL_SETS = {
    "ATen AVX2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "oneDNN ≤ AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "MKL compatible": {"MKL_CBWR": "COMPATIBLE"},
    "scalar ATen, oneDNN ≤ SSE4.1, MKL compatible (CI's second pass)": {
        "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
}


def _cases(file: str) -> tuple:
    import importlib

    module, cases = PINNED[file]
    mod = importlib.import_module(module)
    names = getattr(mod, cases)
    return mod, [n if isinstance(n, str) else "/".join(n) for n in names]


def run_all(seed: int = 0) -> dict:
    """{file: {case: (history, digest)}} of every pinned run with `seed` (one torch thread, as the tests)."""
    import torch

    torch.set_num_threads(1)
    out = {}
    for file in PINNED:
        mod, names = _cases(file)
        out[file] = {case: mod.pinned(case, seed) for case in names}
    return out


def _measure(out_md: Path) -> None:
    """Run every pinned case under the KERNEL_SETS and with seeds 1 and 2, and write what moved to `out_md`."""
    import os
    import subprocess
    import sys
    import tempfile

    def dump(env: dict, seed: int) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "runs.json"
            subprocess.run([sys.executable, __file__, "dump", str(path), str(seed)], check=True,
                           env={**os.environ, **env}, stdout=subprocess.DEVNULL)
            return json.loads(path.read_text())

    def moved(a: dict, b: dict) -> dict:
        out = {"loss": 0.0, "cmi": 0.0, "acc": 0.0}
        for k in a.keys() & b.keys():
            t = kind(k)
            d = abs(a[k] - b[k]) if t == "acc" else abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
            out[t] = max(out[t], d)
        return out

    base = dump({}, 0)
    variants = {name: dump(env, 0) for name, env in KERNEL_SETS.items()}
    variants.update({f"this machine, seed {s}": dump({}, s) for s in (1, 2)})
    from mcmikd.machine import describe, fingerprint

    lines = ["# Kernel drift and seed change of the pinned runs (`python tests/pins.py measure`)", "",
             f"Machine: {describe(fingerprint(1))}. Reference: this machine's kernels, seed 0. Per run, the largest "
             f"change of any loss (relative), of the test CMI (relative) and of any accuracy (points), and whether "
             f"`pins.mismatches` accepts the run (tolerance: losses {TOLERANCE['loss']:.0%}, CMI "
             f"{TOLERANCE['cmi']:.0%}, accuracies {TOLERANCE['acc']:g} points).", ""]
    worst = {}
    for name, runs in variants.items():
        lines += [f"## {name}", "", "| run | loss | CMI | accuracy | accepted |", "|---|---|---|---|---|"]
        for file in base:
            for case, (history, _) in base[file].items():
                a, b = flatten(runs[file][case][0]), flatten(history)
                m = moved(a, b)
                ok = not mismatches(a, b)
                worst.setdefault(name, []).append((m, ok))
                lines.append(f"| {file}/{case} | {m['loss']:.2e} | {m['cmi']:.2e} | {m['acc']:.2f} | "
                             f"{'yes' if ok else 'no'} |")
        lines.append("")
    lines += ["## Summary", "", "Largest change over all runs; and the least-moved run's largest loss and accuracy "
              "change (what a tolerance must stay below to still see a change of seed).", "",
              "| variant | largest loss change | largest CMI change | largest accuracy change | least-moved run: "
              "loss, accuracy | runs accepted |", "|---|---|---|---|---|---|"]
    for name, rows in worst.items():
        lines.append(f"| {name} | {max(m['loss'] for m, _ in rows):.2e} | {max(m['cmi'] for m, _ in rows):.2e} | "
                     f"{max(m['acc'] for m, _ in rows):.2f} | {min(m['loss'] for m, _ in rows):.2e}, "
                     f"{min(m['acc'] for m, _ in rows):.2f} | {sum(ok for _, ok in rows)} of {len(rows)} |")
    out_md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "record":  # this machine's digests and values of every pinned run
        for file, runs in run_all().items():
            print(record(file, runs, "recorded with `python tests/pins.py record`; digests equal those of the code "
                                     "each test names"))
    elif what == "dump":  # python tests/pins.py dump OUT.json SEED (used by measure)
        Path(sys.argv[2]).write_text(json.dumps(run_all(int(sys.argv[3]))))
    elif what == "measure":
        _measure(RECORDED / "drift.md")
        print(RECORDED / "drift.md")
    else:
        sys.exit("usage: python tests/pins.py record | measure")
