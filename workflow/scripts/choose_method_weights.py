"""Choose each KD framework's weight from a `method_weights` table (run it on held-out data: dataset.validation).

    python workflow/scripts/choose_method_weights.py results/digits-tune/tables/method_weights.csv \
        --out results/digits-tune/method_weights.yaml [--doc docs/method-weights-digits.md]

Per framework: the multiple with the highest mean accuracy (over pairs and seeds), ties to x1 (RepDistiller's
weight), and the absolute value (mcmikd.experiments.method_weights.choose).
"""

import argparse
import sys

import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.experiments.method_weights import write_choice


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="tables/method_weights.csv of a method_weights run")
    parser.add_argument("--out", required=True, help="method_weights.yaml to write")
    parser.add_argument("--doc", help="Markdown page to write (procedure, table, choice)")
    parser.add_argument("--command", default="", help="the commands that produced the table, for the doc")
    args = parser.parse_args(argv)
    chosen = write_choice(args.table, args.out, args.doc, args.command)
    for method, c in chosen.items():
        print(f"{method}: {c['key']} x{c['multiple']:g} = {c['value']}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
