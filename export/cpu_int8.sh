#!/usr/bin/env bash
# Export recipe for CPU-only robots (x86 or ARM): FP32 + INT8 graphs for ONNX Runtime, checked on
# a dataset's held-out split when DATA is set (else on fresh synthetic sessions).
#   CHECKPOINT=runs/small/best NAME=cpu bash export/cpu_int8.sh
set -euo pipefail
CHECKPOINT=${CHECKPOINT:?set CHECKPOINT to a checkpoint folder}
NAME=${NAME:-cpu}
fad-edge export --checkpoint "$CHECKPOINT" --out "engines/$NAME" --int8 ${DATA:+--data "$DATA"} --threads "${THREADS:-2}"
fad-edge bench --model "engines/$NAME" --pipelines fad --backends ort,ort-int8 --out "bench/results/$NAME"
