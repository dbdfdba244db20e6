import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.jobs.teacher import measure_cmi
from mcmikd.smk import run_job

run_job(snakemake, measure_cmi, data_path=snakemake.input.data, model_path=snakemake.input.model,
        params=snakemake.params.cfg, output=snakemake.output[0], threads=snakemake.threads)
