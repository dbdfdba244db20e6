import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.jobs.prepare import prepare_data
from mcmikd.smk import run_job

run_job(snakemake, prepare_data, params=snakemake.params.dataset, output=snakemake.output[0])
