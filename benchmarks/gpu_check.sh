#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, the repository and the project's packages (a diffusers wheel
# carried over where the machine has none), run within about 9 minutes:
#   bash benchmarks/gpu_check.sh [OUT]        (default OUT: gpu-check/)
# It writes to OUT: the benchmark of every family (benchmark-<family>/benchmark.md and .json, each within its
# share of the time), the CUDA-path tests' output (tests.log) and the environment (nvidia-smi.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-check}"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/nvidia-smi.txt"
for family in hallo echomimic-acc memo; do
  timeout 170 python -m emo_pipeline benchmark --device cuda --family "$family" --budget-s 140 \
    --out "$OUT/benchmark-$family" > "$OUT/benchmark-$family.log" 2>&1 || echo "benchmark $family: exit $?" >> "$OUT/failures.txt"
done
timeout 120 python -m pytest -q tests/test_gpu_path.py tests/test_memory_plan.py > "$OUT/tests.log" 2>&1 \
  || echo "tests: exit $?" >> "$OUT/failures.txt"
cat "$OUT"/benchmark-*/benchmark.md 2>/dev/null
