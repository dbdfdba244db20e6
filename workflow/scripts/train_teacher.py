import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.jobs.teacher import import_teacher, train_teacher
from mcmikd.smk import run_job

if __name__ == "__main__" and "weights" in snakemake.params.cfg:  # teachers.weights: loaded, not trained
    run_job(snakemake, import_teacher, data_path=snakemake.input.data, params=snakemake.params.cfg,
            weights_path=snakemake.input.weights, model_out=snakemake.output.model,
            metrics_out=snakemake.output.metrics, threads=snakemake.threads)
elif __name__ == "__main__":  # not in the processes a multi-process job spawns, which import this file again
    run_job(snakemake, train_teacher, data_path=snakemake.input.data, params=snakemake.params.cfg,
            model_out=snakemake.output.model, metrics_out=snakemake.output.metrics,
            start_model=snakemake.input.get("start_model"), start_metrics=snakemake.input.get("start_metrics"),
            resume_path=snakemake.params.resume, threads=snakemake.threads,
            best_out=snakemake.output.get("best"))
