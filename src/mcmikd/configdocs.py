"""`config/README.md`, generated: the config files, every config key, and each plug-in's keys and defaults.

One source of truth: a key's meaning is the `description` beside it in `workflow/schemas/config.schema.yaml` (and
in an experiment kind's `properties`), a config file's purpose is its own leading comment, and the plug-ins'
names, defaults and ranges are their registries' classes. `render()` builds the whole page from them;
`mcmikd config-docs` (`mcmikd.cli.config_docs_main`) writes it and `mcmikd config-docs --check` says whether the
committed page is current (`tests/test_configdocs.py` checks it too).

Nothing here imports torch: experiment kinds, teacher objectives and datasets are imported (their modules import
torch only inside the functions that train), and the distillation methods, whose base class is a torch module, are
read from their source with `ast` (`defaults`, `hp_ranges`, `weight_key`, `weight_table`, along the class's
static bases), the way `mcmikd.distill.weights` and `mcmikd.codedeps` read source.
"""

from __future__ import annotations

import ast
import importlib.util
import operator
import re
import sys
from pathlib import Path

README = Path("config") / "README.md"
SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"
CONFIG_GLOBS = ("config/*.yaml", "tests/tiny.yaml")

# Where the allowed names of a key are listed: keys whose values (or whose sub-keys) are registry names.
NAMES_OF = {
    "dataset.name": ("Datasets", "datasets"),
    "teachers.objectives": ("Teacher objectives", "teacher-objectives"),
    "teachers.hp": ("Teacher objectives", "teacher-objectives"),
    "methods": ("Distillation methods", "distillation-methods"),
    "experiments": ("Experiment kinds", "experiment-kinds"),
}
# the same inside an experiment kind's block (relative keys)
KIND_NAMES_OF = {
    "objectives": ("Teacher objectives", "teacher-objectives"),
    "hp": ("Teacher objectives", "teacher-objectives"),
    "methods": ("Distillation methods", "distillation-methods"),
    "method_hp": ("Distillation methods", "distillation-methods"),
}
ABBREVIATIONS = ("e.g.", "i.e.", "Fig.", "al.", "vs.", "cf.", "resp.", "No.")
HEADER = "| key | type | default | range / allowed | meaning |\n|---|---|---|---|---|"


# --------------------------------------------------------------------------------------------- formatting
def _cell(text: str) -> str:
    """`text` as one Markdown table cell: one line, pipes escaped, `<` outside code spans escaped (so that
    `results/<name>/` is not read as an HTML tag)."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = parts[i].replace("<", "&lt;")
    return "`".join(parts).replace("|", "\\|")


def _sentence(text: str) -> str:
    """A description as a paragraph: capitalised, ending with a full stop."""
    text = _cell(text).replace("\\|", "|")
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _value(value) -> str:
    """A value as one writes it in a config (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_value(k)}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _number(value) -> str:
    """A bound: whole numbers of 5 digits and more with thousands separators."""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 10_000:
        value = int(value)
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return _value(value)


def _interval(low, high, open_low: bool, open_high: bool) -> str:
    if low is not None and high is not None:
        return f"{'(' if open_low else '['}{_number(low)}, {_number(high)}{')' if open_high else ']'}"
    if low is not None:
        return f"{'>' if open_low else '≥'} {_number(low)}"
    if high is not None:
        return f"{'<' if open_high else '≤'} {_number(high)}"
    return ""


def _resolve(schema: dict, defs: dict) -> dict:
    """A `$ref` to a definition that is no object of keys (e.g. the seeds list), inlined; others unchanged."""
    ref = schema.get("$ref")
    if ref and not _def_properties(ref, defs):
        target = defs[ref.rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _def_properties(ref: str, defs: dict) -> dict | None:
    target = defs.get(ref.rsplit("/", 1)[-1], {})
    return target.get("properties") if target.get("type") == "object" else None


def _type(schema: dict, defs: dict) -> str:
    schema = _resolve(schema, defs)
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#{name})"
    if "enum" in schema:
        names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
        return " or ".join(dict.fromkeys(names.get(type(v), "value") for v in schema["enum"]))
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(dict.fromkeys(_type(branch, defs) for branch in schema[key]))
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of {_type(schema['items'], defs)}" if isinstance(schema.get("items"), dict) else "list"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict) and "properties" not in schema:
        return f"map of name → {_type(schema['additionalProperties'], defs)}"
    return kind or "any"


def _range(schema: dict, defs: dict) -> str:
    schema = _resolve(schema, defs)
    parts = []
    low = schema.get("exclusiveMinimum", schema.get("minimum"))
    high = schema.get("exclusiveMaximum", schema.get("maximum"))
    bounds = _interval(low, high, "exclusiveMinimum" in schema, "exclusiveMaximum" in schema)
    if bounds:
        parts.append(bounds)
    if "enum" in schema:
        parts.append(", ".join(f"`{_value(v)}`" for v in schema["enum"]))
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    for key in ("oneOf", "anyOf"):
        for branch in schema.get(key, []):
            text = _range(branch, defs)
            if text:
                parts.append(text)
    if schema.get("type") == "array":
        least, most = schema.get("minItems"), schema.get("maxItems")
        if least is not None and least == most:
            parts.append(f"exactly {least} items")
        else:
            if least:
                parts.append(f"≥ {least} item{'s' if least > 1 else ''}")
            if most is not None:
                parts.append(f"≤ {most} items")
        if schema.get("uniqueItems"):
            parts.append("distinct")
        items = schema.get("items")
        if isinstance(items, dict) and "properties" not in items:
            inner = _range(items, defs)
            if inner:
                parts.append(f"each {inner}")
    return "; ".join(parts)


def _row(key: str, schema: dict, required: bool, defs: dict, names_of: tuple[str, str] | None = None) -> str:
    if "default" in schema:
        default = f"`{_value(schema['default'])}`"
    else:
        default = "*required*" if required else "–"
    allowed = _range(schema, defs)
    if names_of:
        link = f"names of [{names_of[0]}](#{names_of[1]})"
        allowed = f"{allowed}; {link}" if allowed else link
    return (f"| {_cell(f'`{key}`')} | {_cell(_type(schema, defs))} | {_cell(default)} | {_cell(allowed) or '–'} | "
            f"{_cell(schema.get('description', ''))} |")


def _children(key: str, schema: dict) -> list[tuple[str, dict, list]]:
    """(prefix, properties, required) of the keys nested in `schema` (objects, null-or-object, lists of objects,
    maps of objects), the prefix ending in '.'."""
    out = []
    if "$ref" in schema:
        return out
    if isinstance(schema.get("properties"), dict):
        out.append((f"{key}.", schema["properties"], schema.get("required", [])))
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        out += _children(key, branch)
    items = schema.get("items")
    if isinstance(items, dict) and isinstance(items.get("properties"), dict):
        out.append((f"{key}[].", items["properties"], items.get("required", [])))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for prefix, properties, required in _children(f"{key}.<name>", extra):
            out.append((prefix, properties, required))
    return out


def _rows(prefix: str, properties: dict, required: list, defs: dict, names_of: dict) -> list[str]:
    """Table rows of `properties` and, after each, of the keys nested in it (dotted keys)."""
    rows = []
    for name, schema in properties.items():
        key = f"{prefix}{name}"
        rows.append(_row(key, schema, name in required, defs, names_of.get(key)))
        for child_prefix, child_properties, child_required in _children(key, schema):
            rows += _rows(child_prefix, child_properties, child_required, defs, names_of)
    return rows


def _collect_refs(prefix: str, properties: dict, defs: dict, out: dict) -> None:
    """{definition name: [keys that refer to it]} of the object definitions (`$defs`) used under `properties`."""
    for name, schema in properties.items():
        key = f"{prefix}{name}"
        ref = schema.get("$ref")
        if ref and _def_properties(ref, defs):
            out.setdefault(ref.rsplit("/", 1)[-1], []).append(key)
        for child_prefix, child_properties, _ in _children(key, schema):
            _collect_refs(child_prefix, child_properties, defs, out)


def _magnitude(value: float) -> str:
    """10⁹ for 1e9 (a power of ten), else the number."""
    exponent = len(str(int(value))) - 1 if value >= 10 and float(value).is_integer() else None
    if exponent is not None and int(value) == 10 ** exponent:
        return "10" + str(exponent).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return _number(value)


# --------------------------------------------------------------------------------------------- config files
def leading_comment(text: str) -> str:
    """The first paragraph of a YAML file's leading comment block: its comment lines up to a bare `#`, an
    indented (command) line, a line starting with the word `Run` or the first line that is no comment, joined."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:]
        if not body.strip() or body.startswith(("  ", "\t")) or re.match(r"run\b", body.strip(), re.IGNORECASE):
            break
        lines.append(body.strip())
    return " ".join(lines)


def first_sentence(text: str) -> str:
    """Up to the first '.', '!' or '?' followed by a space and a capital (abbreviations such as 'e.g.' do not
    end a sentence); the whole text when there is none."""
    for match in re.finditer(r"[.!?](?=\s+[A-Z])", text):
        head = text[: match.end()]
        if not head.endswith(ABBREVIATIONS):
            return head
    return text


def config_rows(root: Path) -> list[str]:
    import yaml

    rows = []
    for pattern in CONFIG_GLOBS:
        for path in sorted(root.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            config = yaml.safe_load(text) or {}
            rel = path.relative_to(root).as_posix()
            link = rel[len("config/"):] if rel.startswith("config/") else f"../{rel}"
            experiments = config.get("experiments") or {}
            enabled = [name for name, body in experiments.items()
                       if not (isinstance(body, dict) and body.get("enabled") is False)]
            kinds = ", ".join(f"[`{name}`](#experiment-{name.lower()})" for name in enabled) or "–"
            dataset = (config.get("dataset") or {}).get("name", "–")
            what = first_sentence(leading_comment(text)) or "(no leading comment)"
            rows.append(f"| [`{link}`]({link}) | `{_cell(dataset)}` | {kinds} | {_cell(what)} |")
    return rows


# --------------------------------------------------------------------------------------------- methods (ast)
class _NotStatic(Exception):
    pass


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def _source_file(module: str) -> Path:
    """The source of `module`, found without importing it (a module of this package by path)."""
    parts = module.split(".")
    if parts[0] == "mcmikd":
        base = Path(__file__).resolve().parent.joinpath(*parts[1:])
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.exists():
                return path
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise _NotStatic(module)
    return Path(spec.origin)


def _module_tree(module: str) -> ast.Module:
    return ast.parse(_source_file(module).read_text(encoding="utf-8"))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")[: -node.level]
    return ".".join(package + ([node.module] if node.module else []))


def class_attributes(module: str, name: str, _seen: frozenset = frozenset()) -> dict:
    """The class attributes of class `name` in `module` whose values can be read from the source (literals,
    dicts built from literals, comprehensions over literals, a base class's attribute), its static bases' first
    and its own over them. Attributes that cannot be read statically are left out."""
    if (module, name) in _seen:
        return {}
    seen = _seen | {(module, name)}
    tree = _module_tree(module)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    imported = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                imported[alias.asname or alias.name] = (_absolute(module, node), alias.name)
    if name not in classes:
        raise _NotStatic(f"{module}:{name}")
    node = classes[name]

    def locate(base: str) -> tuple[str, str] | None:
        return (module, base) if base in classes else imported.get(base)

    attrs: dict = {}
    for base in reversed(node.bases):
        where = locate(base.id) if isinstance(base, ast.Name) else None
        if where:
            try:
                attrs.update(class_attributes(*where, seen))
            except (_NotStatic, OSError, SyntaxError):
                pass
    module_names = {}
    for item in tree.body:
        if isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name):
            try:
                module_names[item.targets[0].id] = _static(item.value, module_names, lambda _: None)
            except _NotStatic:
                pass

    def namespace(base: str):
        where = locate(base)
        return class_attributes(*where, seen) if where else None

    for item in node.body:
        target = (item.targets[0] if isinstance(item, ast.Assign) and len(item.targets) == 1
                  else item.target if isinstance(item, ast.AnnAssign) and item.value is not None else None)
        if isinstance(target, ast.Name):
            try:
                attrs[target.id] = _static(item.value, {**module_names, **attrs}, namespace)
            except (_NotStatic, ArithmeticError, TypeError, ValueError):
                attrs.pop(target.id, None)
    return attrs


def _static(node: ast.AST, names: dict, namespace) -> object:
    """The value of expression `node` built from literals, `names`, comprehensions over them and
    `Class.attribute` (`namespace(Class)`: that class's attributes); _NotStatic for anything else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        values = [_static(e, names, namespace) for e in node.elts if not isinstance(e, ast.Starred)]
        if len(values) != len(node.elts):
            raise _NotStatic("starred")
        return tuple(values) if isinstance(node, ast.Tuple) else set(values) if isinstance(node, ast.Set) else values
    if isinstance(node, ast.Dict):
        out = {}
        for key, value in zip(node.keys, node.values):
            if key is None:
                out.update(_static(value, names, namespace))
            else:
                out[_static(key, names, namespace)] = _static(value, names, namespace)
        return out
    if isinstance(node, (ast.DictComp, ast.ListComp)) and len(node.generators) == 1:
        gen = node.generators[0]
        if gen.ifs or gen.is_async or not isinstance(gen.target, ast.Name):
            raise _NotStatic("comprehension")
        out = {} if isinstance(node, ast.DictComp) else []
        for item in _static(gen.iter, names, namespace):
            inner = {**names, gen.target.id: item}
            if isinstance(node, ast.DictComp):
                out[_static(node.key, inner, namespace)] = _static(node.value, inner, namespace)
            else:
                out.append(_static(node.elt, inner, namespace))
        return out
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_static(node.operand, names, namespace))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_static(node.left, names, namespace), _static(node.right, names, namespace))
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        raise _NotStatic(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        attrs = namespace(node.value.id)
        if attrs is not None and node.attr in attrs:
            return attrs[node.attr]
    raise _NotStatic(type(node).__name__)


def method_declarations(name: str) -> dict:
    """`defaults`, `hp_ranges`, `weight_key` and `weight_table` of registered method `name`, read from source."""
    from mcmikd.distill import METHODS

    module, cls = METHODS[name].split(":")
    attrs = class_attributes(module, cls)
    return {key: attrs.get(key) for key in ("defaults", "hp_ranges", "weight_key", "weight_table")}


def _hp_range(bounds) -> str:
    low, high, open_low = bounds
    return _interval(low, high, open_low, False)


def method_rows() -> list[str]:
    from mcmikd.distill import METHODS

    rows = []
    for name in METHODS:
        info = method_declarations(name)
        defaults, ranges = info["defaults"] or {}, info["hp_ranges"] or {}
        weight = info["weight_key"]
        if weight is None:
            weight_cell = "–"
        elif defaults.get(weight) is None and info["weight_table"]:
            weight_cell = f"`{weight}` (default null: the official value per teacher–student pair)"
        else:
            weight_cell = f"`{weight}`"
        shown = ", ".join(f"`{k}={_value(v)}`" for k, v in defaults.items()) or "–"
        bounded = ", ".join(f"`{k}` {_hp_range(ranges[k])}" for k in defaults if k in ranges and _hp_range(ranges[k]))
        rows.append(f"| `{name}` | {_cell(weight_cell)} | {_cell(shown)} | {_cell(bounded) or '–'} |")
    return rows


# --------------------------------------------------------------------------------------------- other plug-ins
def objective_rows() -> list[str]:
    from mcmikd.teachers import OBJECTIVES, get_objective

    rows = []
    for name in OBJECTIVES:
        cls = get_objective(name)
        start = f"`{cls.start_from}`" if cls.start_from else "– (from scratch)"
        control = f"`{cls.control}`" if cls.control else "–"
        keys = ", ".join(f"`{k}`" for k in cls.path_keys) or "–"
        defaults = ", ".join(f"`{k}={_value(v)}`" for k, v in cls.defaults.items()) or "–"
        rows.append(f"| `{name}` | {_cell(cls.label)} | {start} | {control} | {keys} | {_cell(defaults)} |")
    return rows


def dataset_rows() -> list[str]:
    from mcmikd.datasets import DATASETS, get_dataset

    rows = []
    for name in DATASETS:
        cls = get_dataset(name)
        classes = str(len(cls.class_names)) if cls.class_names else "from the data"
        keys = ", ".join(f"[`{k}`](#dataset)" for k in cls.config_keys) or "–"
        size = f"{cls.fixed_image_size}×{cls.fixed_image_size}" if cls.fixed_image_size else "`image_size`"
        rows.append(f"| `{name}` | {classes} | {cls.in_channels} | {size} | {keys} |")
    return rows


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def experiment_sections() -> list[str]:
    from mcmikd.experiments import EXPERIMENTS, get_experiment

    out = []
    for name in EXPERIMENTS:
        cls = get_experiment(name)
        schema = cls.schema()
        what = _first_paragraph(sys.modules[cls.__module__].__doc__)
        out += [f"### Experiment `{name}`", "",
                f"**{_cell(cls.title)}** (`{EXPERIMENTS[name]}`). {_sentence(what)}".rstrip(), "", HEADER]
        out += _rows("", schema["properties"], schema.get("required", []), {}, KIND_NAMES_OF)
        out.append("")
    return out


# --------------------------------------------------------------------------------------------- the page
def _load_schema(root: Path) -> dict:
    import yaml

    return yaml.safe_load((root / SCHEMA).read_text(encoding="utf-8"))


def render(root: str | Path | None = None) -> str:
    """The whole of config/README.md, from the checkout at `root` (default: the one this package lies in)."""
    from mcmikd.cli import checkout_root
    from mcmikd.config import MAX_MAGNITUDE

    root = checkout_root() if root is None else Path(root)
    schema = _load_schema(root)
    defs = schema.get("$defs", {})
    properties, required = schema["properties"], schema.get("required", [])
    sections = [k for k, v in properties.items() if v.get("type") == "object"]
    used_defs: dict[str, list[str]] = {}
    _collect_refs("", properties, defs, used_defs)

    contents = " · ".join(["[Top level](#top-level)"] + [f"[`{k}`](#{k})" for k in sections]
                          + [f"[`{k}`](#{k})" for k in used_defs])
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `mcmikd config-docs`; do not edit by hand. -->",
        "",
        "Every config file, every config key, and the names and defaults of the plug-ins a config can choose. This "
        "page is generated by `mcmikd config-docs` from the sources the workflow itself reads: each key's "
        "`description` "
        f"in `{SCHEMA.as_posix()}` and in each experiment kind's `properties`, each config file's leading comment, "
        "and the registries of experiment kinds, distillation methods, teacher objectives and datasets. Do not edit "
        "it by hand: change the source and run `mcmikd config-docs` (`tests/test_configdocs.py` fails while this "
        "page is stale; `mcmikd config-docs --check` says so in one line). How to run a config: "
        "[docs/running.md](../docs/running.md); the narrative around the keys (cluttered digits, image folders, "
        "recipes, experiments): [docs/configuration.md](../docs/configuration.md).",
        "",
        "A config is checked before any job runs, by `snakemake -n` too: against the schema and each experiment "
        "kind's schema fragment (types, allowed values, the ranges below, unknown keys, empty lists; defaults are "
        "filled in from there), then by `mcmikd.config.check_config` (model, method and objective names, milestones, "
        "class ids, finite numbers, the values that become paths), by `rules/checks.smk` (every block under "
        "`resources:` names `default` or a rule that reads it) and by the pre-flight `mcmikd.checks.preflight` (every "
        "teacher–student–method combination built on PyTorch's meta device; CAM layers; the data folder). Every "
        "number has a range the code can honour: the schema's bounds (column \"range / allowed\"), each method's "
        f"`hp_ranges` for `methods.<name>`, and ±{_magnitude(MAX_MAGNITUDE)} for any number anywhere "
        "(`mcmikd.config.MAX_MAGNITUDE`). Each problem stops the run with one line naming the key and the fix "
        "([docs/configuration.md](../docs/configuration.md#how-configs-are-checked)).",
        "",
        f"Contents: [Config files](#config-files) · [Keys](#keys) ({contents}) · [Experiment kinds](#experiment-kinds) "
        "· [Distillation methods](#distillation-methods) · [Teacher objectives](#teacher-objectives) · "
        "[Datasets](#datasets)",
        "",
        "## Config files",
        "",
        "Run one with `snakemake --configfile config/<file>` (the default: `config/config.yaml`); \"what it runs\" is "
        "the first sentence of the file's leading comment, the experiments are the blocks it does not switch off.",
        "",
        "| file | dataset | experiments | what it runs |",
        "|---|---|---|---|",
        *config_rows(root),
        "",
        "## Keys",
        "",
        "Keys are written in full (`teachers.finetuning.lr`); `<name>` stands for a key you choose, `[]` for each "
        "entry of a list. Default: what the schema fills in when the key is left out (*required*: it must be given; "
        "–: no value). Range / allowed: what the schema accepts.",
        "",
        "### Top level",
        "",
        HEADER,
    ]
    for key, sub in properties.items():
        row = _row(key, sub, key in required, defs, NAMES_OF.get(key))
        if key in sections:
            row = row.replace(f"| `{key}` |", f"| [`{key}`](#{key}) |", 1)
        lines.append(row)
    lines.append("")
    for key in sections:
        sub = properties[key]
        lines += [f"### `{key}`", "", _sentence(sub.get("description", ""))]
        if key in NAMES_OF:
            title, anchor = NAMES_OF[key]
            lines[-1] += f" Names: [{title}](#{anchor})."
        rows = []
        for prefix, nested, nested_required in _children(key, sub):
            rows += _rows(prefix, nested, nested_required, defs, NAMES_OF)
        if rows:
            lines += ["", HEADER, *rows]
        lines.append("")
    for name, users in used_defs.items():
        target = defs[name]
        lines += [f"### `{name}`", "",
                  f"{_sentence(target.get('description', ''))} Used by: {', '.join(f'`{u}`' for u in users)}.".strip(),
                  "", HEADER, *_rows("", target["properties"], target.get("required", []), defs, {}), ""]
    lines += [
        "## Experiment kinds",
        "",
        "One block per kind under `experiments:` (`mcmikd.experiments.EXPERIMENTS`), checked against its kind's "
        "schema: the keys every kind shares (`enabled`, `objectives`, `hp`, `seeds`, `teacher_checkpoint`), then "
        "the kind's own `properties`. Keys are relative to `experiments.<kind>`.",
        "",
        *experiment_sections(),
        "## Distillation methods",
        "",
        "`mcmikd.distill.METHODS`; a block `methods.<name>` sets any of the method's `defaults` (RepDistiller's "
        "weights, in γ·CE + α·KL·T² + β·L_method) and no other key. A number outside the method's `hp_ranges` is "
        "refused, so is a fraction where the default is a whole number, and anything but true/false where it is a "
        "boolean. Weight: the `weight_key` that the method-weight selection scales.",
        "",
        "| method | weight | defaults | ranges |",
        "|---|---|---|---|",
        *method_rows(),
        "",
        "## Teacher objectives",
        "",
        "`mcmikd.teachers.OBJECTIVES`; their hyper-parameters are set in `teachers.hp.<objective>` (an experiment may "
        "override the path keys, which name the teacher's folder, in its own `hp`).",
        "",
        "| objective | label | starts from | control | path keys | defaults |",
        "|---|---|---|---|---|---|",
        *objective_rows(),
        "",
        "## Datasets",
        "",
        "`mcmikd.datasets.DATASETS`, chosen by `dataset.name`; each uses only its own keys of the `dataset:` block "
        "(and `validation`, which every dataset takes).",
        "",
        "| dataset | classes | channels | image size | keys it uses |",
        "|---|---|---|---|---|",
        *dataset_rows(),
        "",
    ]
    return "\n".join(lines)
