"""What the project ships works outside this checkout's editable install: the package with its schema installed as
an ordinary (non-editable) package, and the minimum Snakemake version read from the one place that states it."""

import shutil
import subprocess
import sys

import yaml

from conftest import ROOT


def test_the_minimum_snakemake_version_is_pyprojects_lower_bound(tmp_path):
    """The Snakefile states no version of its own: a pyproject asking for a newer Snakemake stops the parse."""
    for entry in ROOT.iterdir():
        if entry.name not in ("pyproject.toml", "Snakefile", ".git", ".venv", ".venv-lint", "results", "logs",
                              "benchmarks", ".snakemake"):
            (tmp_path / entry.name).symlink_to(entry)
    shutil.copy(ROOT / "Snakefile", tmp_path / "Snakefile")
    text = (ROOT / "pyproject.toml").read_text()
    assert '"snakemake>=9.20,<10"' in text  # the bound this test moves
    (tmp_path / "pyproject.toml").write_text(text.replace('"snakemake>=9.20,<10"', '"snakemake>=99.1,<100"'))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "Expecting Snakemake version 99.1 or higher" in out.stdout + out.stderr, out.stderr[-2000:]


def test_a_non_editable_install_carries_its_schema_and_validates_a_config(tmp_path):
    """`pip install .` (no checkout beside the package): the schema is package data, so every command that checks
    a config (compare, train, paired, recipe) finds it."""
    source, target = tmp_path / "source", tmp_path / "site"  # built from a copy: the build leaves files behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())))
    probe = ("import sys, yaml, mcmikd\n"
             "from mcmikd.config import load_grid, schema_path\n"
             f"assert mcmikd.__file__.startswith({str(target)!r}), mcmikd.__file__\n"
             "assert schema_path().is_file(), schema_path()\n"
             "grid = load_grid(yaml.safe_load(open(sys.argv[1])), schema_path())\n"
             "print(sorted(grid.runs))\n")
    out = subprocess.run([sys.executable, "-c", probe, str(config)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'main'" in out.stdout
