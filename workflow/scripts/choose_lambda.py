"""Rule choose_lambda (rules/choices.smk): the recipe rule over this run's λ sweep (mcmikd.choices.write_lambda_choice)
as `tables/<kind>_choice.yaml` and `.md`, for the report."""

import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.choices import write_lambda_choice
from mcmikd.smk import run_job

run_job(snakemake, write_lambda_choice, runs_csv=snakemake.input.runs, layout=snakemake.params.layout,
        metric=snakemake.params.metric, yaml_out=snakemake.output.yaml, md_out=snakemake.output.md)
