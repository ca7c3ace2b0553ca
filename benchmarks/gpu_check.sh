#!/usr/bin/env bash
# First contact with a GPU machine: versions, the CUDA tests, every kernel against NumPy,
# GEMM TFLOP/s (numba, cuBLAS, torch.matmul), training images/s (numba GEMM, cuBLAS, two
# towers on one GPU, PyTorch + cuDNN) and the logits against PyTorch, in one report.
#
#   bash benchmarks/gpu_check.sh [REPORT]        (default: gpu_check_report.txt)
#
# Finishes within 8 minutes on one GPU: measurements stop being started after 7 (--budget
# 420), and the whole run is cut at 8 with whatever report was written by then. Uses the
# Python of $PYTHON, else the virtual environment's (.venv), else python3. Extra arguments
# after REPORT go to benchmarks/gpu_check.py (--help lists them).
set -u
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
    py="$PYTHON"
elif [ -x .venv/bin/python ]; then
    py=.venv/bin/python
else
    py=python3
fi
report="${1:-gpu_check_report.txt}"
shift || true
timeout --signal=INT --kill-after=10 480 "$py" benchmarks/gpu_check.py --report "$report" \
    --budget 420 "$@"
status=$?
[ "$status" -eq 124 ] && echo "gpu_check: stopped at the 8-minute limit; partial report in $report"
exit "$status"
