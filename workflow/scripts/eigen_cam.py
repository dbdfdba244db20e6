import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.jobs import run_cam
from mcmikd.smk import run_job

run_job(snakemake, run_cam, data_path=snakemake.input.data,
        teacher_models={"MLL": snakemake.input.mll, "MCMI": snakemake.input.mcmi}, params=snakemake.params.cfg,
        output=snakemake.output[0], threads=snakemake.threads)
