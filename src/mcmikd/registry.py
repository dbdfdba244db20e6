"""The one lookup behind every plug-in registry (KD methods, teacher objectives, experiment kinds, datasets).

A registry is a dict from config name to "module:attr", readable without importing the module (the Snakefile
checks names at parse time); `lookup` imports the module only when the class is needed.
"""

from __future__ import annotations

import importlib


def lookup(registry: dict[str, str], name: str, what: str, key: str | None = None):
    """The attribute registered under `name`. Raises a one-line ConfigError naming the known names (and the
    config key, when given) for an unknown one."""
    if name not in registry:
        from mcmikd.errors import ConfigError

        where = f"config key '{key}': " if key else ""
        raise ConfigError(f"{where}unknown {what} '{name}'; choose one of: {', '.join(registry)}")
    module, attr = registry[name].split(":")
    return getattr(importlib.import_module(module), attr)
