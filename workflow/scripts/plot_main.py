import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.plots import main_delta_figure
from mcmikd.smk import run_job

run_job(snakemake, main_delta_figure, runs_csv=snakemake.input.runs, layout=snakemake.params.layout,
        metric=snakemake.params.metric, png=snakemake.output.png, pdf=snakemake.output.pdf)
