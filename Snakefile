# MCMI teachers for knowledge distillation (Ye et al., ICLR 2024) with Eigen-CAM: the reproduction workflow.
# One command runs it all: `make run` (default: digits), or `snakemake --cores N --configfile config/cifar100.yaml`.
import tomllib

from packaging.requirements import Requirement
from snakemake.utils import min_version

# The oldest Snakemake this workflow runs on, stated once: the lower bound of pyproject.toml's snakemake requirement.
with open(f"{workflow.basedir}/pyproject.toml", "rb") as _pyproject:
    _needs = [Requirement(r) for r in tomllib.load(_pyproject)["project"]["dependencies"]]
min_version(next(s.version for r in _needs if r.name == "snakemake" for s in r.specifier if s.operator == ">="))


# The default digits config applies only when no --configfile is given: paper configs replace it instead of
# being deep-merged into it (--config key=value overrides still apply on top of either).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"


pathvars:
    results=f"results/{config['name']}",
    logs=f"logs/{config['name']}",
    benchmarks=f"benchmarks/{config['name']}",


# The report's first page: the static workflow description, followed by the run's reading once the rule `reading`
# (rules/choices.smk) has written it (`snakemake --report` parses this file again after the run).
_FIRST_PAGE = Path(workflow.pathvars.apply("<results>/report/first_page.rst")).absolute()


report: str(_FIRST_PAGE) if _FIRST_PAGE.exists() else "workflow/report/workflow.rst"


include: "rules/integrity.smk"
include: "rules/data.smk"
include: "rules/teachers.smk"
include: "rules/students.smk"
include: "rules/cam.smk"
include: "rules/aggregate.smk"
include: "rules/choices.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
        damaged_intermediates,  # rules/integrity.smk
        preflight_checked,  # rules/common.smk


# last: its checks need every rule defined
include: "rules/checks.smk"
