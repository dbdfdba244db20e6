"""`mcmikd choose-weights`: the method-weight choice from a `method_weights` table (mcmikd.experiments.method_weights).

Its own module, apart from mcmikd.cli, so that workflow/scripts/choose_method_weights.py (its alias) imports nothing
of the parse-time repair (tests/test_integrity.py). No workflow job imports this module.
"""

from __future__ import annotations

import argparse

CHOOSE_WEIGHTS_DOC = """\
Choose each KD framework's weight from a `method_weights` table (run it on held-out data: dataset.validation).

Per framework: the multiple with the highest mean accuracy (over pairs and seeds), ties to x1 (RepDistiller's
weight), and the absolute value (mcmikd.experiments.method_weights.choose). Prints one line per framework.

example:
  mcmikd choose-weights results/digits-tune/tables/method_weights.csv \\
      --out results/digits-tune/method_weights.yaml --doc docs/method-weights-digits.md
"""


def choose_weights_main(argv: list[str] | None = None, prog: str = "mcmikd choose-weights") -> int:
    """`mcmikd choose-weights TABLE --out YAML [--doc MD] [--command TEXT]`: write the method-weight choice
    (`mcmikd.experiments.method_weights.write_choice`) and print one line per framework. `prog` names the command
    in the help (workflow/scripts/choose_method_weights.py passes its own). Returns 0; a missing or unreadable
    table raises what `write_choice` raises (OSError, pandas' parser errors)."""
    parser = argparse.ArgumentParser(prog=prog, description=CHOOSE_WEIGHTS_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="tables/method_weights.csv of a method_weights run")
    parser.add_argument("--out", required=True, help="method_weights.yaml to write")
    parser.add_argument("--doc", help="Markdown page to write (procedure, table, choice)")
    parser.add_argument("--command", default="", help="the commands that produced the table, for the doc")
    args = parser.parse_args(argv)
    from mcmikd.experiments.method_weights import write_choice

    chosen = write_choice(args.table, args.out, args.doc, args.command)
    for method, c in chosen.items():
        print(f"{method}: {c['key']} x{c['multiple']:g} = {c['value']}")
    return 0
