"""One module per workflow step, each with one function per job: it takes file paths and the job's own slice of
the config (`params`) and writes its outputs atomically. The Snakemake scripts in workflow/scripts/ only call these.

The modules are kept apart on purpose: a job's code inputs are the static import closure of its script
(`mcmikd.codedeps`), so editing the Eigen-CAM job, say, reruns only Eigen-CAM jobs. This file imports nothing.
"""
