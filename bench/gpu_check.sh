#!/usr/bin/env bash
# The GPU check of the captured training step, as one command (≤ 8 minutes on one H100/H200):
#   bash bench/gpu_check.sh [OUT]          # OUT: folder for the reports (default: $OUT, else bench-gpu-check/)
# 1. bench/capture_check.py, paper runtime (fp32, deterministic) and fast runtime (bf16, not deterministic):
#    every method and teacher objective, resnet56 → resnet20 at CIFAR-100 shapes: graph replays counted, the
#    captured run equal to the eager run bit for bit, nothing refused.
# 2. bench/gpu.py with full epochs (--steps 0): RepDistiller-style loop, this engine per runtime and compile mode,
#    2/4/8 packed jobs time-sliced and under CUDA MPS; each row with its graph replays / eager steps.
# 3. bench/cost.py on config/cifar10.yaml (report cost.md): GPU-hours from the engine's step, eager and captured. (The CIFAR-100
#    grid has 267 step families, several minutes: `python bench/cost.py --config config/cifar100.yaml --pack best`
#    as a command of its own.)
# Every stage has its own time box; a stage that fails or overruns leaves its log and the next one still runs.
# Uses the machine's own torch; this checkout's package through PYTHONPATH (no install).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench-gpu-check}}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
else
  echo "no nvidia-smi" > "$out/gpu.txt"
fi
failed=0
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$out/gpu.txt" 2>&1
stage() {  # stage NAME SECONDS CMD...
  local name=$1 box=$2; shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$box" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
  [ "$rc" = 0 ] || failed=1
}
if [ "${SMOKE:-0}" = 1 ]; then  # the plumbing on a CPU in seconds (tests/test_bench.py); numbers mean nothing
  small=(--device cpu --small --steps 2 --epochs 2 --cases kd,crd,mcmi)
  bench=(--smoke --device cpu --budget-s 60 --jobs 1 --modes paper)
  cost=(--config tests/tiny.yaml --steps 1 --threads 1)
else
  small=()
  bench=(--steps 0 --budget-s 195)
  cost=(--config config/cifar10.yaml --steps 20)
fi
stage capture-paper 120 "$py" bench/capture_check.py --runtime paper "${small[@]}" --out "$out/capture-paper.md"
stage capture-fast 90 "$py" bench/capture_check.py --runtime fast "${small[@]}" --out "$out/capture-fast.md"
[ "${SMOKE:-0}" = 1 ] || stage gpu-bench 210 "$py" bench/gpu.py "${bench[@]}" --out "$out/benchmarks-gpu.md"
stage cost 60 "$py" bench/cost.py "${cost[@]}" --out "$out/cost.md"
cat "$out/gpu.txt" "$out/summary.txt"
for f in capture-paper capture-fast; do tail -n 3 "$out/$f.md" 2>/dev/null; done
grep -E "^\| \*\*all" "$out/cost.md" 2>/dev/null
grep -E "^\| (this engine|packed|RepDistiller)" "$out/benchmarks-gpu.md" 2>/dev/null || true
exit "$failed"  # 1 when a stage failed or overran
