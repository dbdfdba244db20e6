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
