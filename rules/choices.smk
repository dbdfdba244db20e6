# The choices the workflow makes from its own tables, and the run's reading for the report's first page (mcmikd.choices,
# mcmikd.reading). Each choice rule runs only when its experiment is enabled in the config (get_final_output and
# choice_targets, in rules/common.smk); its Markdown is in the report (category "Choices").


localrules:
    choose_method_weights,
    choose_lambda,
    reading,


rule choose_method_weights:
    """The method-weight choice from the method-weight selection table: per framework, the multiple of its own weight
    with the highest mean accuracy (mcmikd.experiments.method_weights.choose), on the data the run evaluated on."""
    input:
        table=f"<results>/tables/{WEIGHTS_KIND}.csv",
        code=job_code("choose_method_weights"),
    output:
        yaml=f"<results>/tables/{WEIGHTS_KIND}_choice.yaml",
        md=report(
            f"<results>/tables/{WEIGHTS_KIND}_choice.md",
            caption="../workflow/report/choice_weights.rst",
            category="Choices",
            labels={"choice": "method weights"},
        ),
    log:
        f"<logs>/choices/{WEIGHTS_KIND}.log",
    conda:
        CONDA_ENV
    params:
        metric=config["tables"]["metric"],
        evaluated_on=lambda wc: evaluated_on(WEIGHTS_KIND),
    script:
        "../workflow/scripts/choose_method_weights.py"


rule choose_lambda:
    """The MCMI λ from this run's λ sweep by the recipe rule (mcmikd.experiments.lambda_sweep.choose), every pair
    counted, with the sweep's cliff as the accuracy margin."""
    input:
        runs=f"<results>/runs/{SWEEP_KIND}.csv",
        code=job_code("choose_lambda"),
    output:
        yaml=f"<results>/tables/{SWEEP_KIND}_choice.yaml",
        md=report(
            f"<results>/tables/{SWEEP_KIND}_choice.md",
            caption="../workflow/report/choice_lambda.rst",
            category="Choices",
            labels={"choice": "MCMI λ"},
        ),
    log:
        f"<logs>/choices/{SWEEP_KIND}.log",
    conda:
        CONDA_ENV
    params:
        metric=config["tables"]["metric"],
        layout=lambda wc: table_layout(SWEEP_KIND),
        evaluated_on=lambda wc: evaluated_on(SWEEP_KIND),
    script:
        "../workflow/scripts/choose_lambda.py"


rule reading:
    """The run's reading (mcmikd.reading): the pooled teacher comparisons and the students' headroom of the main table,
    and the choices; and the report's first page, the static workflow description followed by it (the Snakefile's
    report: directive shows it once it exists)."""
    input:
        unpack(reading_inputs),
        static=STATIC_REPORT,
        code=job_code("reading"),
    output:
        reading="<results>/report/reading.rst",
        page="<results>/report/first_page.rst",
    log:
        "<logs>/reading.log",
    conda:
        CONDA_ENV
    params:
        metric=config["tables"]["metric"],
        layout=lambda wc: table_layout(MAIN_KIND) if MAIN_KIND in GRID.runs else {},
    script:
        "../workflow/scripts/reading.py"
