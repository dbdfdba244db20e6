rule train_teacher:
    """MLL teacher: cross-entropy training of one architecture."""
    input:
        data="<results>/data.pt",
        code=job_code("train_teacher", models=["arch"]),
    output:
        model="<results>/teachers/{arch}/mll/model.pt",
        metrics="<results>/teachers/{arch}/mll/metrics.json",
    params:
        cfg=lambda wc: GRID.teacher_params(wc.arch),
        resume=lambda wc, output: resume_path(output.model),
    log:
        "<logs>/train_teacher/{arch}.log",
    benchmark:
        "<benchmarks>/train_teacher/{arch}.tsv"
    threads: res("train_teacher", "cpus_per_task", THREADS)
    resources:
        mem_mb=res("train_teacher", "mem_mb", 4000),
        runtime=res("train_teacher", "runtime", 60),
        gpu=res("train_teacher", "gpu", 0),
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/train_teacher.py"


rule finetune_mcmi:
    """MCMI teacher: fine-tune a copy of the MLL teacher with CE − λ·KL(P_x ‖ Q_y), centroids frozen."""
    input:
        data="<results>/data.pt",
        mll_model="<results>/teachers/{arch}/mll/model.pt",
        mll_metrics="<results>/teachers/{arch}/mll/metrics.json",
        code=job_code("finetune_mcmi", models=["arch"]),
    output:
        model="<results>/teachers/{arch}/{kind}/model.pt",
        metrics="<results>/teachers/{arch}/{kind}/metrics.json",
    wildcard_constraints:
        kind=r"mcmi-[0-9.e+-]+",
    params:
        cfg=lambda wc: GRID.mcmi_params(wc.arch, wc.kind),
        resume=lambda wc, output: resume_path(output.model),
    log:
        "<logs>/finetune_mcmi/{arch}.{kind}.log",
    benchmark:
        "<benchmarks>/finetune_mcmi/{arch}.{kind}.tsv"
    threads: res("finetune_mcmi", "cpus_per_task", THREADS)
    resources:
        mem_mb=res("finetune_mcmi", "mem_mb", 4000),
        runtime=res("finetune_mcmi", "runtime", 30),
        gpu=res("finetune_mcmi", "gpu", 0),
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/finetune_mcmi.py"


rule measure_cmi:
    """Teacher CMI on the training set (eval mode, no augmentation) at every KD temperature, and accuracy."""
    input:
        data="<results>/data.pt",
        model="<results>/teachers/{arch}/{kind}/model.pt",
        code=job_code("measure_cmi", models=["arch"]),
    output:
        "<results>/teachers/{arch}/{kind}/cmi.json",
    params:
        cfg=GRID.cmi_params(),
    log:
        "<logs>/measure_cmi/{arch}.{kind}.log",
    benchmark:
        "<benchmarks>/measure_cmi/{arch}.{kind}.tsv"
    threads: res("measure_cmi", "cpus_per_task", THREADS)
    resources:
        mem_mb=res("measure_cmi", "mem_mb", 4000),
        runtime=res("measure_cmi", "runtime", 10),
        gpu=res("measure_cmi", "gpu", 0),
    conda:
        CONDA_ENV
    script:
        "../workflow/scripts/measure_cmi.py"
