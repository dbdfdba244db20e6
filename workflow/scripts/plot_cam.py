import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.plots import cam_figure
from mcmikd.smk import run_job

run_job(snakemake, cam_figure, cam_path=snakemake.input.cam, png=snakemake.output.png, pdf=snakemake.output.pdf)
