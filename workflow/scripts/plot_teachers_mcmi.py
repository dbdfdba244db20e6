import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.plots import teachers_mcmi_figure
from mcmikd.smk import run_job

run_job(snakemake, teachers_mcmi_figure, metrics_files=list(snakemake.input.metrics), png=snakemake.output.png,
        pdf=snakemake.output.pdf)
