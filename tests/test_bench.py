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
    spec.loader.exec_module(cost)
    for path in (data, tmp_path / "missing.json"):
        with pytest.raises(SystemExit, match="bench/gpu.py"):
            cost.best_pack(path)
    data.write_text(json.dumps({**record, "smoke": False, "best_pack": 4}))
    assert cost.best_pack(data) == 4
    report.unlink()
    data.unlink()


def test_cost_reports_one_and_packed_jobs_per_gpu(tmp_path):
    out = tmp_path / "cost.md"
    _run("bench/cost.py", "--config", "tests/tiny.yaml", "--steps", "1", "--threads", "1", "--pack", "2",
         "--out", str(out))
    lines = out.read_text().splitlines()
    assert lines[0].endswith("(`bench/cost.py --config tests/tiny.yaml --pack 2`):")
    header = lines.index("| job | time per step | total, one job per GPU | time per step, 2 at once | "
                         "total, 2 jobs per GPU |")
    jobs = [_cells(line) for line in lines[header + 2:] if line.startswith("| ")]
    jobs = jobs[:next(i for i, c in enumerate(jobs) if c[0] == "stage")]
    assert [c[0] for c in jobs] == ["teacher resnet8", "none → resnet8: 3 student runs",
                                    "resnet8 → resnet8: 21 student runs"]
    for cells in jobs:
        assert len(cells) == 5 and all(int(cells[i].removesuffix(" ms")) >= 0 for i in (1, 3)), cells
        assert cells[3] != "" and cells[4].endswith(" h" if "student" in cells[0] else " seeds)")
    stages = lines.index("| stage | hours, one job per GPU | hours, 2 jobs per GPU |")
    total = _cells(lines[stages + 5])
    assert total[0] == "**all**" and all(float(v.strip("*")) >= 0 for v in total[1:])
