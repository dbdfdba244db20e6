"""MCMI teachers for knowledge distillation, Eigen-CAM, and the pieces of their reproduction workflow.

Importing the package (or `mcmikd.registry`, `mcmikd.config`) must stay torch-free: the Snakefile imports
these at parse time, and a SLURM job step parses the Snakefile again for every job.
"""

__version__ = "0.1.0"
