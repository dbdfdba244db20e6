"""The GPU benchmark (`bench/gpu.py`) and the packed column of the cost report (`bench/cost.py`), run in their tiny
CPU modes: they must work here so that they run as they are on a GPU machine."""

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT

DOCS_REPORT = ROOT / "docs" / "benchmarks-gpu.md"


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_gpu_bench_smoke_writes_its_table_outside_docs(tmp_path):
    before = DOCS_REPORT.read_bytes() if DOCS_REPORT.exists() else None
    proc = _run("bench/gpu.py", "--smoke", "--device", "cpu", "--budget-s", "240")
    out = re.search(r"^written: (\S+\.md) and (\S+\.json)$", proc.stdout, re.M)
    assert out, proc.stdout[-2000:]
    report, data = map(__import__("pathlib").Path, out.groups())
    assert ROOT / "docs" not in report.parents  # CPU smoke numbers never land in the docs
    assert (DOCS_REPORT.read_bytes() if DOCS_REPORT.exists() else None) == before
    text = report.read_text()
    assert "* GPU: none (device cpu)" in text and "* Command: `python bench/gpu.py --smoke --device cpu" in text
    rows = {_cells(line)[0]: _cells(line) for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    base = next(cells for name, cells in rows.items() if name.startswith("RepDistiller-style loop"))
    paper = next(cells for name, cells in rows.items() if name.startswith("this engine, paper runtime")
                 and "graphs" not in name)
    graphs = next(cells for name, cells in rows.items() if "compile graphs" in name)
    packed = next(cells for name, cells in rows.items() if name.startswith("packed engine jobs, 2"))
    for cells in (base, paper, packed):
        assert cells[-1] == "ok", cells
        assert float(cells[2].replace(",", "")) > 0
    assert base[4] == "1.00×"
    # every engine row says how its steps ran (CPU: no graph replays; static buffers count as eager)
    assert base[5] == "–" and re.fullmatch(r"0 / [1-9][0-9,]*", paper[5]) and re.fullmatch(r"0 / [1-9][0-9,]*",
                                                                                           packed[5])
    assert "time-sliced (no MPS)" in packed[0] and "CUDA MPS: not measured (no CUDA device)" in text
    from mcmikd.engine import Runtime

    if "compile" in Runtime.__dataclass_fields__:
        assert graphs[-1] == "ok", graphs
    else:
        assert graphs[-1] == "not available in this engine"
    record = json.loads(data.read_text())
    assert record["smoke"] is True and record["best_pack"] in (1, 2)
    assert [r["jobs"] for r in record["rows"] if r["section"] == "packing"] == [1, 2]

    # `bench/cost.py --pack best` takes no packing from a smoke run, nor from a missing report
    spec = importlib.util.spec_from_file_location("bench_cost", ROOT / "bench" / "cost.py")
    cost = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = cost  # dataclasses resolve their (string) annotations through sys.modules
    try:
        spec.loader.exec_module(cost)
    finally:
        sys.modules.pop(spec.name, None)
    for path in (data, tmp_path / "missing.json"):
        with pytest.raises(SystemExit, match="bench/gpu.py"):
            cost.best_pack(path)
    data.write_text(json.dumps({**record, "smoke": False, "best_pack": 4}))
    assert cost.best_pack(data) == 4
    report.unlink()
    data.unlink()


def test_cost_prices_every_job_of_the_grid_on_the_engine_step_one_and_packed(tmp_path):
    out = tmp_path / "cost.md"
    _run("bench/cost.py", "--config", "tests/tiny.yaml", "--steps", "1", "--threads", "1", "--pack", "2",
         "--out", str(out))
    text = out.read_text()
    lines = text.splitlines()
    assert "(`bench/cost.py --config tests/tiny.yaml --pack 2`):" in lines[0]
    header = lines.index("| step family | jobs | step, eager | init stage | GPU-hours, eager |")
    rows = [_cells(line) for line in lines[header + 2:] if line.startswith("| ")]
    rows = rows[:next(i for i, c in enumerate(rows) if c[0] == "stage")]
    # one family per distinct step of the grid; every job priced once (tests/tiny.yaml: 24 students, 6 teachers)
    names = {c[0] for c in rows}
    assert {"resnet8 teacher, mll", "resnet8 (no teacher), ce", "resnet8 → resnet8, kd", "resnet8 → resnet8, at",
            "resnet8 fine-tuned teacher, ce_finetune"} <= names, names
    assert sum(int(c[1]) for c in rows) == 24 + 6
    for cells in rows:
        assert cells[2].endswith(" ms") and float(cells[2].removesuffix(" ms")) > 0 and float(cells[4]) >= 0
    stages = lines.index("| stage | hours, eager | hours, 2 jobs per GPU (eager) |")
    stage_rows = [_cells(line) for line in lines[stages + 2:] if line.startswith("| ")]
    assert [c[0] for c in stage_rows] == ["teachers from scratch", "fine-tuned teachers", "students: main",
                                          "students: temperature", "CMI measurements", "Eigen-CAM", "**all**"]
    assert all(float(v.strip("*")) >= 0 for c in stage_rows for v in c[1:])
    assert "start-up" in text and "2 jobs per GPU:" in text and "the mean ratio" in text


def test_mps_script_starts_reports_and_stops_a_daemon(tmp_path):
    """workflow/scripts/mps.sh against a stand-in for nvidia-cuda-mps-control (no GPU here): `start` starts one
    daemon (not a second) and prints the pipe to export, `status` and `stop` follow it; a missing binary is one line."""
    fake = tmp_path / "fake-mps-control"
    calls = tmp_path / "calls"
    fake.write_text(f"""#!/usr/bin/env bash
if [ "${{1:-}}" = -d ]; then echo start >> {calls}; touch "$CUDA_MPS_PIPE_DIRECTORY/control"; exit 0; fi
read -r line; echo "$line" >> {calls}
[ -e "$CUDA_MPS_PIPE_DIRECTORY/control" ] || exit 1
[ "$line" = quit ] && rm "$CUDA_MPS_PIPE_DIRECTORY/control"
exit 0
""")
    fake.chmod(0o755)
    script = str(ROOT / "workflow" / "scripts" / "mps.sh")
    env = {"PATH": "/usr/bin:/bin", "MPS_CONTROL": str(fake), "USER": "u"}

    def mps(*args):
        return subprocess.run(["bash", script, *args, str(tmp_path / "mps")], env=env, capture_output=True, text=True)

    assert mps("status").returncode == 1
    started = mps("start")
    assert started.returncode == 0 and f"CUDA_MPS_PIPE_DIRECTORY={tmp_path}/mps/pipe" in started.stdout
    assert mps("start").returncode == 0 and mps("status").stdout.strip() == "running"
    assert calls.read_text().split().count("start") == 1  # the second start found the daemon running
    assert mps("stop").returncode == 0 and mps("status").returncode == 1
    missing = subprocess.run(["bash", script, "start"], env={**env, "MPS_CONTROL": "no-such-binary"},
                             capture_output=True, text=True)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_the_gpu_check_command_runs_as_it_is(tmp_path):
    """bench/gpu_check.sh, the one command a GPU session runs, in its CPU smoke mode: every stage starts, finishes
    with exit 0 and leaves its report (the capture check in both runtimes, the cost of a grid)."""
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path)], cwd=ROOT,
                          env={**__import__("os").environ, "SMOKE": "1", "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["capture-paper", "capture-fast", "cost"]
    assert all(": exit 0 after" in line for line in summary), summary
    for report in ("capture-paper.md", "capture-fast.md", "cost.md"):
        assert (tmp_path / report).read_text().strip()
    assert "3 of 3 cases pass" in (tmp_path / "capture-paper.md").read_text()


def test_cost_sizes_imagenet_from_its_published_counts_until_the_folders_exist(tmp_path):
    """config/imagenet.yaml is priced without its data: 1000 classes at 224 px, ILSVRC-2012's 1,281,167 training
    and 50,000 validation images, and one step family per distinct training step of its grid."""
    import yaml

    from conftest import SCHEMA
    from mcmikd.config import load_grid

    spec = importlib.util.spec_from_file_location("bench_cost", ROOT / "bench" / "cost.py")
    cost = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = cost
    try:
        spec.loader.exec_module(cost)
    finally:
        sys.modules.pop(spec.name, None)
    config = yaml.safe_load((ROOT / "config" / "imagenet.yaml").read_text())
    config["dataset"]["root"] = str(tmp_path / "imagenet")
    assert cost.dataset_sizes(config["dataset"]) == ((1000, 3, 224), 1_281_167, 50_000)
    fams = cost.families(load_grid(config, SCHEMA), 1_281_167, 1000)
    labels = {f.label for f in fams.values()}
    assert {"resnet34 teacher, mll", "resnet50 fine-tuned teacher, ce_finetune", "resnet34 → resnet18, at",
            "resnet50 → MobileNetV1, crd", "MobileNetV1 (no teacher), ce"} <= labels, labels
    assert sum(len(f.jobs) for f in fams.values()) == 2 + 4 + 26  # MLL, fine-tuned teachers, students
    assert all(job["steps"] == 2503 for f in fams.values() for job in f.jobs)  # ⌈1,281,167 / 512⌉
    for split, n in (("train", 3), ("val", 2)):
        for wnid in ("n01440764", "n02093754"):
            (tmp_path / "imagenet" / split / wnid).mkdir(parents=True)
            for i in range(n):
                (tmp_path / "imagenet" / split / wnid / f"{i}.JPEG").write_bytes(b"")
    assert cost.dataset_sizes(config["dataset"]) == ((2, 3, 224), 6, 4)  # the folders' own counts once they exist
