# The figures: one rule for all of them. Each experiment kind declares its figures (src/mcmikd/experiments/), the
# grid adds the teachers' fine-tuning curves; a figure job reads its declared inputs and its drawing code, so
# editing one experiment's figure code redraws its figures and reruns nothing else.
localrules:
    plot_figure,


rule plot_figure:
    """One declared figure (PNG and PDF) from its runs table, teacher metrics or Eigen-CAM maps."""
    input:
        data=figure_inputs,
        code=job_code("plot_figure", lambda wc: [figure_spec(wc).draw]),
    output:
        png=report(
            "<results>/figures/{figure}.png",
            caption="../workflow/report/figure.rst",
            category="Figures",
            subcategory=lambda wc: figure_spec(wc).subcategory,
            labels=lambda wc: {"figure": figure_spec(wc).label},
        ),
        pdf="<results>/figures/{figure}.pdf",
    log:
        "<logs>/figures/{figure}.log",
    conda:
        CONDA_ENV
    params:
        metric=config["tables"]["metric"],
        draw=lambda wc: figure_spec(wc).draw,
        layout=lambda wc: figure_spec(wc).layout,
        caption=figure_caption,
    script:
        "../workflow/scripts/plot_figure.py"
