rule eigen_cam:
    """Eigen-CAM maps of every compared teacher of one architecture on the same fixed test images."""
    input:
        data="<results>/data.pt",
        models=cam_models,
        code=job_code("eigen_cam", lambda wc: [MODELS[wc.arch]]),
    output:
        "<results>/cam/{arch}.pt",
    params:
        cfg=lambda wc: GRID.cam_params(wc.arch),
    log:
        "<logs>/eigen_cam/{arch}.log",
    benchmark:
        "<benchmarks>/eigen_cam/{arch}.tsv"
    threads: res("eigen_cam", "cpus_per_task", THREADS)
    resources:
        mem_mb=res("eigen_cam", "mem_mb", 4000),
        runtime=res("eigen_cam", "runtime", 10),
        gpu=res("eigen_cam", "gpu", 0),
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/eigen_cam.py"
