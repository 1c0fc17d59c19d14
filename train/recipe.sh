#!/usr/bin/env bash
# The recipe of the bundled default models: phantoms -> HDF5 -> train -> export -> evaluate -> model cards.
# Runs on the CPU (2 cores: about an hour of training, 45 min of data preparation and 25 min of
# evaluation); every step is a litseg CLI. Steps whose outputs exist are skipped, so an interrupted run
# can be resumed. Knobs are environment variables.
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-build/models}
# 80 training phantoms (64 train / 16 validation): with 40, validation tumor Dice stalled at about 0.75
# while the training loss kept falling; 80 in the same steps raised tumor Dice per case 0.44 -> 0.60 (seeds
# 9000-9009).
# 160 did not help further (0.69 vs 0.69 per case on 30 held-out phantoms, seeds 9000-9029) and costs 35 min
# more data preparation and 10 min more validation.
CASES=${CASES:-80}
# 30 held-out phantoms (seeds 9000-9029): with 10, the case mix alone moved the tumor Dice per case by about
# 0.1 (the same model: 0.60 on seeds 9000-9009, 0.73 on 9010-9029)
TEST_CASES=${TEST_CASES:-30}
# MEMBERS > 1 makes the liver-tumor model an ensemble of U-Nets trained alike with seeds 0, 1, ... (each
# with its own validation split and initialisation), exported as one ONNX graph that averages their softmax
# probabilities (nnU-Net's fold ensemble); each member costs the training hour again and multiplies the
# inference time. Measured on 20 fresh phantoms (seeds 8000-8019, never used for training or testing),
# tumor Dice per case: one network 0.604; with a seed-1 member (0.570 alone) 0.595; so the default is one.
MEMBERS=${MEMBERS:-1}
# The network draws lesions too small (it calls enhancing rims and partial-volume borders liver: tumor RVD
# -0.33); litseg-run grows tumors by this margin within the liver (written into the model's metadata).
# Chosen on the same 20 fresh phantoms from 0/1/2/3 mm: tumor Dice per case 0.604/0.621/0.631/0.626,
# global 0.822/0.845/0.859/0.854.
TUMOR_MARGIN_MM=${TUMOR_MARGIN_MM:-2}
# Test-time augmentation of the liver-tumor model: litseg-run averages the unshifted pass and one with the
# 256x256 input moved by this many pixels in y and x (the U-Net's 16-pixel pooling grid makes its output
# depend on where a lesion falls). On the same 20 fresh phantoms, with the 2 mm margin: tumor Dice per case
# 0.631 -> 0.640 (4 shifts: 0.641), lesion recall 0.385 -> 0.404; twice the inference time. 0 turns it off.
TTA_SHIFT_PX=${TTA_SHIFT_PX:-8}
THREADS=${THREADS:-2}
VERSION=${VERSION:-0.4.0}
MODELS=${MODELS:-runtime/models}
# Patch training (nnU-Net style): 160x160 patches cost a quarter of a whole 256x256 slice per step, and
# two thirds of them are centred on the rarest class the slice shows (tumor, else liver), so the tumor
# class is seen often enough to be learnt within the CPU budget. The poly schedule decays the lr to 0 over
# the patch epochs; one whole-slice epoch at a low lr follows. The liver model starts from the liver-tumor network (all layers but the head) and is
# fine-tuned for the liver task, which beat a separately trained base-8 liver model (0.95 Dice) in a
# fifth of the time. Training steps run in bf16 with channels-last on CPUs with native bf16 (AMX /
# AVX512-BF16: 2.4x the fp32 step rate), which buys 6 x 12000 patches in the hour instead of 5 x 6000.
BASE=${BASE:-16}
PATCH=${PATCH:-160}
PATCHES=${PATCHES:-12000}  # per epoch
EPOCHS_1=${EPOCHS_1:-6}   # liver-tumor, patches, lr $LR_1 poly
SLICES_2=${SLICES_2:-1200}  # liver-tumor, one more epoch: whole slices at $LR_2
EPOCHS_LIVER=${EPOCHS_LIVER:-2}
PATCHES_LIVER=${PATCHES_LIVER:-3000}
LR_1=${LR_1:-5e-4}
LR_2=${LR_2:-5e-5}
LR_LIVER=${LR_LIVER:-2e-4}
# On a CUDA GPU (AMP is automatic), more capacity and steps fit in the same hour, e.g.
# BASE=32 PATCHES=40000 make models; the run folders in $WORK must not hold a CPU run.
export NUMBA_NUM_THREADS=$THREADS

mkdir -p "$WORK" "$MODELS"
[ -f "$WORK/train/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/train" --cases "$CASES" --seed 1000
[ -f "$WORK/test/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/test" --cases "$TEST_CASES" --seed 9000 --dicom
for task in liver-tumor liver; do
  [ -f "$WORK/$task.h5" ] || "$BIN/litseg-prepare" "$WORK/train" --out "$WORK/$task.h5" --task "$task"
done

epochs_done() {  # run -> epochs in its log (0 without one)
  "$BIN/python" -c "import json,sys;print(len(json.load(open(sys.argv[1]))))" "$WORK/$1/log.json" 2>/dev/null \
    || echo 0
}
train() {  # run task base epochs samples-per-epoch [litseg-train flags]: one phase, resuming the previous one
  [ "$(epochs_done "$1")" -ge "$4" ] && return
  resume=()
  [ -f "$WORK/$1/checkpoint-last.pt" ] && resume=(--resume "$WORK/$1/checkpoint-last.pt")
  "$BIN/litseg-train" --data "$WORK/$2.h5" --out "$WORK/$1" --base "$3" --epochs "$4" \
    --slices-per-epoch "$5" --threads "$THREADS" "${resume[@]}" "${@:6}"
}
member_run() {  # task member -> run folder: run-<task> for the first member, run-<task>-<member> after it
  if [ "$2" -eq 1 ]; then echo "run-$1"; else echo "run-$1-$2"; fi
}
tumor=(--crop "$PATCH" --crop-foreground 0.67 --rare-class-boost 3 --weight-cap 5)
members=()
for m in $(seq 1 "$MEMBERS"); do
  run=$(member_run liver-tumor "$m")
  seed=(--seed $((m - 1)))  # its own validation split and initialisation
  train "$run" liver-tumor "$BASE" "$EPOCHS_1" "$PATCHES" "${tumor[@]}" --lr "$LR_1" --lr-schedule poly "${seed[@]}"
  train "$run" liver-tumor "$BASE" $((EPOCHS_1 + 1)) "$SLICES_2" --rare-class-boost 3 --weight-cap 5 --lr "$LR_2" \
    "${seed[@]}"
  members+=("$WORK/$run/checkpoint-best.pt")
done
# the liver model starts from the best checkpoint of the first liver-tumor member
train run-liver liver "$BASE" "$EPOCHS_LIVER" "$PATCHES_LIVER" --crop "$PATCH" --crop-foreground 0.5 --weight-cap 5 \
  --lr "$LR_LIVER" --lr-schedule poly --init "$WORK/run-liver-tumor/checkpoint-best.pt"

notes() {  # task
  if [ "$1" = liver ]; then
    echo "initialised from the best liver-tumor checkpoint of its first $((EPOCHS_1 + 1)) epochs (all layers but the head);" \
      "epochs 1-$EPOCHS_LIVER: ${PATCH}x${PATCH} patches (half centred on liver), lr $LR_LIVER with poly decay to 0;" \
      "the exported checkpoint is the best by validation liver Dice"
  else
    [ "$MEMBERS" -gt 1 ] && echo -n "each of the $MEMBERS members (seeds 0-$((MEMBERS - 1))): "
    echo "epochs 1-$EPOCHS_1: ${PATCH}x${PATCH} patches (2/3 centred on the rarest class in the slice), lr $LR_1" \
      "with poly decay to 0; epoch $((EPOCHS_1 + 1)): whole slices at lr $LR_2; the exported checkpoint is the best" \
      "by mean foreground validation Dice"
  fi
}
for task in liver-tumor liver; do
  checkpoints=("$WORK/run-$task/checkpoint-best.pt")
  calibrated=()
  if [ "$task" = liver-tumor ]; then
    checkpoints=("${members[@]}")
    calibrated=(--tumor-margin-mm "$TUMOR_MARGIN_MM")
    [ "$TTA_SHIFT_PX" -gt 0 ] && calibrated+=(--tta-shift-px "$TTA_SHIFT_PX")
  fi
  "$BIN/litseg-export" "${checkpoints[@]}" --out "$MODELS/$task.onnx" --version "$VERSION" \
    --name "litseg-$task-phantom" "${calibrated[@]}"
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
  "$BIN/python" -m litseg.train.model_card --task "$task" --work "$WORK" --model "$MODELS/$task.onnx" \
    --out "$MODELS/$task.md" --notes "$(notes "$task")"
done
echo "models and cards in $MODELS"
