rule eigen_cam:
    """Eigen-CAM maps of every compared teacher of one architecture on the same fixed test images."""
    input:
        data="<results>/data.pt",
        models=cam_models,
        code=job_code("eigen_cam", lambda wc: [MODELS[wc.arch]]),
    output:
        "<results>/cam/{arch}.pt",
    log:
        "<logs>/eigen_cam/{arch}.log",
    benchmark:
        "<benchmarks>/eigen_cam/{arch}.tsv"
    conda:
        CONDA_ENV
    threads: res("eigen_cam", "cpus_per_task", THREADS)
    resources:
        mem_mb=res("eigen_cam", "mem_mb", 4000),
        runtime=res("eigen_cam", "runtime", 10),
        gpu=res("eigen_cam", "gpu", 0),
    params:
        cfg=lambda wc: GRID.cam_params(wc.arch),
    script:
        "../workflow/scripts/eigen_cam.py"


rule cam_measure:
    """Eigen-CAM (centred and uncentred), Grad-CAM and Grad-CAM++ of every compared teacher of one teacher seed on
    every test image, scored against the object boxes (localization, pointing game, context, area, entropy)."""
    input:
        data="<results>/data.pt",
        models=cam_measure_models,
        code=job_code("cam_measure", lambda wc: [MODELS[wc.arch]]),
    output:
        "<results>/cam/{arch}/measure/seed{tseed}.json",
    log:
        "<logs>/cam_measure/{arch}.seed{tseed}.log",
    benchmark:
        "<benchmarks>/cam_measure/{arch}.seed{tseed}.tsv"
    conda:
        CONDA_ENV
    threads: res("cam_measure", "cpus_per_task", THREADS)
    resources:
        mem_mb=res("cam_measure", "mem_mb", 4000),
        runtime=res("cam_measure", "runtime", 30),
        gpu=res("cam_measure", "gpu", 0),
    params:
        cfg=lambda wc: GRID.cam_measure_params(wc.arch, int(wc.tseed)),
    script:
        "../workflow/scripts/cam_measure.py"


localrules:
    cam_table,


rule cam_table:
    """Table `cam`: localization of each map method and the context, area and entropy of each compared teacher's
    Eigen-CAM, over every test image and teacher seed, with seed-level intervals and paired differences."""
    input:
        measures=lambda wc: [f"<results>/{f}" for f in GRID.cam_measure_files()],
        code=job_code("cam_table"),
    output:
        csv=report(
            "<results>/tables/cam.csv",
            caption="../workflow/report/cam_table.rst",
            category="Tables",
            labels={"table": "CAM measured"},
        ),
        md="<results>/tables/cam.md",
        tex="<results>/tables/cam.tex",
        seeds="<results>/tables/cam_seeds.csv",
    log:
        "<logs>/cam_table/cam.log",
    conda:
        CONDA_ENV
    params:
        layout=lambda wc: GRID.cam_measure_layout(),
    script:
        "../workflow/scripts/cam_table.py"
