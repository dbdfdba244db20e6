"""Choose each KD framework's weight from a `method_weights` table: an alias of `mcmikd choose-weights`
(mcmikd.choose_weights.choose_weights_main), kept so that existing commands and docs still work.

    python workflow/scripts/choose_method_weights.py results/digits-tune/tables/method_weights.csv \
        --out results/digits-tune/method_weights.yaml [--doc docs/method-weights-digits.md]
"""

import sys

import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.choose_weights import choose_weights_main


def main(argv=None) -> int:
    """`mcmikd choose-weights` under this script's name; returns its exit status."""
    return choose_weights_main(argv, prog="choose_method_weights.py")


if __name__ == "__main__":
    sys.exit(main())
