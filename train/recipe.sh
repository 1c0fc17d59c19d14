#!/usr/bin/env bash
# The recipe of the bundled default models: phantoms -> HDF5 -> train -> export -> evaluate -> model cards.
# Runs on the CPU (2 cores: about an hour of training, 25 min of data preparation and 10 min of
# evaluation); every step is a litseg CLI. Steps whose outputs exist are skipped, so an interrupted run
# can be resumed. Knobs are environment variables.
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-build/models}
CASES=${CASES:-40}
TEST_CASES=${TEST_CASES:-10}
THREADS=${THREADS:-2}
VERSION=${VERSION:-0.2.0}
MODELS=${MODELS:-runtime/models}
# Patch training (nnU-Net style): 160x160 patches cost a quarter of a whole 256x256 slice per step, and
# two thirds of them are centred on the rarest class the slice shows (tumor, else liver), so the tumor
# class is seen often enough to be learnt within the CPU budget. The poly schedule decays the lr to 0 over
# the patch epochs; a short last phase on whole slices at a low lr matches what inference sees.
BASE_TUMOR=${BASE_TUMOR:-16}
PATCH_EPOCHS_TUMOR=${PATCH_EPOCHS_TUMOR:-5}
PATCHES_TUMOR=${PATCHES_TUMOR:-6000}
SLICES_TUMOR=${SLICES_TUMOR:-1200}
BASE_LIVER=${BASE_LIVER:-8}
PATCH_EPOCHS_LIVER=${PATCH_EPOCHS_LIVER:-3}
PATCHES_LIVER=${PATCHES_LIVER:-5000}
SLICES_LIVER=${SLICES_LIVER:-800}
LR=${LR:-5e-4}
LR_FINE=${LR_FINE:-5e-5}
PATCH=${PATCH:-160}
export NUMBA_NUM_THREADS=$THREADS

mkdir -p "$WORK" "$MODELS"
[ -f "$WORK/train/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/train" --cases "$CASES" --seed 1000
[ -f "$WORK/test/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/test" --cases "$TEST_CASES" --seed 9000 --dicom
for task in liver-tumor liver; do
  [ -f "$WORK/$task.h5" ] || "$BIN/litseg-prepare" "$WORK/train" --out "$WORK/$task.h5" --task "$task"
done

epochs_done() {  # task -> epochs in its log (0 without one)
  "$BIN/python" -c "import json,sys;print(len(json.load(open(sys.argv[1]))))" "$WORK/run-$1/log.json" 2>/dev/null \
    || echo 0
}
train() {  # task base epochs samples-per-epoch [litseg-train flags]: one phase, resuming the previous one
  [ "$(epochs_done "$1")" -ge "$3" ] && return
  resume=()
  [ -f "$WORK/run-$1/checkpoint-last.pt" ] && resume=(--resume "$WORK/run-$1/checkpoint-last.pt")
  "$BIN/litseg-train" --data "$WORK/$1.h5" --out "$WORK/run-$1" --base "$2" --epochs "$3" \
    --slices-per-epoch "$4" --threads "$THREADS" "${resume[@]}" "${@:5}"
}
T=$PATCH_EPOCHS_TUMOR
train liver-tumor "$BASE_TUMOR" "$T" "$PATCHES_TUMOR" --crop "$PATCH" --crop-foreground 0.67 \
  --rare-class-boost 3 --weight-cap 5 --lr "$LR" --lr-schedule poly
train liver-tumor "$BASE_TUMOR" $((T + 1)) "$SLICES_TUMOR" --rare-class-boost 3 --weight-cap 5 --lr "$LR_FINE"
L=$PATCH_EPOCHS_LIVER
train liver "$BASE_LIVER" "$L" "$PATCHES_LIVER" --crop "$PATCH" --crop-foreground 0.5 --weight-cap 5 \
  --lr "$LR" --lr-schedule poly
train liver "$BASE_LIVER" $((L + 1)) "$SLICES_LIVER" --weight-cap 5 --lr "$LR_FINE"

notes() {  # task patch-epochs
  echo "epochs 1-$2: ${PATCH}x${PATCH} patches (2/3 centred on the rarest class in the slice for liver-tumor," \
    "1/2 for liver), lr $LR with poly decay to 0; epoch $(($2 + 1)): whole slices at lr $LR_FINE; the exported" \
    "checkpoint is the best by mean foreground validation Dice"
}
for task in liver-tumor liver; do
  "$BIN/litseg-export" "$WORK/run-$task/checkpoint-best.pt" --out "$MODELS/$task.onnx" --version "$VERSION" \
    --name "litseg-$task-phantom"
  pred="$WORK/pred-$task"
  mkdir -p "$pred"
  for dir in "$WORK"/test/dicom/case-*; do
    n=${dir##*-}
    "$BIN/litseg-run" "$dir" --model "$MODELS/$task.onnx" --out "$WORK/run-out/$task-$n" --overwrite \
      --formats nifti,json --quiet
    cp "$WORK/run-out/$task-$n/labels.nii.gz" "$pred/segmentation-$n.nii.gz"
  done
  mkdir -p "$WORK/ref"
  cp "$WORK"/test/segmentation-*.nii.gz "$WORK/ref/"
  "$BIN/litseg-eval" "$pred" "$WORK/ref" --json "$WORK/eval-$task.json" > /dev/null
  [ "$task" = liver ] && e=$L || e=$T
  "$BIN/python" -m litseg.train.model_card --task "$task" --work "$WORK" --model "$MODELS/$task.onnx" \
    --out "$MODELS/$task.md" --notes "$(notes "$task" "$e")"
done
echo "models and cards in $MODELS"
