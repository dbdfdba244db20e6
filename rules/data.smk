localrules:
    prepare_data,


rule prepare_data:
    """The dataset as uint8 tensors with a recorded split: one file every training job loads in one read; for a
    dataset streamed from its files (ImageNet, mcmikd.streaming) the file lists and labels instead of the images.
    A local rule: on a cluster it runs on the head node, which may download CIFAR where compute nodes cannot."""
    input:
        code=job_code("prepare_data"),
    output:
        "<results>/data.pt",
    log:
        "<logs>/prepare_data.log",
    benchmark:
        "<benchmarks>/prepare_data.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("prepare_data", "mem_mb", 4000),
        runtime=res("prepare_data", "runtime", 30),
    params:
        dataset=GRID.data_params(),
    script:
        "../workflow/scripts/prepare_data.py"
