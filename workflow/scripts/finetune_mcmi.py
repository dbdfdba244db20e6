import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.jobs import finetune_mcmi
from mcmikd.smk import run_job

run_job(snakemake, finetune_mcmi, data_path=snakemake.input.data, mll_model=snakemake.input.mll_model,
        mll_metrics=snakemake.input.mll_metrics, params=snakemake.params.cfg, model_out=snakemake.output.model,
        metrics_out=snakemake.output.metrics, resume_path=snakemake.params.resume, threads=snakemake.threads)
