"""The extension points stay plug-ins: no code outside its own file and its registry line names a teacher
objective or an experiment kind (a rule, the grid, the tables or the figures would then have to change with it)."""

import re

import pytest

from conftest import ROOT
from mcmikd.experiments import EXPERIMENTS
from mcmikd.teachers import OBJECTIVES

CODE = [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "rules").glob("*.smk")), ROOT / "Snakefile",
        *sorted((ROOT / "workflow" / "scripts").glob("*.py")), *sorted((ROOT / "workflow" / "report").glob("*.rst"))]


def places(name: str) -> list[str]:
    """'file:line' of every quoted occurrence of `name` (as a string literal) in the workflow's code."""
    pattern = re.compile(rf"""["']{re.escape(name)}["']""")
    return [f"{path.relative_to(ROOT)}:{i}: {line.strip()}" for path in CODE
            for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]


# Words two concepts share: the engine's training phases ("init", "main") and the KD temperature T, a
# hyper-parameter of every method (and a column of the runs table), are not the experiment kinds of those names.
HOMONYMS = {"main": re.compile(r"^src/mcmikd/(engine|plots)\.py:.*(phase|checkpoint\(|epoch_done\()"),
            "temperature": re.compile(r"^src/mcmikd/(distill/|aggregate\.py:.*hp\.get\(|plots\.py:.*\"omitted\"|"
                                      r"experiments/recipes\.py:.*\.get\(\"kd\"\))")}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_an_experiment_kind_is_named_only_in_its_file_and_registry_line(name):
    own = {f"src/mcmikd/experiments/{name}.py", "src/mcmikd/experiments/__init__.py"}
    homonym = HOMONYMS.get(name, re.compile("(?!)"))
    assert [p for p in places(name) if p.split(":")[0] not in own and not homonym.search(p)] == []


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_a_teacher_objective_is_named_only_in_its_file_its_registry_line_and_start_points(name):
    own = {f"src/mcmikd/teachers/{name}.py", "src/mcmikd/teachers/__init__.py"}
    # another objective may declare that it starts from this one (`start_from = "mll"`) or that this one is its
    # control (`control = "ce_finetune"`): those are its declarations
    others = [p for p in places(name) if p.split(":")[0] not in own
              and "start_from = " not in p and "control = " not in p]
    assert others == []
