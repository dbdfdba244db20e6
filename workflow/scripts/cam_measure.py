import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.jobs.cam import run_cam_measure
from mcmikd.smk import run_job

cfg = snakemake.params.cfg
run_job(snakemake, run_cam_measure, data_path=snakemake.input.data,
        teacher_models=dict(zip(cfg["variants"], snakemake.input.models)), params=cfg, output=snakemake.output[0],
        threads=snakemake.threads)
