#!/usr/bin/env bash
# Run strato's GPU / TensorRT tests on a machine with an NVIDIA GPU, within 8 minutes.
#
#   scripts/gpu-check.sh            # uses .venv if it exists, else makes .venv-gpu
#   STRATO_GPU_VENV=/path/venv scripts/gpu-check.sh
#
# What it needs and installs when missing (never torch: the GPU tests do not import it):
#   - TensorRT 10 Python bindings: JetPack's system package on a Jetson (the venv is made with
#     --system-site-packages so it is seen), else `tensorrt-cu12>=10.3,<11` from PyPI
#     (TensorRT 11 drops the FP16 builder flag this code uses for fp32 → fp16 plans);
#   - cuda-python (host↔device copies of the TensorRT runner), matching the driver's CUDA major;
#   - strato itself (editable, no deps) plus the runtime/test deps, without torch.
# Prints the device fingerprint first, then runs the tests marked gpu/tensorrt and the CPU
# keying/fingerprint tests, and fails if a gpu test was skipped (that would hide a broken stack).
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
started=$(date +%s)

if ! command -v nvidia-smi >/dev/null 2>&1 && [ ! -e /etc/nv_tegra_release ]; then
  echo "gpu-check: no NVIDIA GPU here (no nvidia-smi, not a Jetson)" >&2
  exit 1
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv

VENV=${STRATO_GPU_VENV:-}
if [ -z "$VENV" ]; then
  if [ -x .venv/bin/python ]; then VENV=.venv; else VENV=.venv-gpu; fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  ${PYTHON:-python3} -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

cuda_major=12
if command -v nvidia-smi >/dev/null 2>&1; then
  found=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
  [ -n "$found" ] && cuda_major=$found
fi
[ "$cuda_major" -ge 13 ] && trt_pkg="tensorrt-cu13>=10.3,<11" || trt_pkg="tensorrt-cu12>=10.3,<11"
[ "$cuda_major" -ge 13 ] && cuda_pkg="cuda-python>=13,<14" || cuda_pkg="cuda-python>=12.3,<13"

if ! "$PY" -c "import strato, strato_training, onnx, onnxruntime, sklearn, scipy, pytest, pytest_timeout" 2>/dev/null; then
  pip_install numpy httpx typer rich cryptography orjson "onnxruntime>=1.18" "onnx>=1.16" \
    scikit-learn scipy "pytest>=8" "pytest-timeout>=2.3" starlette uvicorn
  pip_install --no-deps -e .
fi
"$PY" -c "import tensorrt" 2>/dev/null || pip_install "$trt_pkg"
"$PY" -c "import cuda" 2>/dev/null || pip_install "$cuda_pkg"

echo "--- device fingerprint"
"$PY" -c "from strato._device import fingerprint, format_fingerprint; print(format_fingerprint(fingerprint()))"

left=$(( BUDGET_S - ($(date +%s) - started) ))
if [ "$left" -lt 60 ]; then
  echo "gpu-check: installs took the budget; only ${left}s left for the tests" >&2
  exit 1
fi
echo "--- tests (${left}s left)"
# tests/training/conftest.py trains with torch; without torch, run the TensorRT test file from a
# staging folder that holds only the torch-free root conftest.
training_tests=tests/training/test_tensorrt_build.py
stage=""
if ! "$PY" -c "import torch" 2>/dev/null; then
  stage=$(mktemp -d)
  cp tests/conftest.py "$training_tests" "$stage/"
  training_tests="$stage/test_tensorrt_build.py"
fi
report=$(mktemp)
set +e
timeout "$left" "$PY" -m pytest -q -rs -p no:cacheprovider --timeout 300 -c pyproject.toml \
  --rootdir . "$training_tests" tests/sdk/test_tensorrt_runtime.py tests/sdk/test_device.py \
  | tee "$report"
status=${PIPESTATUS[0]}
set -e
[ -n "$stage" ] && rm -rf "$stage"
if grep -E "SKIPPED .*(TensorRT is not installed|cuda-python is not installed|no CUDA GPU found)" "$report" >/dev/null; then
  echo "gpu-check: GPU tests were skipped; see the reasons above" >&2
  status=1
fi
rm -f "$report"
exit "$status"
