#!/usr/bin/env bash
# The GPU check, for a machine lent for minutes: one NVIDIA GPU (H100/H200), x86-64, no network,
# Python 3.12 with a CUDA build of PyTorch, numpy, onnx, onnxruntime (CPU provider), onnxscript,
# opencv-python-headless, typer, rich, safetensors, scipy, scikit-learn, matplotlib, pytest, hypothesis.
# It runs, each step under its own time limit (about 8 minutes in all at most on an H100/H200):
#   1. the CUDA tests (pytest -m "cuda or gpu": CUDA graphs against the CPU, FP16, compiled FP16,
#      threads, the stream, training and resuming on the GPU, evaluation);
#   2. fad-edge bench --device cuda twice: FAD's plain GPU backends at 8, 64, 256 and 1024 frames with
#      batch throughput (gpu_bench), then the compiled FP16 channels-last graphs beside the plain ones
#      with the replicas on the same GPU and ListenerStream on the faster of the two
#      (gpu_bench_compiled; its networks compile first, tens of seconds each). Each run's ratios are
#      its own; the summary takes the best run for each target;
#   3. a GPU training of the paper's sizes (96 px) with the short-run recipe (preset paper-quick;
#      FAD_GPU_CHECK_PRESET=paper trains the paper's own recipe) on the demo's amount of synthetic data,
#      350 steps or 70 s, whichever comes first, and its held-out L2 against the Median baseline;
#   4. only where `import tensorrt` works: TensorRT engines of the trained model and the TensorRT test
#      (a few minutes more).
# Opt-in steps (each adds a minute or more): FAD_GPU_CHECK_PROFILE=1, where the FP16 graphs' time goes
# at 8, 64 and 1024 frames and one ReactFace-like online call against one FAD call at 256 frames
# (bench/gpu_profile.py); FAD_GPU_CHECK_COMPILE=1, the compiled graphs profiled beside plain FP16;
# FAD_GPU_CHECK_PACE=1, the pace of training steps under the settings that could slow them
# (bench/gpu_train_profile.py: the small preset at the demo's batch, which times the demo's training:
# its pretraining and encoding, then 350 FAD steps at the measured pace; and the paper preset at 32
# windows with cuDNN deterministic or not).
# FAD_GPU_CHECK_ONLY=tests,bench,train runs only the named parts; FAD_GPU_CHECK_TRAIN_S=300 sets the training's
# limit (a longer training where a lease leaves time after the check).
# A failing step is recorded and the next one runs; the script exits non-zero if any step failed.
# FAD_GPU_CHECK_TOTAL_S (465 on a GPU) bounds the whole check: a step gets at most the time left.
# Results go to bench/results/ (or $FAD_GPU_CHECK_OUT): gpu_check.txt (the log, naming the GPU),
# gpu_bench.{json,png}, gpu_bench_compiled.{json,png}, gpu_eval.{json,md}, gpu_summary.json
# (bench/gpu_summary.py: each GPU target with its measured figure), and with the opt-in steps
# gpu_profile.json, gpu_compiled.json and gpu_train_profile.json.
#
# Packages the machine lacks come from wheels in .whl/ at the repository root (git ignores it),
# installed with pip --no-index into .whl/site (put first on PYTHONPATH; nothing else is changed).
# The check needs soxr (the audio features), soundfile (reading the synthetic sessions' wav) with
# cffi and pycparser, and dtaidistance (the evaluation's FRDist): the versions the project is tested with.
# Fill .whl/ on a machine with network:
#   for pkg in soxr==1.1.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 dtaidistance==2.5.1 \
#              onnxslim==0.1.98 onnxconverter-common==1.16.0; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl "$pkg"
#   done
# onnxslim and onnxconverter-common serve the exports (TensorRT engines); onnxruntime-gpu (to time
# ort-cuda/ort-trt) and tensorrt-cu12 with cuda-python are optional: each part runs only where its
# imports work.
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
# The whole check's time: a step starts only with time left and gets at most what is left, so the check
# ends within it whatever its steps' own limits add up to (each step may take --kill-after's 10 s more).
TOTAL_S=${FAD_GPU_CHECK_TOTAL_S:-$([ "$DEVICE" = cpu ] && echo 1800 || echo 465)}

say() { echo "== $*" | tee -a "$LOG"; }

# step NAME SECONDS COMMAND...: run under a time limit, log it, record a failure and carry on.
# With UNTIL_LIMIT=1 the limit is the plan (the training runs until it), not a failure.
step() {
  local name=$1 budget=$2 rc=0 begin=$SECONDS left
  shift 2
  left=$((TOTAL_S - (SECONDS - STARTED)))
  if [ "$left" -lt 10 ]; then
    say "$name: not run, the check's ${TOTAL_S}s are spent"
    FAILED+=("$name")
    return 0
  fi
  [ "$budget" -gt "$left" ] && budget=$left
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

# This call's own results go first, so that a step that fails before writing leaves no earlier figures for
# the summary to read as this run's (a second call with FAD_GPU_CHECK_ONLY keeps the other parts' files).
wants() { [ -z "${FAD_GPU_CHECK_ONLY:-}" ] || [[ ",$FAD_GPU_CHECK_ONLY," == *",$1,"* ]]; }
STALE=(gpu_summary.json)
wants bench && STALE+=(gpu_bench.json gpu_bench.png gpu_bench_compiled.json gpu_bench_compiled.png)
wants bench && [ "${FAD_GPU_CHECK_PROFILE:-0}" = 1 ] && STALE+=(gpu_profile.json)
wants bench && [ "${FAD_GPU_CHECK_COMPILE:-0}" = 1 ] && STALE+=(gpu_compiled.json)
wants train && STALE+=(gpu_eval.json gpu_eval.md)
wants train && [ "${FAD_GPU_CHECK_PACE:-0}" = 1 ] && STALE+=(gpu_train_profile.json)
for name in "${STALE[@]}"; do rm -f "$OUT/$name"; done

# --- 0. wheels and the machine's record -----------------------------------------------------------
if compgen -G ".whl/*.whl" > /dev/null; then
  say "installing $(ls .whl/*.whl | wc -l) carried wheels into .whl/site"
  mkdir -p .whl/site
  # pip checks each wheel's tags against this Python; wheels that do not fit (the CPU dry run on another
  # Python, say) are left out, and the steps run on the packages already installed.
  if "$PY" -m pip install --quiet --no-index --no-deps --upgrade --target .whl/site .whl/*.whl >> "$LOG" 2>&1; then
    export PYTHONPATH="$ROOT/.whl/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    say "the carried wheels do not install on this Python (see the log); running without them"
  fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
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
  PACE=(--steps 14 --plumbing --variants 0,1,4,5)
  TRAIN_PRESET=tiny
  TRAIN=(--epochs 1 --max-steps 10 --batch-size 4)
  BENCH=(--preset tiny --frames 8 --runs 1 --throughput-frames 16 --pipelines fad --no-stream)
  # torch.compile is timed on a GPU only: here the second run checks the rest of its plumbing.
  BENCH_COMPILED=(--preset tiny --frames 8 --runs 1 --throughput-frames 16 --deca-batch 2 --replica-budget 2
                  --replica-max-frames 8 --backends cuda-fp16-cl)
  PROFILE=(--frames 16 --small 8)
  COMPILED=(--no-reactface --small 8 --throughput 16 --runs 2)
  LIMITS=(test=120 bench=300 bench_compiled=420 profile=120 compiled=300 synth=60 pace=300 train=120 evaluate=120
          trt=60)
else
  # The demo's amount of data: 96 speakers of 20 s (the CPU demo's held-out figures come from it).
  SYNTH=(--sessions 96 --seconds 20 --image-size 96)
  PACE=(--steps 22 --variants 0,4,5)
  # The paper's sizes with the short-run recipe (`paper-quick`): the paper's own recipe left the expression
  # at the Median's L2 after 300 s on an H200 (the third check). The demo's step budget and schedule (350
  # steps of windows of 8 clips; 8 windows a step where the demo takes 4), so the learning rate has decayed
  # when it ends; if the limit stops it first, the last checkpoint (every 50 steps) is evaluated.
  TRAIN_PRESET=paper-quick
  TRAIN=(--epochs 100 --max-steps 350 --batch-size 8 --clips-per-item 8 --workers 8 --checkpoint-every 50)
  # FAD's plain variants: 35 s on an H200 (the third check).
  BENCH=(--frames 8,64,256,1024 --runs 10 --threads 8 --throughput-frames 1024,4096 --pipelines fad --no-stream)
  # The compiled graphs beside the plain channels-last ones, the replicas and the stream in the same run.
  BENCH_COMPILED=(--frames 8,64,256 --runs 10 --threads 8 --replica-budget 2 --replica-max-frames 256
                  --throughput-frames 4096 --backends cuda-fp16-cl,cuda-fp16-cl-compiled)
  PROFILE=(--frames 256 --small 8,64,1024)
  # The compiled FP16 graphs, timed at a stream's sizes and at 4096 (each compiles its networks).
  COMPILED=(--no-reactface --small 8,64,256 --throughput 4096)
  # 130 + 45 + 160 + 15 + 70 + 50 s = 7.8 minutes at most, TensorRT and the opt-in steps aside. The third
  # H200 check (2026-11-28) took 350 s: the plain bench 35 s, the compiled one 134 s, the evaluation 36 s.
  # Its tests outran 95 s: in 8 processes the compiled test, compiling the paper networks from a cold cache
  # beside seven other workers, and the runner's thread test had not ended; the other 19 had.
  # The training's 70 s hold the start, the prosody branch's pretraining (1000 small steps) and FAD's 350
  # steps: on the 2-core CPU the same training took 22 minutes.
  LIMITS=(test=130 bench=45 bench_compiled=160 profile=45 compiled=210 synth=15 pace=55 train=70 evaluate=50
          trt=240)
fi
# A longer training, where a lease leaves time for one after the check (FAD_GPU_CHECK_TRAIN_S=150).
[ -n "${FAD_GPU_CHECK_TRAIN_S:-}" ] && LIMITS+=("train=$FAD_GPU_CHECK_TRAIN_S")
# The last entry for a name wins.
limit() { local entry found=; for entry in "${LIMITS[@]}"; do [ "${entry%%=*}" = "$1" ] && found=${entry#*=}; done
          echo "$found"; }

# --- 1. the CUDA tests ----------------------------------------------------------------------------
# Every test marked cuda or gpu, in 8 processes where pytest-xdist is installed (they share the GPU; their
# CPU references take most of the time), each named as it ends (-v), so a time limit still shows which failed.
# test_generate reads MP4 through PyAV, which such a machine lacks: it holds no CUDA test.
PARALLEL=()
"$PY" -c "import xdist" > /dev/null 2>&1 && PARALLEL=(-n 8)
if wants tests; then
  # The compiled test (tens of seconds of compiling, in its own process) fills Inductor's cache for the bench.
  # Two CPU threads a worker: eight workers of all 16 cores each slowed their CPU references. The TensorRT
  # test runs in step 4, where TensorRT is installed.
  OMP_NUM_THREADS=2 step "CUDA tests" "$(limit test)" "$PY" -m pytest -v --tb=short -p no:cacheprovider \
    -m "cuda or gpu" -rfEs --durations=8 \
    "${PARALLEL[@]}" tests/ --ignore=tests/test_generate.py --ignore=tests/test_tensorrt.py
fi

# --- 2. the bench on the GPU ----------------------------------------------------------------------
if wants bench; then
  step "bench" "$(limit bench)" "${FAD[@]}" bench --device "$DEVICE" "${BENCH[@]}" --out "$OUT/gpu_bench"
  step "bench compiled" "$(limit bench_compiled)" "${FAD[@]}" bench --device "$DEVICE" "${BENCH_COMPILED[@]}" \
    --out "$OUT/gpu_bench_compiled"
  if [ "${FAD_GPU_CHECK_PROFILE:-0}" = 1 ]; then
    # Where a small call's time goes, and why the ReactFace/FAD ratio is what it is.
    step "profile" "$(limit profile)" "$PY" bench/gpu_profile.py --device "$DEVICE" "${PROFILE[@]}" \
      --out "$OUT/gpu_profile.json"
  fi
  if [ "${FAD_GPU_CHECK_COMPILE:-0}" = 1 ]; then
    # torch.compile's kernels inside the CUDA graphs, timed and profiled beside plain FP16 with the error between
    # them (plain FP16 is checked against the CPU by the CUDA tests; `pytest -m compile` checks the compiled runner).
    step "compiled FP16" "$(limit compiled)" "$PY" bench/gpu_profile.py --device "$DEVICE" "${COMPILED[@]}" \
      --compiled --out "$OUT/gpu_compiled.json"
  fi
fi

# --- 3. a GPU training of the paper's sizes (and, when asked, the pace of training steps) ----------
DATA=$SCRATCH/data
RUN=$SCRATCH/run
CHECKPOINT=$RUN/best
if wants train; then
  step "synthetic data" "$(limit synth)" "${FAD[@]}" synth --out "$DATA" "${SYNTH[@]}"
  if [ "${FAD_GPU_CHECK_PACE:-0}" = 1 ]; then
    # Steps per second under the settings that could slow a GPU step (bench/gpu_train_profile.py).
    step "training pace" "$(limit pace)" "$PY" bench/gpu_train_profile.py --data "$DATA" --device "$DEVICE" \
      "${PACE[@]}" --out "$OUT/gpu_train_profile.json"
  fi
  # The paper preset trains in cuDNN's benchmark mode where the pace step measured it over 10% faster.
  PAPER_FLAGS=()
  if "$PY" - "$OUT/gpu_train_profile.json" > /dev/null 2>&1 <<'EOF'; then PAPER_FLAGS=(--no-deterministic); fi
import json, sys
pace = {v["variant"]: v["steps_per_s"] for v in json.load(open(sys.argv[1]))["variants"]}
sys.exit(0 if pace["paper x32, --no-deterministic"] > 1.1 * pace["paper x32, defaults"] else 1)
EOF
  FAD_GPU_CHECK_PRESET=${FAD_GPU_CHECK_PRESET:-$TRAIN_PRESET}
  say "training preset: $FAD_GPU_CHECK_PRESET"
  say "paper-preset training flags: ${PAPER_FLAGS[*]:-(defaults)}"
  # The training is stopped by its limit unless it ends first; it keeps a resumable checkpoint (every 50
  # steps on a GPU) and the best one at each validation, so a stop loses little.
  UNTIL_LIMIT=1 step "paper-preset training" "$(limit train)" "${FAD[@]}" train --data "$DATA" --out "$RUN" \
    --preset "$FAD_GPU_CHECK_PRESET" "${TRAIN[@]}" "${PAPER_FLAGS[@]}" --device "$DEVICE"
  [ -d "$CHECKPOINT" ] || CHECKPOINT=$RUN/checkpoint
  if [ -d "$CHECKPOINT" ]; then
    say "evaluating $(basename "$CHECKPOINT")"
    step "evaluation" "$(limit evaluate)" "${FAD[@]}" evaluate --checkpoint "$CHECKPOINT" --data "$DATA" \
      --out "$OUT/gpu_eval" --device "$DEVICE"
  else
    say "no checkpoint to evaluate"
    FAILED+=("evaluation")
  fi
fi

# --- 4. TensorRT, where it is installed -----------------------------------------------------------
if [ "$TENSORRT" = yes ] && [ -d "$CHECKPOINT" ]; then
  step "TensorRT engines" "$(limit trt)" "${FAD[@]}" export --checkpoint "$CHECKPOINT" --out "$SCRATCH/engines" --trt
  step "TensorRT test" "$(limit trt)" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_tensorrt.py
elif [ "$TENSORRT" = yes ]; then
  say "TensorRT parts skipped (no trained checkpoint to build engines of)"
else
  say "TensorRT parts skipped (import tensorrt fails here)"
fi

"$PY" bench/gpu_summary.py "$OUT" 2>&1 | tee -a "$LOG" || FAILED+=("summary")
say "done in $((SECONDS - STARTED))s; results in $OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then
  say "failed: ${FAILED[*]}"
  exit 1
fi
say "every step passed"
