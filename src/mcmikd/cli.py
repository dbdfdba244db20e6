"""The small commands of `mcmikd` (`mcmikd.__main__`): `repair`, `bench` and `config-docs` (`choose-weights`:
mcmikd.choose_weights).

Each `*_main(argv)` parses its own arguments and returns the exit status. Nothing here imports torch or Snakemake;
no workflow job imports this module (editing it reruns nothing).
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

# --------------------------------------------------------------------------------------------- repair
REPAIR_DOC = """\
List every damaged file under a run's results folder and print the one snakemake command that rebuilds them.

A file is damaged when it has a content record (.<file>.sha256 beside it, written with every data file, teacher
model, CAM map and result JSON) and is missing, or its size or sha256 is not the recorded one, or the record
itself is unreadable. Every recorded file is checked in full (sha256). Epoch checkpoints (hidden
.<name>.resume.pt files) are not listed: they are no workflow outputs, and a job discards a damaged one itself.

`snakemake --forcerun FILE...` reruns the jobs that write the files and every job downstream of them; run it
from the workflow folder with the options you ran the workflow with (--cores, --profile).
Exit status: 0 when nothing is damaged, 1 when something is.

example:
  mcmikd repair results/cifar100 --configfile config/cifar100.yaml
"""


def recorded_files(results: str | os.PathLike) -> list[str]:
    """Every file under `results` that has a content record (`mcmikd.io.record_path`), whether or not the file is
    still there, sorted; epoch checkpoints (hidden files) left out. Paths are `results` joined with the path
    inside it. Raises NotADirectoryError when `results` is not a folder."""
    from mcmikd.io import recorded_name

    if not os.path.isdir(results):
        raise NotADirectoryError(f"{results} is not a folder")
    files = []
    for folder, _, names in os.walk(results):
        for name in names:
            recorded = recorded_name(name)
            if recorded and not recorded.startswith("."):
                files.append(os.path.join(folder, recorded))
    return sorted(files)


def _as_given(path: str) -> str:
    """`path` relative to the working directory when it lies under it (the paths Snakemake's jobs use)."""
    if os.path.isabs(path):
        rel = os.path.relpath(path)
        if not rel.startswith(os.pardir):
            return rel
    return os.path.normpath(path)


def repair_main(argv: list[str] | None = None) -> int:
    """`mcmikd repair RESULTS_DIR [--configfile C] [--forcerun-only]`: print each damaged recorded file as
    "path: reason" and the snakemake line that rebuilds them (REPAIR_DOC). Returns 0 when nothing is damaged, 1
    when something is, 2 when RESULTS_DIR is not a folder."""
    parser = argparse.ArgumentParser(prog="mcmikd repair", description=REPAIR_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", metavar="RESULTS_DIR", help="a run's results folder, results/<name>")
    parser.add_argument("--configfile", help="the config the run was made with (put into the snakemake line)")
    parser.add_argument("--forcerun-only", action="store_true",
                        help="print only the words `--forcerun FILE...` (nothing when no file is damaged), to "
                             "add to your own snakemake command")
    args = parser.parse_args(argv)
    from mcmikd.repair import damaged_files, forcerun_command

    try:
        files = recorded_files(args.results)
    except NotADirectoryError as err:
        print(f"mcmikd repair: {err}", file=sys.stderr)
        return 2
    damaged = damaged_files(files, hash_budget=float("inf"))
    paths = sorted(damaged)
    targets = [_as_given(path) for path in paths]
    if args.forcerun_only:
        if targets:
            print(shlex.join(["--forcerun", *targets]))
        return 1 if targets else 0
    if not damaged:
        print(f"no damaged files under {args.results} ({len(files)} recorded files checked)")
        return 0
    for path, target in zip(paths, targets):
        print(f"{target}: {damaged[path]}")
    print(f"\n{len(damaged)} of {len(files)} recorded files damaged; rebuild them and every job downstream with "
          f"(add the options you ran the workflow with, e.g. --cores, --profile):")
    print(forcerun_command(targets, args.configfile))
    if not args.configfile:
        print("(add --configfile <the run's config> unless the run used config/config.yaml)", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------------------------- bench
BENCH_DOC = """\
Run a benchmark or diagnostic script of the checkout's bench/ folder with this Python:
`mcmikd bench NAME ARGS...` runs `python bench/NAME.py ARGS...` (from the folder you are in); `mcmikd bench` alone
lists the scripts with what each measures. `mcmikd bench NAME --help` shows that script's own arguments.
"""


def checkout_root() -> Path:
    """The project checkout the imported package lies in: the parent of src/ (the package's parent's parent)."""
    return Path(__file__).resolve().parents[2]


def bench_scripts(bench: Path) -> dict[str, str]:
    """{name: first line of its docstring ('' when it has none)} of every `bench/*.py` script, read without running
    it. A script that does not parse gets "(does not parse: …)" as its line."""
    scripts = {}
    for path in sorted(bench.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except (SyntaxError, UnicodeDecodeError) as err:
            doc = f"(does not parse: {err})"
        scripts[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return scripts


def bench_main(argv: list[str] | None = None, root: Path | None = None) -> int:
    """`mcmikd bench [NAME [ARGS...]]`: run bench/NAME.py with ARGS under this Python (`sys.executable`, with the
    checkout's src/ first on PYTHONPATH) and return its exit status; without NAME, list the scripts. `root` is the
    checkout (default `checkout_root()`). Returns 2, after one line, outside a checkout or for an unknown NAME."""
    argv = list(sys.argv[2:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="mcmikd bench", description=BENCH_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", metavar="NAME", help="a script of bench/, without .py")
    parser.add_argument("args", nargs="*", metavar="ARGS", help="its arguments")
    if argv and argv[0].startswith("-"):  # our own options; everything after NAME belongs to the script
        parser.parse_args(argv)
        return 0
    root = checkout_root() if root is None else Path(root)
    bench = root / "bench"
    if not bench.is_dir():
        print(f"mcmikd bench: no bench/ folder at {root}: the benchmarks come with a checkout of the project "
              f"(git clone), not with an installed package", file=sys.stderr)
        return 2
    scripts = bench_scripts(bench)
    if not argv:
        width = max(map(len, scripts), default=0)
        print(f"benchmark scripts in {bench} (mcmikd bench NAME --help for each one's arguments):")
        for name, line in scripts.items():
            print(f"  {name:<{width}}  {line}")
        return 0
    name, rest = argv[0], argv[1:]
    if name.endswith(".py"):
        name = name[:-3]
    if name not in scripts:
        print(f"mcmikd bench: no script '{name}' in {bench} (choose from: {', '.join(scripts)})", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.call([sys.executable, str(bench / f"{name}.py"), *rest], env=env)


# --------------------------------------------------------------------------------------------- config-docs
CONFIG_DOCS_DOC = """\
Write config/README.md, the configuration reference, from the sources the workflow reads: the config schema
(workflow/schemas/config.schema.yaml, each key's description), each experiment kind's properties, each config file's
leading comment and the registries of methods, teacher objectives and datasets (mcmikd.configdocs.render). Run it
after adding or changing a config key, a config file or a plug-in. With --check it writes nothing and exits 1, with
one line, when the file differs from what it would write.
"""


def config_docs_main(argv: list[str] | None = None) -> int:
    """`mcmikd config-docs [--check] [--root DIR]`: write config/README.md (CONFIG_DOCS_DOC). Returns 0; 1 when
    --check finds the file stale; 2, after one line, when DIR holds no config schema (an installed package)."""
    parser = argparse.ArgumentParser(prog="mcmikd config-docs", description=CONFIG_DOCS_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with one line when config/README.md is not what would be written")
    parser.add_argument("--root", type=Path, metavar="DIR",
                        help="the project checkout (default: the one the mcmikd package lies in)")
    args = parser.parse_args(argv)
    from mcmikd.configdocs import README, SCHEMA, render

    root = checkout_root() if args.root is None else args.root
    if not (root / SCHEMA).is_file():
        print(f"mcmikd config-docs: no {SCHEMA.as_posix()} under {root}: the configuration reference is generated in "
              f"a checkout of the project (git clone), not from an installed package", file=sys.stderr)
        return 2
    text, target = render(root), root / README
    if args.check:
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            print(f"mcmikd config-docs: {target} is stale; run `mcmikd config-docs` to regenerate it", file=sys.stderr)
            return 1
        print(f"{target} is current")
        return 0
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0
