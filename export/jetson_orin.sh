#!/usr/bin/env bash
# Export recipe for a Jetson Orin (JetPack 6: TensorRT 10, Python 3.10 where onnxsim has no wheel,
# so fad-edge falls back to onnxslim). Run the export on the Jetson itself: a TensorRT engine only
# runs on the GPU and TensorRT version it was built with.
#   CHECKPOINT=runs/small/best NAME=orin bash export/jetson_orin.sh
set -euo pipefail
CHECKPOINT=${CHECKPOINT:?set CHECKPOINT to a checkpoint folder, e.g. runs/small/best}
NAME=${NAME:-orin}
# Opset 18: the newest TensorRT 10's ONNX parser on JetPack 6 accepts for these graphs.
# Clip batch up to 32 (256 frames) covers streaming (1 clip) and offline windows (8 clips).
fad-edge export --checkpoint "$CHECKPOINT" --out "engines/$NAME" --opset 18 --int8 --fp16 --trt --trt-max-clips 32
