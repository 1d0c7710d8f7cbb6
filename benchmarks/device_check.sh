#!/usr/bin/env bash
# Issue 15's device measurements in one call, as JSON lines under $OUT (README "Speed": "The device check").
#
#   On the device machine (repo root; $OUT is set there):   bash benchmarks/device_check.sh
#   CPU dry run of every step with tiny sizes:
#     OUT=/tmp/check DEVICE=cpu SIZE=64 BATCHES=1,2 PRECISIONS=fp32,bf16 PRESETS="centernet_r18 cornernet_hg52" \
#       WARMUP=0 ITERS=1 TRAIN_BATCH=2 WORKERS=0 bash benchmarks/device_check.sh
#
# Steps (each one's failure is logged to $OUT/failures.txt and the next step still runs):
#   1. environment (torch, device) -> env.json
#   2. pointdet benchmark: every preset of $PRESETS end to end at batches $BATCHES and precisions $PRECISIONS,
#      its training step, the torchvision peers (with the first preset) and the bare ResNet-18 features -> speed.jsonl
#   3. the data pipeline alone, CPU loader and data.decode_on_device, raccoon JPEGs -> speed.jsonl
#   4. soft-NMS before / after -> soft_nms.jsonl
#   5. eager vs compiled (CUDA graphs) CenterNet predict -> compiled.jsonl
#   6. the GPU-only tests (pytest -m gpu) -> gpu_tests.txt
set -uo pipefail

OUT=${OUT:-device_check_out}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-512}
BATCHES=${BATCHES:-1,8,32}
PRECISIONS=${PRECISIONS:-fp32,bf16,fp16}
PRESETS=${PRESETS:-"centernet_r18 centernet_r50 centernet_dla34 centripetalnet_hg52 cornernet_hg52 reppoints_r50_fpn reppoints_v2_r50_fpn lsnet_r50_fpn centernet_pose_dla34"}
PEERS=${PEERS:-fcos_resnet50_fpn,retinanet_resnet50_fpn}
WARMUP=${WARMUP:-5}
ITERS=${ITERS:-20}
WORKERS=${WORKERS:-16}
TRAIN_BATCH=${TRAIN_BATCH:-}  # training-step batch of every preset (default: the preset's own)
DATA_IMAGES=${DATA_IMAGES:-pointdet/data/raccoon_data}  # the shipped raccoon photos (JPEG)
mkdir -p "$OUT"
: > "$OUT/failures.txt"

step() {  # step NAME OUTPUT_FILE COMMAND...: run it, append its stdout JSON lines to OUTPUT_FILE, log a failure
    local name=$1 output=$2
    shift 2
    echo "== $name" >&2
    if ! "$@" >> "$output" 2>> "$OUT/stderr.txt"; then
        echo "$name: exit $?" >> "$OUT/failures.txt"
    fi
}

if ls wheels/*.whl > /dev/null 2>&1; then  # a carried pycocotools wheel (the device image has none)
    pip install --no-index --quiet wheels/*.whl || echo "wheels: pip install failed" >> "$OUT/failures.txt"
fi

step env "$OUT/env.json" python -c "import json, torch, torchvision
cuda = torch.cuda.is_available()
print(json.dumps({'torch': torch.__version__, 'torchvision': torchvision.__version__, 'cuda': torch.version.cuda,
                  'device': torch.cuda.get_device_name() if cuda else 'cpu', 'cudnn': torch.backends.cudnn.version()}))"

common=(--size "$SIZE" --batches "$BATCHES" --precisions "$PRECISIONS" --device "$DEVICE"
        --warmup "$WARMUP" --iters "$ITERS" --workers "" --coco-eval-images 0 ${TRAIN_BATCH:+--train-batch "$TRAIN_BATCH"})
peers=$PEERS
for preset in $PRESETS; do
    step "benchmark $preset" "$OUT/speed.jsonl" python -m pointdet benchmark "$preset" "${common[@]}" --peers "$peers"
    peers=""  # the peers and their timings once, in the first preset's call
done

train_json=$DATA_IMAGES/annotations/instances_train.json
step "data pipeline" "$OUT/speed.jsonl" python -m pointdet benchmark centernet_r18 --size "$SIZE" --batches "" \
    --precisions "" --peers "" --train-batch 1 --device "$DEVICE" --warmup 0 --iters 1 --coco-eval-images 0 \
    --workers "$WORKERS" --data-preset centernet_r18 --data-batches 20 --data-json "$train_json" \
    --data-images "$DATA_IMAGES/images" --data-decode-on-device

step "soft-NMS" "$OUT/soft_nms.jsonl" python benchmarks/soft_nms.py --device "$DEVICE" --batches "$BATCHES" \
    --iters "$ITERS"

for precision in ${PRECISIONS//,/ }; do
    step "compiled predict $precision" "$OUT/compiled.jsonl" python benchmarks/compiled_predict.py \
        --device "$DEVICE" --size "$SIZE" --batches "$BATCHES" --precisions "$precision" --warmup "$WARMUP" --iters "$ITERS"
done

if [ "$DEVICE" = cuda ]; then
    step "gpu tests" "$OUT/gpu_tests.txt" python -m pytest -q -m gpu tests/test_compiled_predict.py tests/test_device_decode.py
fi
grep -h '^{' "$OUT"/*.jsonl > "$OUT/all.jsonl" 2> /dev/null
echo "records: $(wc -l < "$OUT/all.jsonl"); failures: $(wc -l < "$OUT/failures.txt") (see $OUT/failures.txt)" >&2
