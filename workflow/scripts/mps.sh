#!/usr/bin/env bash
# CUDA MPS (Multi-Process Service) for packed training jobs on one GPU: with it, the kernels of several processes
# run at the same time on the GPU's SMs; without it the processes are time-sliced, and once each job's step is a
# captured CUDA graph (runtime.compile: auto) packing gains little (see docs/benchmarks-gpu.md).
#
#   workflow/scripts/mps.sh start [DIR]   # start a control daemon for this user; DIR holds its pipe and log
#   workflow/scripts/mps.sh stop  [DIR]   # stop it (waits for its clients to end)
#   workflow/scripts/mps.sh status [DIR]  # "running" or "stopped" (exit 0 / 1)
#
# DIR defaults to $MCMIKD_MPS_DIR or /tmp/mcmikd-mps-$USER. Jobs reach the daemon through CUDA_MPS_PIPE_DIRECTORY;
# export it (as `start` prints) in the shell that runs Snakemake, e.g. with profiles/local:
#   eval "$(workflow/scripts/mps.sh start)"; .venv/bin/snakemake --profile profiles/local ...; workflow/scripts/mps.sh stop
# On SLURM: MPS is a GRES on many clusters (`--gres=mps:N`, slurm.conf `GresTypes=mps`), started by the node;
# where it is not, call this script at the top of the job script. Needs nvidia-cuda-mps-control on PATH
# (part of the NVIDIA driver). Exit status 2 with one line when it is missing.
set -euo pipefail

cmd=${1:-}
dir=${2:-${MCMIKD_MPS_DIR:-/tmp/mcmikd-mps-${USER:-$(id -un)}}}
control=${MPS_CONTROL:-nvidia-cuda-mps-control}

if ! command -v "$control" >/dev/null 2>&1; then
  echo "mps.sh: $control not found (it ships with the NVIDIA driver); run packed jobs without MPS" >&2
  exit 2
fi
export CUDA_MPS_PIPE_DIRECTORY="$dir/pipe" CUDA_MPS_LOG_DIRECTORY="$dir/log"

running() { [ -e "$CUDA_MPS_PIPE_DIRECTORY/control" ] && echo get_server_list | "$control" >/dev/null 2>&1; }

case "$cmd" in
  start)
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if ! running; then
      "$control" -d
    fi
    echo "export CUDA_MPS_PIPE_DIRECTORY=$CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY=$CUDA_MPS_LOG_DIRECTORY"
    ;;
  stop)
    if running; then
      echo quit | "$control"
    fi
    ;;
  status)
    if running; then echo running; else echo stopped; exit 1; fi
    ;;
  *)
    echo "usage: mps.sh start|stop|status [DIR]" >&2
    exit 64
    ;;
esac
