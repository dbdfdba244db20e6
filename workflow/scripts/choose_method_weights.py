"""Rule choose_method_weights (rules/choices.smk): the method-weight choice of a method-weight selection table
(mcmikd.choices.write_weights_choice) as `tables/<kind>_choice.yaml` and `.md`, for the report.

Run by hand it is still an alias of `mcmikd choose-weights` (mcmikd.choose_weights.choose_weights_main), kept so
that existing commands and docs still work:

    python workflow/scripts/choose_method_weights.py results/digits-tune/tables/method_weights.csv \
        --out results/digits-tune/method_weights.yaml [--doc docs/method-weights-digits.md]
"""

import sys

import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.choices import write_weights_choice
from mcmikd.choose_weights import choose_weights_main
from mcmikd.smk import run_job


def main(argv=None) -> int:
    """`mcmikd choose-weights` under this script's name; returns its exit status."""
    return choose_weights_main(argv, prog="choose_method_weights.py")


if "snakemake" in globals():  # a job of the rule
    run_job(snakemake, write_weights_choice, table_csv=snakemake.input.table,
            yaml_out=snakemake.output.yaml, md_out=snakemake.output.md,
            evaluated_on=snakemake.params.evaluated_on, metric=snakemake.params.metric)
elif __name__ == "__main__":
    sys.exit(main())
