# Teachers: one rule per start point (from scratch, or fine-tuning another objective's teacher), one script and
# one training skeleton for every teacher objective (src/mcmikd/teachers/).


rule train_teacher:
    """A teacher trained from scratch with its objective (e.g. MLL: cross-entropy), or an MLL teacher loaded from
    the file `teachers.weights` names (measured on the test set, not trained)."""
    input:
        unpack(weights_inputs),
        data="<results>/data.pt",
        code=job_code("train_teacher", teacher_modules),
    output:
        model="<results>/teachers/{arch}/{variant}/seed{tseed}/model.pt",
        metrics="<results>/teachers/{arch}/{variant}/seed{tseed}/metrics.json",
    log:
        "<logs>/train_teacher/{arch}.{variant}.seed{tseed}.log",
    benchmark:
        "<benchmarks>/train_teacher/{arch}.{variant}.seed{tseed}.tsv"
    wildcard_constraints:
        variant=_alternatives(GRID.variant_names(False)),
    conda:
        CONDA_ENV
    threads: train_res("train_teacher", "cpus_per_task", THREADS)
    resources:
        **ONE_NODE,
        mem_mb=res("train_teacher", "mem_mb", 4000),
        runtime=res("train_teacher", "runtime", 60),
        gpu=train_res("train_teacher", "gpu", 0),
    params:
        cfg=lambda wc: GRID.teacher_params(wc.arch, wc.variant, int(wc.tseed)),
        resume=lambda wc, output: resume_path(output.model),
    script:
        "../workflow/scripts/train_teacher.py"


rule finetune_teacher:
    """A teacher whose objective fine-tunes another objective's teacher (e.g. MCMI: CE − λ·KL(P_x ‖ Q_y) with
    frozen centroids; its control: the same recipe with λ = 0). model.pt is the state teachers.finetuning.checkpoint
    chooses; best.pt the best-on-test state, which students of an experiment with teacher_checkpoint: best use."""
    input:
        unpack(start_inputs),
        data="<results>/data.pt",
        code=job_code("train_teacher", teacher_modules),
    output:
        model="<results>/teachers/{arch}/{variant}/seed{tseed}/model.pt",
        metrics="<results>/teachers/{arch}/{variant}/seed{tseed}/metrics.json",
        best="<results>/teachers/{arch}/{variant}/seed{tseed}/best.pt",  # best-on-test state (experiments' teacher_checkpoint)
    log:
        "<logs>/finetune_teacher/{arch}.{variant}.seed{tseed}.log",
    benchmark:
        "<benchmarks>/finetune_teacher/{arch}.{variant}.seed{tseed}.tsv"
    wildcard_constraints:
        variant=_alternatives(GRID.variant_names(True)),
    conda:
        CONDA_ENV
    threads: train_res("finetune_teacher", "cpus_per_task", THREADS)
    resources:
        **ONE_NODE,
        mem_mb=res("finetune_teacher", "mem_mb", 4000),
        runtime=res("finetune_teacher", "runtime", 30),
        gpu=train_res("finetune_teacher", "gpu", 0),
    params:
        cfg=lambda wc: GRID.teacher_params(wc.arch, wc.variant, int(wc.tseed)),
        resume=lambda wc, output: resume_path(output.model),
    script:
        "../workflow/scripts/train_teacher.py"


rule measure_cmi:
    """Teacher CMI on the training set (eval mode, no augmentation) at every KD temperature, and accuracy."""
    input:
        data="<results>/data.pt",
        model="<results>/teachers/{arch}/{variant}/seed{tseed}/model.pt",
        code=job_code("measure_cmi", lambda wc: [MODELS[wc.arch]]),
    output:
        "<results>/teachers/{arch}/{variant}/seed{tseed}/cmi.json",
    log:
        "<logs>/measure_cmi/{arch}.{variant}.seed{tseed}.log",
    benchmark:
        "<benchmarks>/measure_cmi/{arch}.{variant}.seed{tseed}.tsv"
    conda:
        CONDA_ENV
    threads: res("measure_cmi", "cpus_per_task", THREADS)
    resources:
        mem_mb=res("measure_cmi", "mem_mb", 4000),
        runtime=res("measure_cmi", "runtime", 10),
        gpu=res("measure_cmi", "gpu", 0),
    params:
        cfg=GRID.cmi_params(),
    script:
        "../workflow/scripts/measure_cmi.py"
