import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.jobs.tsne import tsne_logits
from mcmikd.smk import run_job

run_job(snakemake, tsne_logits, data_path=snakemake.input.data, models=list(snakemake.input.models),
        params=snakemake.params.cfg, csv_out=snakemake.output.csv, record_out=snakemake.output.record,
        threads=snakemake.threads)
