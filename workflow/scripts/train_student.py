import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.jobs.student import train_student
from mcmikd.smk import run_job

if __name__ == "__main__":  # not in the processes a multi-process job spawns, which import this file again
    run_job(snakemake, train_student, data_path=snakemake.input.data, params=snakemake.params.cfg,
            metrics_out=snakemake.output[0], teacher_model=snakemake.input.get("teacher_model"),
            teacher_metrics=snakemake.input.get("teacher_metrics"), resume_path=snakemake.params.resume,
            threads=snakemake.threads, model_out=snakemake.output.model)
