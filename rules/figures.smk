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


rule tsne_logits:
    """t-SNE of the test-set logits of one zero-shot setting's teachers and students (one embedding per model),
    stored so that its figure is redrawn without computing it again."""
    input:
        data="<results>/data.pt",
        models=tsne_models,
        code=job_code("tsne_logits", lambda wc: [MODELS[a] for a in tsne_experiment(wc).tsne_archs(wc.setting)]),
    output:
        csv="<results>/tsne/{experiment}/{setting}.csv",
        record="<results>/tsne/{experiment}/{setting}.json",
    log:
        "<logs>/tsne_logits/{experiment}/{setting}.log",
    benchmark:
        "<benchmarks>/tsne_logits/{experiment}/{setting}.tsv"
    conda:
        CONDA_ENV
    threads: res("tsne_logits", "cpus_per_task", THREADS)
    resources:
        mem_mb=res("tsne_logits", "mem_mb", 4000),
        runtime=res("tsne_logits", "runtime", 60),
        gpu=res("tsne_logits", "gpu", 0),
    params:
        cfg=lambda wc: GRID.tsne_params(wc.experiment, wc.setting),
    script:
        "../workflow/scripts/tsne_logits.py"
