import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def default_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture
def load(default_config):
    """Validate a modified copy of the default config and return its grid."""
    from mcmikd.config import load_grid

    def _load(mutate=None):
        cfg = copy.deepcopy(default_config)
        if mutate:
            mutate(cfg)
        return load_grid(cfg, SCHEMA)

    return _load


def assert_tiny_outputs_exist(results: Path) -> None:
    """Every table (CSV, Markdown, LaTeX) and figure (PNG, PDF) of a finished run of tests/tiny.yaml is non-empty."""
    for exp in ("main", "fewshot", "zeroshot", "temperature"):
        for ext in ("csv", "md", "tex"):
            assert (results / "tables" / f"{exp}.{ext}").stat().st_size > 0
    for fig in ("main_delta", "fewshot", "zeroshot_bars", "zeroshot_confusion", "temperature", "teachers_finetuning",
                "cam_resnet8"):
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{fig}.{ext}").stat().st_size > 1000
