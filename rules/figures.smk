# The paper's figures (src/mcmikd/plots.py): each reads the runs table, teacher metrics or Eigen-CAM maps it
# shows, plus the plotting code, so that editing plots.py redraws the figures and reruns nothing else.
localrules:
    plot_main,
    plot_fewshot,
    plot_zeroshot_bars,
    plot_zeroshot_confusion,
    plot_temperature,
    plot_teachers_mcmi,
    plot_cam,


rule plot_fewshot:
    """Few-shot students: accuracy against the fraction of training data, MLL vs MCMI teacher."""
    input:
        runs="<results>/runs/fewshot.csv",
        code=job_code("plot_fewshot"),
    output:
        png=report(
            "<results>/figures/fewshot.png",
            caption="../workflow/report/fig_fewshot.rst",
            category="Figures",
            subcategory="Few-shot",
            labels={"figure": "accuracy vs fraction"},
        ),
        pdf="<results>/figures/fewshot.pdf",
    params:
        metric=config["tables"]["metric"],
        layout=lambda wc: table_layout("fewshot"),
    log:
        "<logs>/figures/fewshot.log",
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/plot_fewshot.py"


rule plot_zeroshot_bars:
    """Zero-shot students: accuracy on each omitted class, CE only / KD from MLL / KD from MCMI."""
    input:
        runs="<results>/runs/zeroshot.csv",
        code=job_code("plot_zeroshot_bars"),
    output:
        png=report(
            "<results>/figures/zeroshot_bars.png",
            caption="../workflow/report/fig_zeroshot_bars.rst",
            category="Figures",
            subcategory="Zero-shot",
            labels={"figure": "omitted-class accuracy"},
        ),
        pdf="<results>/figures/zeroshot_bars.pdf",
    params:
        metric=config["tables"]["metric"],
        layout=lambda wc: table_layout("zeroshot"),
    log:
        "<logs>/figures/zeroshot_bars.log",
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/plot_zeroshot_bars.py"


rule plot_zeroshot_confusion:
    """Zero-shot students: row-normalised confusion matrices, mean over seeds."""
    input:
        runs="<results>/runs/zeroshot.csv",
        code=job_code("plot_zeroshot_confusion"),
    output:
        png=report(
            "<results>/figures/zeroshot_confusion.png",
            caption="../workflow/report/fig_zeroshot_confusion.rst",
            category="Figures",
            subcategory="Zero-shot",
            labels={"figure": "confusion matrices"},
        ),
        pdf="<results>/figures/zeroshot_confusion.pdf",
    params:
        metric=config["tables"]["metric"],
        layout=lambda wc: table_layout("zeroshot"),
    log:
        "<logs>/figures/zeroshot_confusion.log",
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/plot_zeroshot_confusion.py"


rule plot_temperature:
    """The paper's Fig. 1: KD student accuracy and teacher CMI against the KD temperature."""
    input:
        runs="<results>/runs/temperature.csv",
        code=job_code("plot_temperature"),
    output:
        png=report(
            "<results>/figures/temperature.png",
            caption="../workflow/report/fig_temperature.rst",
            category="Figures",
            subcategory="Temperature",
            labels={"figure": "accuracy and CMI vs T"},
        ),
        pdf="<results>/figures/temperature.pdf",
    params:
        metric=config["tables"]["metric"],
        layout=lambda wc: table_layout("temperature"),
    log:
        "<logs>/figures/temperature.log",
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/plot_temperature.py"


rule plot_teachers_mcmi:
    """MCMI fine-tuning curves of every MCMI teacher against its MLL teacher."""
    input:
        metrics=all_teacher_metrics(),
        code=job_code("plot_teachers_mcmi"),
    output:
        png=report(
            "<results>/figures/teachers_mcmi.png",
            caption="../workflow/report/fig_teachers_mcmi.rst",
            category="Figures",
            subcategory="Teachers",
            labels={"figure": "MCMI fine-tuning"},
        ),
        pdf="<results>/figures/teachers_mcmi.pdf",
    log:
        "<logs>/figures/teachers_mcmi.log",
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/plot_teachers_mcmi.py"


rule plot_cam:
    """The paper's Fig. 3: Eigen-CAM maps of the MLL and the MCMI teacher on the same test images."""
    input:
        cam="<results>/cam/{arch}.pt",
        code=job_code("plot_cam"),
    output:
        png=report(
            "<results>/figures/cam_{arch}.png",
            caption="../workflow/report/fig_cam.rst",
            category="Figures",
            subcategory="Eigen-CAM",
            labels={"figure": "Eigen-CAM", "teacher": "{arch}"},
        ),
        pdf="<results>/figures/cam_{arch}.pdf",
    log:
        "<logs>/figures/cam_{arch}.log",
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/plot_cam.py"


rule plot_main:
    """The main table as a heat map of the MCMI teacher's gain over the MLL teacher, framework × pair."""
    input:
        runs="<results>/runs/main.csv",
        code=job_code("plot_main"),
    output:
        png=report(
            "<results>/figures/main_delta.png",
            caption="../workflow/report/fig_main.rst",
            category="Figures",
            subcategory="Main table",
            labels={"figure": "MCMI gain per framework and pair"},
        ),
        pdf="<results>/figures/main_delta.pdf",
    params:
        metric=config["tables"]["metric"],
        layout=lambda wc: table_layout("main"),
    log:
        "<logs>/figures/main_delta.log",
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/plot_main.py"
