"""`mcmikd <command>` (or `python -m mcmikd <command>`): the project's command line.

Every command a user runs by hand, in one place; the workflow itself runs with `snakemake` (docs/running.md).
Each command lives in its own module and is imported only when it runs, so `mcmikd --help` stays instant.
"""

from __future__ import annotations

import importlib
import sys

# command -> ("module:function" called with the remaining arguments, one-line description), in the order shown
COMMANDS: dict[str, tuple[str, str]] = {
    "progress": ("mcmikd.progress:main", "one line per training job: state, epoch, accuracy, ETA"),
    "compare": ("mcmikd.compare:main", "does my run agree with yours, or with the paper's numbers?"),
    "paired": ("mcmikd.aggregate:paired_main", "seed-paired gains of each teacher objective, from runs tables"),
    "repair": ("mcmikd.cli:repair_main", "list a run's damaged files and the snakemake line that rebuilds them"),
    "choose-weights": ("mcmikd.choose_weights:choose_weights_main",
                       "choose each KD framework's weight from a method_weights table"),
    "train": ("mcmikd.train_one:main", "train one teacher or one student outside the workflow, from a config"),
    "publish": ("mcmikd.publish:main", "copy a run's tables, figures and runs tables into docs/results/<name>"),
    "recipe": ("mcmikd.experiments.lambda_sweep:main", "the λ recipe rule over one or more runs of a λ sweep"),
    "bench": ("mcmikd.cli:bench_main", "run a benchmark script of bench/ (no name: list them)"),
    "config-docs": ("mcmikd.cli:config_docs_main", "write config/README.md from the schema and the plug-ins (--check)"),
}


def usage() -> str:
    """The top-level help: every command with its one-line description."""
    width = max(map(len, COMMANDS))
    lines = ["usage: mcmikd <command> [ARGS...]     (also: python -m mcmikd <command> [ARGS...])", "",
             "The MCMI knowledge-distillation workflow's commands (the workflow itself: snakemake).", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "`mcmikd <command> --help` shows a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run the command `argv[0]` with the rest of `argv`; returns the exit status.

    No command: the usage on stderr, status 2; `-h`/`--help`: the usage on stdout, status 0; an unknown command:
    one line on stderr, status 2."""
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"mcmikd: unknown command '{argv[0]}' (choose from: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module, function = COMMANDS[argv[0]][0].split(":")
    status = getattr(importlib.import_module(module), function)(argv[1:])
    return 0 if status is None else status


def entry() -> int:
    """The `mcmikd` console script (pyproject.toml's [project.scripts])."""
    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
