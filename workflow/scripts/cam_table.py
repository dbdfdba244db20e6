import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.cam_table import write_cam_table
from mcmikd.smk import run_job

run_job(snakemake, write_cam_table, measures=list(snakemake.input.measures), layout=snakemake.params.layout,
        csv_out=snakemake.output.csv, md_out=snakemake.output.md, tex_out=snakemake.output.tex,
        seeds_out=snakemake.output.seeds)
