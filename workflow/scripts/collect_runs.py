import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.aggregate import write_runs
from mcmikd.smk import run_job

run_job(snakemake, write_runs, student_files=list(snakemake.input.runs), teacher_files=list(snakemake.input.teachers),
        experiment=snakemake.wildcards.experiment, output=snakemake.output[0])
