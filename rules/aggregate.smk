localrules:
    collect_runs,
    make_table,


rule collect_runs:
    """One row per run (students, and the teachers they learned from) of one experiment."""
    input:
        runs=experiment_runs,
        teachers=experiment_teachers,
        code=job_code(
            "collect_runs",
            lambda wc: [OBJECTIVES[o] for o in GRID.trained_objectives()],
        ),
    output:
        "<results>/runs/{experiment}.csv",
    log:
        "<logs>/collect_runs/{experiment}.log",
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/collect_runs.py"


rule make_table:
    """The paper's table for one experiment, as CSV, Markdown and LaTeX (booktabs), and its seed-paired gains with
    pooled estimates and minimal detectable effects (CSV; in the Markdown too)."""
    input:
        runs="<results>/runs/{experiment}.csv",
        code=job_code("make_table", lambda wc: [EXPERIMENTS[wc.experiment]]),
    output:
        csv=report(
            "<results>/tables/{experiment}.csv",
            caption="../workflow/report/table.rst",
            category="Tables",
            labels={"table": "{experiment}"},
        ),
        md="<results>/tables/{experiment}.md",
        tex="<results>/tables/{experiment}.tex",
        gains=report(
            "<results>/tables/{experiment}_gains.csv",
            caption="../workflow/report/gains.rst",
            category="Tables",
            labels={"table": "{experiment}: seed-paired gains"},
        ),
    log:
        "<logs>/make_table/{experiment}.log",
    conda:
        CONDA_ENV
    params:
        metric=config["tables"]["metric"],
        layout=lambda wc: table_layout(wc.experiment),
        note=lambda wc: GRID.experiments[wc.experiment].report_note(),
    script:
        "../workflow/scripts/make_table.py"
