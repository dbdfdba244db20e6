"""Rule reading (rules/choices.smk): the run's reading from its main table (mcmikd.reading.write_reading), and the
report's first page (the static workflow description followed by it)."""

import _src  # noqa: F401  (the workflow's own package first on sys.path)
from mcmikd.reading import write_reading
from mcmikd.smk import run_job

given = snakemake.input.keys()
run_job(snakemake, write_reading, out=snakemake.output.reading, page_out=snakemake.output.page,
        static_rst=snakemake.input.static, layout=snakemake.params.layout or None, metric=snakemake.params.metric,
        table_csv=snakemake.input.table if "table" in given else None,
        gains_csv=snakemake.input.gains if "gains" in given else None,
        weights_yaml=snakemake.input.weights if "weights" in given else None,
        lambda_yaml=snakemake.input.lam if "lam" in given else None)
