"""Which source files of the `mcmikd` package a job runs: the static import graph of its entry points.

A job's code inputs (package files declared as Snakemake inputs, so that editing one reruns exactly the jobs
that depend on it) are the transitive closure of the imports of its script and of the registry modules
(model, method) its wildcards select. The closure is read from the source with `ast`, never by importing it
(the Snakefile calls this at parse time, without torch):

* every `import` / `from … import` anywhere in a file counts, also inside functions (jobs import lazily);
* relative imports are resolved against the importing module's package;
* importing `mcmikd.a.b` executes `mcmikd/__init__.py` and `mcmikd/a/__init__.py` too, so they count;
* `from mcmikd.a import b` counts `mcmikd/a/b.py` when `b` is a submodule.

Modules of the package are located by path under the given source root (the checkout's `src/`, whatever
`mcmikd` is installed); only a plug-in registered from outside the package (and modules of its own top-level
package) is located with `importlib.util.find_spec`. Imports the scan cannot see (`importlib.import_module`
of a computed name, as the model and method registries do) are why a rule adds its registry modules as
entries. Everything is cached: thousands of jobs ask for the same few closures.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import sys
from pathlib import Path

PACKAGE = "mcmikd"
# Imported lazily by the registries' `*_source_files` only, which the Snakefile calls and jobs never do: no
# job's result depends on the scanner, so editing it reruns nothing.
NOT_JOB_CODE = frozenset({"mcmikd.codedeps"})


def registry_module(spec: str) -> str:
    """The module part of a registry string "module:attr" (the string itself when it names a module)."""
    return spec.split(":", 1)[0]


def code_inputs(*entries: str, base: str | os.PathLike) -> list[str]:
    """Sorted source files the entry points import, relative to the current working directory.

    `entries` are script files (paths ending in `.py`) and module names, or registry strings "module:attr",
    mixed; `base` is the source root that holds the `mcmikd` package (a checkout's `src/`). The files are the
    package files (and a plug-in's own files) in the transitive import closure, entry modules included;
    script files themselves are not (Snakemake reruns a job whose script is newer than its outputs). Paths
    are made relative from real paths, so a project that is moved, copied or reached through a symlink keeps
    the same inputs.
    """
    return list(_relative(tuple(entries), _realpath(os.fspath(base)), _realpath(os.getcwd())))


_realpath = functools.lru_cache(maxsize=None)(os.path.realpath)  # symlinks do not move during one parse


@functools.cache
def _relative(entries: tuple[str, ...], root: str, cwd: str) -> tuple[str, ...]:
    files: set[str] = set()
    for entry in entries:
        files |= _closure(entry, root)
    return tuple(sorted(os.path.relpath(f, cwd) for f in files))


@functools.cache
def _closure(entry: str, root: str) -> frozenset[str]:
    """Absolute real paths of the files one entry point (script or module name) imports, transitively."""
    if entry.endswith(".py") or os.sep in entry:
        start, follow = [], {PACKAGE}
        pending = list(_imports(os.path.realpath(entry), None))
    else:
        module = registry_module(entry)
        start, follow = [module], {PACKAGE, module.split(".")[0]}
        pending = [module]
    seen: set[str] = set()
    files: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen or module in NOT_JOB_CODE:
            continue
        seen.add(module)
        path = _locate(module, root) if module.split(".")[0] in follow else None
        if path is None:
            if module in start:
                raise ModuleNotFoundError(f"cannot find the source of module '{module}'", name=module)
            continue
        if path:  # "" for a module without a source file (built in, created in memory)
            files.add(path)
            pending.extend(_imports(path, module))
        pending.extend(_parents(module))
    return frozenset(files)


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.cache
def _locate(module: str, root: str) -> str | None:
    """The real path of a module's source; "" if it has none, None if it cannot be found."""
    if module.split(".")[0] == PACKAGE:
        stem = Path(root, *module.split("."))
        for path in (stem.with_suffix(".py"), stem / "__init__.py"):
            if path.is_file():
                return os.path.realpath(path)
        return None
    parent = module.rpartition(".")[0]
    if parent and not (_locate(parent, root) or "").endswith("__init__.py"):
        return None  # the parent is no package (`from plugin import name`): nothing to find, nothing to run
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__spec__", None) is None:
        file = getattr(loaded, "__file__", None)
        return os.path.realpath(file) if file else ""
    try:
        spec = importlib.util.find_spec(module)  # locates without executing the module (its parents: yes)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not spec.has_location or not spec.origin or not spec.origin.endswith(".py"):
        return ""
    return os.path.realpath(spec.origin)


@functools.cache
def _imports(path: str, module: str | None) -> tuple[str, ...]:
    """Absolute names of every module a file may import (`module` is its own name, None for a script).

    For `from X import y` both X and X.y are listed; X.y is dropped later if it is not a module."""
    package = None
    if module is not None:
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names: list[str] = []
    statements: list[ast.AST] = [ast.parse(Path(path).read_bytes(), filename=path)]
    while statements:  # imports are statements: descend into statement bodies only, not into expressions
        node = statements.pop()
        statements += [c for c in ast.iter_child_nodes(node) if isinstance(c, (ast.stmt, ast.excepthandler,
                                                                              ast.match_case))]
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue  # a relative import in a script: not the package's business
                parts = package.split(".")
                if node.level > len(parts):
                    continue  # beyond the top-level package: Python raises ImportError
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{anchor}.{node.module}" if node.module else anchor
            else:
                source = node.module
            names.append(source)
            names += [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"]
    return tuple(dict.fromkeys(names))
