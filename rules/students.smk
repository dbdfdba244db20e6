rule train_student:
    """One student run: a framework (or plain CE), a teacher, a data setting (full, few-shot, zero-shot,
    KD temperature) and a seed; its result file and its last-epoch model."""
    input:
        unpack(student_teacher_inputs),
        data="<results>/data.pt",
        code=job_code("train_student", student_modules),
    output:
        "<results>/students/{t_arch}/{t_variant}/{student}/{method}/{setting}/seed{seed}.json",
        model="<results>/students/{t_arch}/{t_variant}/{student}/{method}/{setting}/seed{seed}.pt",
    log:
        "<logs>/train_student/{t_arch}/{t_variant}/{student}/{method}/{setting}/seed{seed}.log",
    benchmark:
        "<benchmarks>/train_student/{t_arch}/{t_variant}/{student}/{method}/{setting}/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: train_res("train_student", "cpus_per_task", THREADS)
    resources:
        **ONE_NODE,
        mem_mb=res("train_student", "mem_mb", 4000),
        runtime=res("train_student", "runtime", 60),
        gpu=train_res("train_student", "gpu", 0),
    params:
        cfg=student_params,
        resume=lambda wc, output: resume_path(output[0]),
    script:
        "../workflow/scripts/train_student.py"
