"""Code inputs from the static import graph (mcmikd.codedeps): what it finds, and that it covers what jobs
really import (checked against `sys.modules` in a fresh interpreter)."""

import ast
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from mcmikd.codedeps import code_inputs, registry_module
from mcmikd.distill import METHODS, method_source_files
from mcmikd.experiments import EXPERIMENTS
from mcmikd.models import MODELS, model_source_files
from mcmikd.teachers import OBJECTIVES

SRC = ROOT / "src"
SCRIPTS = ROOT / "workflow" / "scripts"
RULE_SCRIPTS = sorted({m for smk in (ROOT / "rules").glob("*.smk")
                       for m in re.findall(r'"\.\./workflow/scripts/(\w+)\.py"', smk.read_text())})


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # code_inputs answers relative to the working directory


def test_a_student_job_depends_on_what_its_models_import_and_nothing_it_does_not(tmp_path):
    """The case found by hand once: ShuffleV2 imported shufflenetv1.py (its channel shuffle), which no hand-kept
    list named. Today both ShuffleNets take it from models/base.py; the closure follows whatever they import."""
    files = code_inputs(str(SCRIPTS / "train_student.py"), registry_module(MODELS["ShuffleV2"]),
                        registry_module(MODELS["resnet8"]), registry_module(METHODS["kd"]), base=SRC)
    assert {"src/mcmikd/models/shufflenetv2.py", "src/mcmikd/models/base.py", "src/mcmikd/models/resnet.py",
            "src/mcmikd/distill/methods/kd.py"} <= set(files)
    assert "src/mcmikd/models/shufflenetv1.py" not in files and "src/mcmikd/plots.py" not in files
    assert "src/mcmikd/models/shufflenetv1.py" in model_source_files("ShuffleV1")
    assert files == sorted(files) and all(not os.path.isabs(f) and os.path.isfile(f) for f in files)


def test_the_closure_follows_lazy_relative_and_submodule_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "mcmikd"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "b.py").write_text("def f():\n    from . import c\n    from .. import d\n")
    (pkg / "a" / "c.py").write_text("import os\n")
    (pkg / "d.py").write_text("from mcmikd import e\nfrom mcmikd.a.c import path\n")
    (pkg / "e.py").write_text("")
    (pkg / "unused.py").write_text("")
    script = tmp_path / "job.py"
    script.write_text("import _src\nimport numpy\nfrom mcmikd.a import b\n")
    monkeypatch.chdir(tmp_path)
    expected = ["mcmikd/__init__.py", "mcmikd/a/__init__.py", "mcmikd/a/b.py", "mcmikd/a/c.py", "mcmikd/d.py",
                "mcmikd/e.py"]
    assert code_inputs(str(script), base=tmp_path) == expected
    assert code_inputs("mcmikd.a.b:f", base=tmp_path) == expected
    assert code_inputs("mcmikd.e", base=tmp_path) == ["mcmikd/__init__.py", "mcmikd/e.py"]
    with pytest.raises(ModuleNotFoundError):
        code_inputs("mcmikd.missing", base=tmp_path)


def test_methods_need_no_hand_kept_lists_any_more():
    for path in (SRC / "mcmikd" / "distill" / "methods").glob("*.py"):
        assert "USES" not in {t.id for node in ast.parse(path.read_text()).body if isinstance(node, ast.Assign)
                              for t in node.targets if isinstance(t, ast.Name)}, path
    # base_terms imports kd_loss lazily: every method depends on kd.py, and fitnet on the shared helpers
    assert "src/mcmikd/distill/methods/kd.py" in method_source_files("at")
    assert "src/mcmikd/distill/methods/_common.py" in method_source_files("fitnet")


# What a job really imports, in a fresh interpreter: for each case, the mcmikd modules loaded by it alone
# (third-party modules stay loaded between cases, the package is dropped from sys.modules after each).
PROBE = textwrap.dedent("""
    import ast, importlib, json, sys
    import torch, numpy, pandas, matplotlib  # noqa: F401  (third-party, shared by every case)

    def loaded():
        return sorted(m.__file__ for n, m in list(sys.modules.items())
                      if (n == "mcmikd" or n.startswith("mcmikd.")) and getattr(m, "__file__", None))

    def forget():
        for n in [n for n in sys.modules if n == "mcmikd" or n.startswith("mcmikd.")]:
            del sys.modules[n]

    def script(path):
        tree = ast.parse(open(path).read())
        body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                and not any(a.name == "_src" for a in n.names)]
        exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), {})

    def model(name):
        from mcmikd.models import create_model
        create_model(name, 10, 3)

    def method(name):
        from mcmikd.distill import get_method
        get_method(name)

    def objective(name):
        from mcmikd.teachers import get_objective
        get_objective(name)

    def experiment(name):
        from mcmikd.experiments import get_experiment
        get_experiment(name)

    out = {}
    for kind, name in json.loads(sys.argv[1]):
        forget()
        {"script": script, "model": model, "method": method, "objective": objective,
         "experiment": experiment}[kind](name)
        out[f"{kind}:{name}"] = loaded()
    print(json.dumps(out))
""")


def test_derived_inputs_cover_every_module_a_job_really_loads():
    cases = ([("script", str(SCRIPTS / f"{s}.py")) for s in RULE_SCRIPTS] + [("model", m) for m in MODELS]
             + [("method", m) for m in METHODS] + [("objective", o) for o in OBJECTIVES]
             + [("experiment", e) for e in EXPERIMENTS])
    assert len(RULE_SCRIPTS) >= 8
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.splitlines()[-1])
    derived = {"script": lambda s: code_inputs(s, base=SRC),
               "model": lambda m: code_inputs(registry_module(MODELS[m]), base=SRC),
               "method": lambda m: code_inputs(registry_module(METHODS[m]), base=SRC),
               "objective": lambda o: code_inputs(registry_module(OBJECTIVES[o]), base=SRC),
               "experiment": lambda e: code_inputs(registry_module(EXPERIMENTS[e]), base=SRC)}
    for kind, name in cases:
        files = {os.path.relpath(os.path.realpath(f), os.path.realpath(ROOT)) for f in loaded[f"{kind}:{name}"]}
        assert files and all(f.startswith("src/mcmikd/") for f in files), (name, files)
        missing = files - set(derived[kind](name))
        assert not missing, f"{kind} {name} loads {sorted(missing)}, not among its code inputs"
