import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.plots import draw
from mcmikd.smk import run_job

run_job(snakemake, draw, spec=snakemake.params.draw, inputs=list(snakemake.input.data),
        layout=snakemake.params.layout, metric=snakemake.params.metric, png=snakemake.output.png,
        pdf=snakemake.output.pdf)
