#!/usr/bin/env bash
# The GPU check, for a machine lent for minutes: one NVIDIA GPU (H100/H200), x86-64, no network,
# Python 3.12 with a CUDA build of PyTorch, numpy, onnx, onnxruntime (CPU provider), onnxscript,
# opencv-python-headless, typer, rich, safetensors, scipy, scikit-learn, matplotlib, pytest, hypothesis.
# It runs, each step under its own time limit (about 8 minutes in all on an H100/H200):
#   1. the CUDA tests (pytest -m "cuda or gpu": CUDA graphs against the CPU, FP16, threads, the stream);
#   2. a GPU training of the paper preset (96 px) on synthetic data, 3 minutes at most, and its
#      held-out L2 against the Median baseline;
#   3. fad-edge bench --device cuda --frames 8,64,256,1024 (FAD's GPU backends, the replicas on the
#      same GPU, batch throughput);
#   4. only where `import tensorrt` works: TensorRT engines of the trained model and the TensorRT test
#      (a few minutes more).
# A failing step is recorded and the next one runs; the script exits non-zero if any step failed.
# Results go to bench/results/: gpu_check.txt (the log, naming the GPU), gpu_eval.{json,md},
# gpu_bench.{json,png}.
#
# Packages the machine lacks come from wheels in .whl/ at the repository root (git ignores it),
# installed with pip --no-index into .whl/site (put first on PYTHONPATH; nothing else is changed).
# The check needs soxr (the audio features) and soundfile (reading the synthetic sessions' wav),
# plus cffi and pycparser where soundfile's cffi is missing (the versions the project is tested with).
# Fill .whl/ on a machine with network:
#   for pkg in soxr==1.1.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl "$pkg"
#   done
# Optional: onnxconverter-common==1.16.0 and onnxslim==0.1.98 (exports inside the bench), onnxruntime-gpu with the
# CUDA 12 runtime wheels it loads (nvidia-cublas-cu12, nvidia-cudnn-cu12, nvidia-cufft-cu12,
# nvidia-curand-cu12, nvidia-cuda-runtime-cu12) to time ort-cuda/ort-trt, and tensorrt-cu12 plus
# cuda-python for the TensorRT steps. Each runs only where its imports work.
#
#   bash bench/gpu_check.sh                          # on the GPU machine
#   FAD_GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh # every step tiny on the CPU: checks the plumbing;
#                                    # results go to $FAD_GPU_CHECK_OUT (default: /tmp/fad-gpu-check-cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
DEVICE=${FAD_GPU_CHECK_DEVICE:-cuda}
SCRATCH=$(mktemp -d -t fad-gpu-check.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
if [ "$DEVICE" = cpu ]; then
  OUT=${FAD_GPU_CHECK_OUT:-${TMPDIR:-/tmp}/fad-gpu-check-cpu}  # not bench/results: these are no figures
else
  OUT=${FAD_GPU_CHECK_OUT:-bench/results}
fi
mkdir -p "$OUT"
LOG=$OUT/gpu_check.txt
: > "$LOG"
FAILED=()
STARTED=$SECONDS

say() { echo "== $*" | tee -a "$LOG"; }

# step NAME SECONDS COMMAND...: run under a time limit, log it, record a failure and carry on.
# With UNTIL_LIMIT=1 the limit is the plan (the training runs until it), not a failure.
step() {
  local name=$1 budget=$2 rc=0 begin=$SECONDS
  shift 2
  say "$name (limit ${budget}s)"
  timeout --kill-after=10 "$budget" "$@" 2>&1 | tee -a "$LOG" || rc=$?
  if [ "$rc" -eq 0 ]; then
    say "$name: ok in $((SECONDS - begin))s"
  elif [ "$rc" -eq 124 ] && [ "${UNTIL_LIMIT:-0}" = 1 ]; then
    say "$name: ran for its ${budget}s, as planned"
  else
    [ "$rc" -eq 124 ] && say "$name: stopped by its ${budget}s limit" || say "$name: FAILED (exit $rc)"
    FAILED+=("$name")
  fi
  return 0
}

FAD=("$PY" -m fad_edge)  # the CLI, as a command timeout can run

# --- 0. wheels and the machine's record -----------------------------------------------------------
if compgen -G ".whl/*.whl" > /dev/null; then
  say "installing $(ls .whl/*.whl | wc -l) carried wheels into .whl/site"
  mkdir -p .whl/site
  if ! "$PY" -m pip install --quiet --no-index --no-deps --upgrade --target .whl/site .whl/*.whl >> "$LOG" 2>&1; then
    say "pip could not install them here; unpacking them instead (a wheel is a zip laid out for site-packages)"
    for wheel in .whl/*.whl; do "$PY" -m zipfile -e "$wheel" .whl/site || FAILED+=("wheels"); done
  fi
fi
export PYTHONPATH="$ROOT/.whl/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg

say "fad-edge GPU check on device $DEVICE, $(date -u +%Y-%m-%dT%H:%MZ)"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>&1 | tee -a "$LOG" || true
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG" || FAILED+=("versions")
import importlib.util, platform
import onnxruntime, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version() if torch.cuda.is_available() else None)
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
for name in ("soxr", "soundfile", "av", "onnxslim", "onnxconverter_common", "cuda", "pycuda"):
    print(f"  {name}: {'yes' if importlib.util.find_spec(name) else 'no'}")
EOF
TENSORRT=no
"$PY" -c "import tensorrt; assert hasattr(tensorrt, 'Builder')" > /dev/null 2>&1 && TENSORRT=yes
say "TensorRT: $TENSORRT"

# Sizes: the real ones on a GPU, tiny ones on the CPU (the plumbing only).
if [ "$DEVICE" = cpu ]; then
  SYNTH=(--sessions 6 --seconds 4 --image-size 48)
  TRAIN=(--preset tiny --epochs 1 --max-steps 10 --batch-size 4)
  BENCH=(--preset tiny --frames 8 --runs 1 --throughput-frames 16 --deca-batch 2 --replica-budget 2
         --replica-max-frames 8)
  LIMITS=(test=120 synth=60 train=120 evaluate=120 bench=420 trt=60)
else
  SYNTH=(--sessions 40 --seconds 15 --image-size 96)
  TRAIN=(--preset paper --epochs 100 --checkpoint-every 100)
  BENCH=(--frames 8,64,256,1024 --runs 10 --replica-budget 5 --replica-max-frames 256)
  # 65 + 35 + 170 + 45 + 145 s = 7.7 minutes at most, TensorRT aside.
  LIMITS=(test=65 synth=35 train=170 evaluate=45 bench=145 trt=240)
fi
limit() { local entry; for entry in "${LIMITS[@]}"; do [ "${entry%%=*}" = "$1" ] && echo "${entry#*=}"; done; }
# --device for train and evaluate where the CLI has it (it is the default device's choice otherwise).
has_device_option() { local help; help=$("${FAD[@]}" "$1" --help 2>/dev/null || true); [[ $help == *--device* ]]; }
DEVICE_ARG=()
has_device_option train && DEVICE_ARG=(--device "$DEVICE")
[ "${#DEVICE_ARG[@]}" -gt 0 ] || say "this fad-edge train has no --device: it trains on its default device"

# --- 1. the CUDA tests ----------------------------------------------------------------------------
step "CUDA tests" "$(limit test)" "$PY" -m pytest -q -p no:cacheprovider -m "cuda or gpu" \
  tests/test_cuda_runner.py tests/test_tensorrt.py

# --- 2. a GPU training of the paper preset, and its held-out L2 against the Median baseline -------
DATA=$SCRATCH/data
RUN=$SCRATCH/run
step "synthetic data" "$(limit synth)" "${FAD[@]}" synth --out "$DATA" "${SYNTH[@]}"
# The training is stopped by its limit (3 minutes) unless it ends first; it keeps a checkpoint
# every 100 steps and the best one at each epoch's validation, so a stop loses little.
UNTIL_LIMIT=1 step "training" "$(limit train)" "${FAD[@]}" train --data "$DATA" --out "$RUN" "${TRAIN[@]}" \
  "${DEVICE_ARG[@]}"
CHECKPOINT=$RUN/best
[ -d "$CHECKPOINT" ] || CHECKPOINT=$RUN/checkpoint
if [ -d "$CHECKPOINT" ]; then
  say "evaluating $(basename "$CHECKPOINT")"
  EVAL_DEVICE=()
  has_device_option evaluate && EVAL_DEVICE=(--device "$DEVICE")
  step "evaluation" "$(limit evaluate)" "${FAD[@]}" evaluate --checkpoint "$CHECKPOINT" --data "$DATA" \
    --out "$OUT/gpu_eval" "${EVAL_DEVICE[@]}"
  "$PY" - "$OUT/gpu_eval.json" <<'EOF' 2>&1 | tee -a "$LOG" || true
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
fad, median = rows["FAD"]["all"]["L2"], rows["Median"]["all"]["L2"]
print(f"held-out L2 (all 56): FAD {fad:.3f}, Median {median:.3f}: FAD/Median = {fad / median:.2f}")
EOF
else
  say "no checkpoint to evaluate"
  FAILED+=("evaluation")
fi

# --- 3. the bench on the GPU ----------------------------------------------------------------------
step "bench" "$(limit bench)" "${FAD[@]}" bench --device "$DEVICE" "${BENCH[@]}" --out "$OUT/gpu_bench"

# --- 4. TensorRT, where it is installed -----------------------------------------------------------
if [ "$TENSORRT" = yes ] && [ -d "$CHECKPOINT" ]; then
  step "TensorRT engines" "$(limit trt)" "${FAD[@]}" export --checkpoint "$CHECKPOINT" --out "$SCRATCH/engines" --trt
  step "TensorRT test" "$(limit trt)" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_tensorrt.py
else
  say "TensorRT parts skipped (import tensorrt fails here)"
fi

say "done in $((SECONDS - STARTED))s; results in $OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then
  say "failed: ${FAILED[*]}"
  exit 1
fi
say "every step passed"
