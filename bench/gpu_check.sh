#!/usr/bin/env bash
# For a machine with an NVIDIA GPU and the [trt] extra: build the TensorRT FP16 engines, compare
# them with ONNX Runtime, time them, and run the GPU tests. Results land in bench/results/.
#   pip install '.[trt]' polygraphy   # TensorRT and pycuda from NVIDIA's index
#   bash bench/gpu_check.sh [CHECKPOINT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results
mkdir -p "$OUT"
CHECKPOINT=${1:-}
if [ -z "$CHECKPOINT" ]; then
  # No checkpoint given: a short synthetic training run, enough for engines and timing.
  fad-edge synth --out /tmp/fad-gpu-data --sessions 6 --seconds 10
  fad-edge train --data /tmp/fad-gpu-data --out /tmp/fad-gpu-run --epochs 1 --max-steps 50
  CHECKPOINT=/tmp/fad-gpu-run/best
fi
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv | tee "$OUT/gpu_check_gpu.txt"
python -c "import tensorrt; print('TensorRT', tensorrt.__version__)" | tee -a "$OUT/gpu_check_gpu.txt"

# 1. Engines from the FP16 graphs (strongly typed), with the usual parity table on the CPU first.
fad-edge export --checkpoint "$CHECKPOINT" --out engines/gpu_check --int8 --fp16 --trt | tee "$OUT/gpu_check_export.txt"

# 2. Each FP16 graph in TensorRT against ONNX Runtime FP32 (polygraphy, same random inputs).
for graph in video_encoder audio_encoder elnet_x0 elnet_eps; do
  polygraphy run "engines/gpu_check/$graph.fp16.onnx" --trt --onnxrt \
    --trt-min-shapes "$(python -m fad_edge.export.shapes engines/gpu_check "$graph" min)" \
    --trt-opt-shapes "$(python -m fad_edge.export.shapes engines/gpu_check "$graph" opt)" \
    --trt-max-shapes "$(python -m fad_edge.export.shapes engines/gpu_check "$graph" max)" \
    --atol 1e-2 --rtol 1e-2 | tee "$OUT/gpu_check_polygraphy_$graph.txt"
done

# 3. The GPU tests, then the benchmark with TensorRT beside the CPU backends.
pytest -m gpu -ra tests/test_tensorrt.py | tee "$OUT/gpu_check_tests.txt"
fad-edge bench --frames 8,64,256,1024 --backends torch,ort,ort-int8,trt --out "$OUT/gpu_check"
