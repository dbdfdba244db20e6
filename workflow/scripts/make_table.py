import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.aggregate import write_table
from mcmikd.smk import run_job

run_job(snakemake, write_table, runs_csv=snakemake.input.runs, experiment=snakemake.wildcards.experiment,
        layout=snakemake.params.layout, metric=snakemake.params.metric, csv_out=snakemake.output.csv,
        md_out=snakemake.output.md, tex_out=snakemake.output.tex, gains_out=snakemake.output.gains)
