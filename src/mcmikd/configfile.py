"""Checks of the config files themselves, before their values are validated: a key given twice in one mapping
(PyYAML and `json` keep the last one silently) and YAML aliases that expand to a huge tree (an "alias bomb":
loading shares the nodes, but every check that walks the values would visit each copy).

Run at parse time on every file Snakemake read (`workflow.configfiles`), before `mcmikd.config.load_grid`, so a
dry run refuses them too. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from mcmikd.errors import ConfigError

MAX_NODES = 100_000  # values a config may expand to (the paper's largest config has about 1,500)


def _duplicate(node, path: str, seen_ids: set) -> tuple[str, int, int] | None:
    import yaml

    if id(node) in seen_ids:
        return None
    seen_ids.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                name = key.value
                where = f"{path}.{name}" if path else name
                if name in first:
                    return where, first[name], key.start_mark.line + 1
                first[name] = key.start_mark.line + 1
                found = _duplicate(value, where, seen_ids)
            else:
                found = _duplicate(value, path, seen_ids)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate(item, f"{path}[{i}]", seen_ids)
            if found:
                return found
    return None


def _expanded_size(node, memo: dict) -> int:
    """Nodes the tree has once every alias is expanded (memoised per shared node: linear in the file)."""
    import yaml

    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once (PyYAML refuses to construct it anyway)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def check_config_file(path: str | Path, max_nodes: int = MAX_NODES) -> None:
    """Raise a one-line ConfigError when the YAML or JSON file at `path` gives a key twice in one mapping (naming
    the key and both lines) or expands to more than `max_nodes` values through aliases. A file that does not parse
    is left to Snakemake's own message."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    if node is None:
        return
    size = _expanded_size(node, {})
    if size > max_nodes:
        raise ConfigError(f"{path}: its YAML aliases expand to {size:,} values (more than {max_nodes:,}); write the "
                          f"config without nested aliases")
    found = _duplicate(node, "", set())
    if found:
        key, first, again = found
        raise ConfigError(f"{path}: key '{key}' is given twice (lines {first} and {again}); YAML and JSON keep only "
                          f"the last one silently — remove or merge one of them")
