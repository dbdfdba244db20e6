"""config/README.md is generated (`mcmikd config-docs`, mcmikd.configdocs) from the schema's and the experiment
kinds' key descriptions, the config files' leading comments and the plug-in registries; it stays current, every key
has a meaning, every plug-in is listed, and generating it never imports torch."""

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, SCHEMA
from mcmikd import configdocs
from mcmikd.datasets import DATASETS
from mcmikd.distill import METHODS
from mcmikd.experiments import EXPERIMENTS, get_experiment
from mcmikd.teachers import OBJECTIVES


@pytest.fixture(scope="module")
def rendered() -> str:
    return configdocs.render(ROOT)


def described(properties: dict, where: str) -> list[str]:
    """Keys under `properties` (at any depth: nested objects, null-or-object, list items, maps) without a non-empty
    one-line description, as 'where.key' (a problem each)."""
    problems = []
    for name, schema in properties.items():
        key = f"{where}.{name}" if where else name
        text = schema.get("description")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{key}: no description")
        elif "\n" in text:
            problems.append(f"{key}: description spans lines")
        for child in (schema, schema.get("items"), schema.get("additionalProperties"),
                      *schema.get("oneOf", []), *schema.get("anyOf", [])):
            if isinstance(child, dict):
                if isinstance(child.get("properties"), dict):
                    problems += described(child["properties"], key)
                if isinstance(child.get("items"), dict) and isinstance(child["items"].get("properties"), dict):
                    problems += described(child["items"]["properties"], f"{key}[]")
    return problems


def test_the_committed_config_readme_is_the_generated_one(rendered):
    committed = (ROOT / "config" / "README.md").read_text(encoding="utf-8")
    assert committed == rendered, "config/README.md is stale: run `mcmikd config-docs` and commit the result"


def test_every_key_of_the_schema_has_a_one_line_description():
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    problems = described(schema["properties"], "")
    for name, definition in schema["$defs"].items():
        problems += described(definition.get("properties", {}), f"$defs.{name}")
    assert problems == []


@pytest.mark.parametrize("kind", list(EXPERIMENTS))
def test_every_key_of_every_experiment_kind_has_a_one_line_description(kind):
    assert described(get_experiment(kind).schema()["properties"], f"experiments.{kind}") == []


def test_every_registered_plugin_and_config_file_is_on_the_page(rendered):
    for name in EXPERIMENTS:
        assert f"### Experiment `{name}`" in rendered
    for registry in (METHODS, OBJECTIVES, DATASETS):
        for name in registry:
            assert f"\n| `{name}` |" in rendered, name
    for path in [*sorted((ROOT / "config").glob("*.yaml")), ROOT / "tests" / "tiny.yaml"]:
        link = path.name if path.parent.name == "config" else "../tests/tiny.yaml"
        assert f"| [`{link}`]({link}) |" in rendered
    assert "(no leading comment)" not in rendered  # every config file says what it runs


def test_methods_are_read_from_source_as_their_modules_declare_them():
    from mcmikd.distill.weights import declared

    base = configdocs.method_declarations("ce")["hp_ranges"]
    assert base["temperature"] == (0, 100, True) and base["gamma"] == (0, None, False)
    for name in METHODS:
        info, literal = configdocs.method_declarations(name), declared(name)
        assert info["defaults"] == literal["defaults"] and info["weight_key"] == literal["weight_key"], name
        assert set(info["hp_ranges"]) >= {"gamma", "temperature"}, name


def test_the_first_sentence_of_a_leading_comment_says_what_a_config_runs():
    text = "# Runs the main table (Fig. 1, e.g. KD). More here.\n# Run: snakemake\nname: x\n"
    assert configdocs.first_sentence(configdocs.leading_comment(text)) == "Runs the main table (Fig. 1, e.g. KD)."
    assert configdocs.leading_comment("name: x\n# a comment later\n") == ""


def test_rendering_never_imports_torch():
    code = ("import sys, mcmikd.configdocs as c; assert 'torch' not in sys.modules; c.render(); "
            "assert 'torch' not in sys.modules, 'render imported torch'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
