# MCMI teachers for knowledge distillation (Ye et al., ICLR 2024) with Eigen-CAM: the reproduction workflow.
# One command runs it all: `make run` (default: digits), or `snakemake --cores N --configfile config/cifar100.yaml`.
from snakemake.utils import min_version

# Equal to the lower bound of pyproject.toml's snakemake requirement; change the two together.
min_version("9.20")


# The default digits config applies only when no --configfile is given: paper configs replace it instead of
# being deep-merged into it (--config key=value overrides still apply on top of either).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"


pathvars:
    results=f"results/{config['name']}",
    logs=f"logs/{config['name']}",
    benchmarks=f"benchmarks/{config['name']}",


report: "workflow/report/workflow.rst"


include: "rules/integrity.smk"


include: "rules/data.smk"
include: "rules/teachers.smk"
include: "rules/students.smk"
include: "rules/cam.smk"
include: "rules/aggregate.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        get_final_output(),


# last: its checks need every rule defined
include: "rules/checks.smk"
