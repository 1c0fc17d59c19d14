#!/usr/bin/env bash
# The recipe of the bundled models (0.7.0): phantoms + real CT slices with real tumour labels -> HDF5 -> train ->
# export -> post-processing chosen on the real selection volumes -> evaluation through the shipped path on sets
# never used for a choice -> model cards. Every step is a litseg CLI or module; steps whose outputs exist are
# skipped and training resumes from its last checkpoint (bit for bit the uninterrupted run), so an interrupted
# recipe is run again to go on. Knobs are environment variables. docs/training.md says which patient is where.
# Smoke run (tiny settings, nothing in runtime/models):
#   WORK=/tmp/litseg-smoke MODELS=/tmp/litseg-smoke/models CASES=4 NEG_TRAIN_CASES=2 TEST_CASES=2 NEG_CASES=2 \
#   EPOCHS=1 PATCHES=32 EPOCHS_LIVER=1 PATCHES_LIVER=16 BASELINE=0 bash train/recipe.sh
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-build/models}
# Real slices (never copied into the repository; ../shared/data/README.md has their provenance and licences).
# Which patient may be used for what is fixed in litseg.train.data.patients (MSD: train / selection / report /
# excluded) and litseg.train.data.lits_tumor (test / selection / train volumes); the HDF5 sets hold only
# training and selection patients.
SHARED=${SHARED:-../shared/data}
MSD=${MSD:-$SHARED/msd-liver-slices}
IRCAD=${IRCAD:-$SHARED/ircad-liver-slices}
LITS=${LITS:-$SHARED/lits-tumor-slices}
# The models' HU window: MSD slices keep HU only within 0..255 (saturated), so the window lies inside it.
WINDOW=${WINDOW:-0,255}
# Shares of each epoch's samples: phantoms (hard negatives, liver-free regions, tumour shapes), lits-tumor (real
# liver and tumour labels, real liver-free slices), MSD (real livers, liver and tumour merged: marginal loss).
MIX=${MIX:-0.3,0.4,0.3}
# Training phantoms: CASES of a mostly abdominal mix plus NEG_TRAIN_CASES without liver (neck, head, chest: the
# 0.6 models still found 44-95 mL of "liver" in neck phantoms), labelled background, in one set.
CASES=${CASES:-32}
REGION_MIX=${REGION_MIX:-abdomen:0.55,chest-abdomen-pelvis:0.2,pelvis:0.07,chest:0.06,head:0.06,neck:0.06}
NEG_TRAIN_CASES=${NEG_TRAIN_CASES:-10}
NEG_TRAIN_MIX=${NEG_TRAIN_MIX:-neck:0.5,head:0.25,chest:0.25}
EMPTY_FRACTION=${EMPTY_FRACTION:-0.35}  # slices without liver kept in the phantom set
TEST_CASES=${TEST_CASES:-20}  # held-out phantoms (seeds 9000+)
NEG_CASES=${NEG_CASES:-8}  # held-out phantoms without liver (seeds 9500+): <= 10 mL of liver, no tumour
NEG_REGION_MIX=${NEG_REGION_MIX:-chest:0.25,pelvis:0.25,head:0.25,neck:0.25}
# Phantoms with healthy livers (no tumour): HEALTHY_CASES for the post-processing choice (seeds 9700+; the real
# selection volumes all hold tumours) and as many held out for the card (seeds 9800+): no tumour wanted.
HEALTHY_CASES=${HEALTHY_CASES:-4}
SIZE=${SIZE:-256}
# Start from the 0.4.0 weights (phantoms only: no real patient seen), not from 0.5/0.6, which trained on MSD
# patients who are IRCAD patients and lits-tumor test volumes: their weights would carry those patients into
# every reported figure. Empty: from scratch.
INIT_FROM_REV=${INIT_FROM_REV-cffb4ef}
BASE=${BASE:-16}
PATCH=${PATCH:-160}
PATCHES=${PATCHES:-3000}  # per epoch, from the sets at $MIX
EPOCHS=${EPOCHS:-16}  # the poly schedule spans these
STOP_AFTER=${STOP_AFTER:-}  # end this sitting after that epoch; run the recipe again to go on
LR=${LR:-3e-4}
# A scanner reconstructs fields of view of about 300-500 mm and the runtime resizes the whole field to 256
# pixels: one abdomen appears at scales 1.67x apart.
AUGMENT_SCALE=${AUGMENT_SCALE:-0.8,1.35}
EPOCHS_LIVER=${EPOCHS_LIVER:-3}
PATCHES_LIVER=${PATCHES_LIVER:-3000}
LR_LIVER=${LR_LIVER:-2e-4}
# One torch thread: with two on two shared cores, OpenMP's waiting threads cost up to 10x per step.
THREADS=${THREADS:-1}
VERSION=${VERSION:-0.7.0}
MODELS=${MODELS:-runtime/models}
BASELINE=${BASELINE:-1}  # 1: score the models this run replaces on the same sets first
export NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-2}
PY=("$BIN/python" -m)

for folder in "$MSD" "$IRCAD" "$LITS"; do
  [ -d "$folder/images" ] || { echo "recipe: real slices missing: $folder (see ../shared/data/README.md)" >&2; exit 3; }
done
mkdir -p "$WORK" "$MODELS"

# --- shipped-path scoring: set key -> source, folder, set of python -m litseg.train.evaluate.shipped
shipped() {  # model key out: one set through the shipped path
  local source folder set
  case "$2" in
    lits-test) source=lits-tumor folder=$LITS set=test ;;
    lits-selection) source=lits-tumor folder=$LITS set=selection ;;
    msd-report) source=msd folder=$MSD set=report ;;
    ircad) source=ircad folder=$IRCAD set=test ;;
  esac
  [ -f "$3" ] || "${PY[@]}" litseg.train.evaluate.shipped "$1" "$source" "$folder" --set "$set" --json "$3" > /dev/null
}
REPORT_SETS=(lits-test msd-report ircad)

# --- baseline: the models this run replaces, on the same sets (before anything is overwritten)
model_version() {
  "$BIN/python" -c "import sys; from litseg.runtime import Model; print(Model(sys.argv[1], device='cpu').info.version)" "$1"
}
if [ "$BASELINE" = 1 ]; then
  for task in liver-tumor liver; do
    [ -f "$MODELS/$task.onnx" ] || continue
    [ "$(model_version "$MODELS/$task.onnx")" = "$VERSION" ] && continue
    for key in lits-selection "${REPORT_SETS[@]}"; do
      shipped "$MODELS/$task.onnx" "$key" "$WORK/shipped-$key-$task-baseline.json"
    done
  done
fi

# --- data
[ -f "$WORK/train/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/train" --cases "$CASES" --seed 1000 --size "$SIZE" --region-mix "$REGION_MIX" \
    --hard-negatives
[ -f "$WORK/train-neg/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/train-neg" --cases "$NEG_TRAIN_CASES" --seed 1100 --size "$SIZE" \
    --region-mix "$NEG_TRAIN_MIX" --hard-negatives
if [ ! -d "$WORK/phantoms-all" ]; then  # both phantom folders as one LiTS-layout folder (links, no copies)
  mkdir -p "$WORK/phantoms-all.tmp"
  for n in $(seq 0 $((CASES - 1))); do
    for f in volume segmentation; do ln -s "../train/$f-$n.nii.gz" "$WORK/phantoms-all.tmp/$f-$n.nii.gz"; done
  done
  for n in $(seq 0 $((NEG_TRAIN_CASES - 1))); do
    for f in volume segmentation; do
      ln -s "../train-neg/$f-$n.nii.gz" "$WORK/phantoms-all.tmp/$f-$((CASES + n)).nii.gz"
    done
  done
  mv "$WORK/phantoms-all.tmp" "$WORK/phantoms-all"
fi
prepare_sets() {  # task: the three HDF5 sets of a task
  local task=$1
  [ -f "$WORK/phantom-$task.h5" ] || \
    "$BIN/litseg-prepare" "$WORK/phantoms-all" --out "$WORK/phantom-$task.h5" --task "$task" --window-hu "$WINDOW" \
      --empty-fraction "$EMPTY_FRACTION"
  [ -f "$WORK/lits-$task.h5" ] || \
    "${PY[@]}" litseg.train.data.prepare_real lits-tumor "$LITS" --out "$WORK/lits-$task.h5" --task "$task" \
      --window-hu "$WINDOW"
  [ -f "$WORK/msd-$task.h5" ] || \
    "${PY[@]}" litseg.train.data.prepare_real msd "$MSD" --out "$WORK/msd-$task.h5" --task "$task" --window-hu "$WINDOW"
}
prepare_sets liver-tumor  # the liver task's sets and the test phantoms wait until the long training is done

# --- training
init=()
if [ -n "$INIT_FROM_REV" ]; then
  [ -f "$WORK/init-$INIT_FROM_REV.pt" ] || {
    git show "$INIT_FROM_REV:runtime/models/liver-tumor.onnx" > "$WORK/init-$INIT_FROM_REV.onnx"
    "${PY[@]}" litseg.export.init_checkpoint "$WORK/init-$INIT_FROM_REV.onnx" --out "$WORK/init-$INIT_FROM_REV.pt"
  }
  init=(--init "$WORK/init-$INIT_FROM_REV.pt")
fi
epochs_done() {  # run -> epochs in its log (0 without one)
  "$BIN/python" -c "import json,sys;print(len(json.load(open(sys.argv[1]))))" "$WORK/$1/log.json" 2>/dev/null \
    || echo 0
}
train() {  # run task epochs samples first-weights... -- flags: one run, resumed where it stopped
  local run=$1 task=$2 epochs=$3 samples=$4
  shift 4
  local first=()
  while [ "$1" != -- ]; do first+=("$1"); shift; done
  shift
  [ "$(epochs_done "$run")" -ge "$epochs" ] && return
  local start=("${first[@]}") stop=()
  [ -f "$WORK/$run/checkpoint-last.pt" ] && start=(--resume "$WORK/$run/checkpoint-last.pt")
  [ -n "$STOP_AFTER" ] && stop=(--stop-after "$STOP_AFTER")
  "$BIN/litseg-train" --data "$WORK/phantom-$task.h5" --data "$WORK/lits-$task.h5" --data "$WORK/msd-$task.h5" \
    --mix "$MIX" --out "$WORK/$run" --base "$BASE" --epochs "$epochs" --slices-per-epoch "$samples" \
    --threads "$THREADS" --val-fraction 0.05 --augment-scale "$AUGMENT_SCALE" "${start[@]}" "${stop[@]}" "$@"
}
train run-liver-tumor liver-tumor "$EPOCHS" "$PATCHES" "${init[@]}" -- --crop "$PATCH" --crop-foreground 0.67 \
  --rare-class-boost 3 --weight-cap 5 --lr "$LR" --lr-schedule poly
if [ "$(epochs_done run-liver-tumor)" -lt "$EPOCHS" ]; then
  echo "recipe: liver-tumor stopped after epoch $(epochs_done run-liver-tumor) of $EPOCHS; run it again to go on" >&2
  exit 0
fi
[ -f "$WORK/test/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/test" --cases "$TEST_CASES" --seed 9000 --size "$SIZE" --dicom
[ -f "$WORK/negatives/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/negatives" --cases "$NEG_CASES" --seed 9500 --size "$SIZE" \
    --region-mix "$NEG_REGION_MIX" --dicom
for seed in 9700 9800; do
  folder=healthy-val; [ "$seed" = 9800 ] && folder=healthy-test
  [ -f "$WORK/$folder/phantom-manifest.json" ] || \
    "$BIN/litseg-phantom" --out "$WORK/$folder" --cases "$HEALTHY_CASES" --seed "$seed" --size "$SIZE" --tumors 0 --dicom
done
prepare_sets liver
# the liver model starts from the best liver-tumor checkpoint (every layer but the head)
train run-liver liver "$EPOCHS_LIVER" "$PATCHES_LIVER" --init "$WORK/run-liver-tumor/checkpoint-best.pt" -- \
  --crop "$PATCH" --crop-foreground 0.5 --weight-cap 5 --lr "$LR_LIVER" --lr-schedule poly

# --- export; the liver-tumor model's tumour post-processing chosen on the real selection volumes
"$BIN/litseg-export" "$WORK/run-liver-tumor/checkpoint-best.pt" --out "$WORK/liver-tumor-raw.onnx" \
  --version "$VERSION" --name litseg-liver-tumor
[ -f "$WORK/calibrate-real.json" ] || "${PY[@]}" litseg.train.evaluate.calibrate_real "$WORK/liver-tumor-raw.onnx" \
  "$LITS" --healthy "$WORK/healthy-val" --json "$WORK/calibrate-real.json" > /dev/null
chosen() { "$BIN/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['chosen'][sys.argv[2]])" "$WORK/calibrate-real.json" "$1"; }
"$BIN/litseg-export" "$WORK/run-liver-tumor/checkpoint-best.pt" --out "$MODELS/liver-tumor.onnx" --version "$VERSION" \
  --name litseg-liver-tumor --min-tumor-ml "$(chosen min_tumor_ml)" --tumor-margin-mm "$(chosen tumor_margin_mm)"
"$BIN/litseg-export" "$WORK/run-liver/checkpoint-best.pt" --out "$MODELS/liver.onnx" --version "$VERSION" \
  --name litseg-liver

# --- evaluation: phantoms, phantoms without liver, then the real report sets once (every choice is made)
found_in() {  # folder cases name task: liver mL and tumours found in phantom cases -> eval-<name>-<task>.json
  local reports=()
  for n in $(seq 0 $(($2 - 1))); do
    "$BIN/litseg-run" "$WORK/$1/dicom/case-$n" --model "$MODELS/$4.onnx" --out "$WORK/run-out/$3-$4-$n" --overwrite \
      --formats json --quiet
    reports+=("$WORK/run-out/$3-$4-$n/report.json")
  done
  "${PY[@]}" litseg.train.evaluate.negatives "${reports[@]}" --manifest "$WORK/$1/phantom-manifest.json" \
    --json "$WORK/eval-$3-$4.json" > /dev/null
}
for task in liver-tumor liver; do
  pred="$WORK/pred-$task"
  mkdir -p "$pred" "$WORK/ref"
  for dir in "$WORK"/test/dicom/case-*; do
    n=${dir##*-}
    "$BIN/litseg-run" "$dir" --model "$MODELS/$task.onnx" --out "$WORK/run-out/$task-$n" --overwrite \
      --formats nifti,json --quiet
    cp "$WORK/run-out/$task-$n/labels.nii.gz" "$pred/segmentation-$n.nii.gz"
  done
  cp "$WORK"/test/segmentation-*.nii.gz "$WORK/ref/"
  "$BIN/litseg-eval" "$pred" "$WORK/ref" --json "$WORK/eval-$task.json" > /dev/null
  found_in negatives "$NEG_CASES" negatives "$task"
  found_in healthy-test "$HEALTHY_CASES" healthy "$task"
  for key in lits-selection "${REPORT_SETS[@]}"; do
    shipped "$MODELS/$task.onnx" "$key" "$WORK/shipped-$key-$task.json"
  done
done

# --- model cards
notes() {  # task
  if [ "$1" = liver ]; then
    echo "initialised from the best liver-tumor checkpoint (all layers but the head); epochs 1-$EPOCHS_LIVER:" \
      "${PATCH}x${PATCH} patches (half centred on liver), phantoms, lits-tumor and MSD at $MIX, lr $LR_LIVER with" \
      "poly decay to 0; the exported checkpoint is the best by validation score (mean over the sets)"
  else
    echo "from the 0.4.0 phantom-only weights; epochs 1-$EPOCHS: ${PATCH}x${PATCH} patches (2/3 centred on the" \
      "rarest class in the slice), phantoms, lits-tumor and MSD at $MIX, zoom $AUGMENT_SCALE, lr $LR with poly" \
      "decay to 0; the exported checkpoint is the best by validation score (mean over the sets of their mean" \
      "foreground Dice; validation: phantoms, the lits-tumor selection volumes, the MSD selection patients)"
  fi
}
for task in liver-tumor liver; do
  "${PY[@]}" litseg.train.evaluate.model_card --task "$task" --work "$WORK" --model "$MODELS/$task.onnx" \
    --out "$MODELS/$task.md" --notes "$(notes "$task")"
done
echo "models and cards in $MODELS"
