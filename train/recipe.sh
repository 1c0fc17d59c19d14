#!/usr/bin/env bash
# The recipe of the bundled default models: phantoms + real CT slices -> HDF5 -> train -> export -> evaluate
# (held-out phantoms, phantoms without liver, the 22 MSD validation patients, and IRCAD once at the end) ->
# model cards. Runs on the CPU (2 cores: about an hour of training); every step is a litseg CLI or module.
# Steps whose outputs exist are skipped, so an interrupted run can be resumed. Knobs are environment variables.
# Smoke run (tiny settings, nothing in runtime/models; 8 min on 2 shared cores, 18 min when they were busy):
#   WORK=/tmp/litseg-smoke MODELS=/tmp/litseg-smoke/models CASES=6 TEST_CASES=2 NEG_CASES=2 SIZE=256 \
#   PATCHES=64 EPOCHS_1=1 SLICES_2=16 EPOCHS_LIVER=1 PATCHES_LIVER=32 bash train/recipe.sh
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-build/models}
# Real slices (never copied into the repository; see ../shared/data/README.md for provenance and licences):
# MSD (LiTS17 volumes) for training and validation, split by patient 100 / 22 (fixed, in
# litseg.train.data.real_slices); IRCAD (another hospital) for one test at the very end, never for a choice.
SHARED=${SHARED:-../shared/data}
MSD=${MSD:-$SHARED/msd-liver-slices}
IRCAD=${IRCAD:-$SHARED/ircad-liver-slices}
# The models' HU window: MSD slices keep HU only within 0..255 (saturated), so the window lies inside it and
# an MSD slice gives exactly the model input of a DICOM slice of the same tissue (grey g -> g / 255). The 0.4
# models used -200..300 and saw saturated MSD fat and air as soft tissue (MSD liver Dice per slice 0.22).
WINDOW=${WINDOW:-0,255}
# Share of each epoch's samples: phantoms, then MSD. The phantoms teach tumor (MSD merges liver and tumor:
# trained with the marginal liver-or-tumor loss) and the hard negatives; MSD teaches real livers.
MIX=${MIX:-0.6,0.4}
# 80 training phantoms (64 train / 16 validation): with 40, validation tumor Dice stalled at about 0.75
# while the training loss kept falling; 80 in the same steps raised tumor Dice per case 0.44 -> 0.60 (seeds
# 9000-9009).
# 160 did not help further (0.69 vs 0.69 per case on 30 held-out phantoms, seeds 9000-9029) and costs 35 min
# more data preparation and 10 min more validation.
CASES=${CASES:-48}
# Body regions of the training phantoms (litseg-phantom --region-mix, with --hard-negatives for every region:
# ascites, splenomegaly, full stomachs, pelvic masses): scans reaching the chest and pelvis, and cases
# without liver, labelled background.
REGION_MIX=${REGION_MIX:-abdomen:0.6,chest-abdomen-pelvis:0.2,pelvis:0.07,chest:0.05,head:0.04,neck:0.04}
# 30 held-out phantoms (seeds 9000-9029, abdomen): with 10, the case mix alone moved the tumor Dice per case
# by about 0.1 (the same model: 0.60 on seeds 9000-9009, 0.73 on 9010-9029)
TEST_CASES=${TEST_CASES:-20}
# Slices without liver kept in the phantom set (the hard negatives and the liver-free regions live there).
EMPTY_FRACTION=${EMPTY_FRACTION:-0.25}
# held-out phantoms without liver (seeds 9500+): the issue's bar is <= 10 mL of liver and no tumor
NEG_CASES=${NEG_CASES:-8}
NEG_REGION_MIX=${NEG_REGION_MIX:-chest:0.25,pelvis:0.25,head:0.25,neck:0.25}
SIZE=${SIZE:-256}  # phantom rows = columns (the model sees 256 x 256 either way; 512 takes 4x the time)
# MEMBERS > 1 makes the liver-tumor model an ensemble of U-Nets trained alike with seeds 0, 1, ... (each
# with its own validation split of the phantoms and initialisation), exported as one ONNX graph that averages
# their softmax probabilities (nnU-Net's fold ensemble); each member costs the training hour again and
# multiplies the inference time. Measured on 20 fresh phantoms (seeds 8000-8019, never used for training or
# testing), tumor Dice per case: one network 0.604; with a seed-1 member (0.570 alone) 0.595; so the default is one.
MEMBERS=${MEMBERS:-1}
# The network draws lesions too small (it calls enhancing rims and partial-volume borders liver: tumor RVD
# -0.33); litseg-run grows tumors by this margin within the liver (written into the model's metadata).
# Chosen on the same 20 fresh phantoms from 0/1/2/3 mm: tumor Dice per case 0.604/0.621/0.631/0.626,
# global 0.822/0.845/0.859/0.854 (0.4 models, window -200..300).
TUMOR_MARGIN_MM=${TUMOR_MARGIN_MM:-2}
# Tumor components under this volume become liver (litseg-run's small-tumor filter, written into the model's
# metadata). Chosen for the 0.6.0 liver-tumor model with python -m litseg.train.evaluate.calibrate on the
# same 20 fresh phantoms, one pass, 2 mm margin, from 0 / 0.2 / 0.5 / 1 mL: tumor Dice per case 0.564 /
# 0.566 / 0.568 / 0.574, lesion precision 0.080 / 0.278 / 0.452 / 0.609 at recall 0.294 / 0.294 / 0.275 /
# 0.275 (1 mL is a sphere of 12 mm; the model finds no lesion under 10 mm anyway): the best tumor Dice, at the
# cost of one of the 51 lesions. (The margin, with no filter: 0 / 2 / 3 mm gave tumor Dice per case 0.543 /
# 0.564 / 0.564 and recall 0.235 / 0.294 / 0.255, so 2 mm stays.) litseg-run --min-tumor-ml 0 keeps all.
MIN_TUMOR_ML=${MIN_TUMOR_ML:-1}
# Test-time augmentation of the liver-tumor model: litseg-run averages the unshifted pass and one with the
# 256x256 input moved by this many pixels in y and x (the U-Net's 16-pixel pooling grid makes its output
# depend on where a lesion falls). For the 0.4 models (20 fresh phantoms, 2 mm margin) it raised tumor Dice per
# case 0.631 -> 0.640; for the 0.6.0 model on the same 20 phantoms (seeds 8000-8019, 2 mm margin) it gave
# nothing: tumor Dice per case 0.5628 with the shift against 0.5644 without, global 0.8036 / 0.8031, lesion
# recall 0.294 both, liver 0.9793 / 0.9791; so 0.6.0 runs one pass (half the inference time). 0 turns it off.
TTA_SHIFT_PX=${TTA_SHIFT_PX:-0}
THREADS=${THREADS:-2}
VERSION=${VERSION:-0.6.0}
MODELS=${MODELS:-runtime/models}
# Patch training (nnU-Net style): 160x160 patches cost a quarter of a whole 256x256 slice per step, and
# two thirds of them are centred on the rarest class the slice shows (tumor, else liver; liver-or-tumor on
# MSD slices), so the tumor class is seen often enough to be learnt within the CPU budget. The poly schedule
# decays the lr to 0 over the patch epochs; one whole-slice epoch at a low lr follows. The liver model starts
# from the liver-tumor network (all layers but the head) and is fine-tuned for the liver task, which beat a
# separately trained base-8 liver model (0.95 Dice) in a fifth of the time. Training steps run in bf16 with
# channels-last on CPUs with native bf16 (AMX / AVX512-BF16: 2.4x the fp32 step rate), which buys
# 6 x 12000 patches in the hour instead of 5 x 6000. A CPU without native bf16 trains in fp32: the recipe
# prints its estimate first (python -m litseg.train.fit.step_timing); on a 2-core AMD EPYC without AVX512-BF16,
# shared with other work, it measured 0.10-0.40 s per 160x160 patch: 2.2-7 h for 6 x 12000 patches.
# So the bundled models are fine-tuned, not trained from scratch: the first liver-tumor phase starts from
# the previous models' weights (INIT_FROM_REV: the git revision whose runtime/models/liver-tumor.onnx is
# turned into a checkpoint by python -m litseg.export.init_checkpoint; empty trains from scratch). 0.5.0:
# from 0.4.0 (cffb4ef) with 2 x 2500 patches, one epoch of 200 whole slices and the liver model 600
# patches (PATCHES=2500 EPOCHS_1=2 SLICES_2=200 PATCHES_LIVER=600), 23 min of training; 0.6.0 (these
# defaults): from 0.5.0 (224af94) with 3 x 10000 patches, 400 whole slices and 3000 liver patches, 67 min of
# training on this machine while other work shared it. With native bf16 or a GPU, train longer (e.g. PATCHES=12000
# EPOCHS_1=6 SLICES_2=1200 EPOCHS_LIVER=2 PATCHES_LIVER=3000 INIT_FROM_REV=).
INIT_FROM_REV=${INIT_FROM_REV-224af94}
# Phantom cases held out for validation (the MSD sets carry their fixed 100/22 patient split): 5 % keeps
# each epoch's validation to a few minutes on the CPU.
VAL_FRACTION=${VAL_FRACTION:-0.05}
BASE=${BASE:-16}
PATCH=${PATCH:-160}
PATCHES=${PATCHES:-10000}  # per epoch, from both sets at $MIX
EPOCHS_1=${EPOCHS_1:-3}   # liver-tumor, patches, lr $LR_1 poly
SLICES_2=${SLICES_2:-400}  # liver-tumor, one more epoch: whole slices at $LR_2
EPOCHS_LIVER=${EPOCHS_LIVER:-1}
PATCHES_LIVER=${PATCHES_LIVER:-3000}
LR_1=${LR_1:-2e-4}
LR_2=${LR_2:-5e-5}
LR_LIVER=${LR_LIVER:-2e-4}
# On a CUDA GPU (AMP is automatic), more capacity and steps fit in the same hour, e.g.
# BASE=32 PATCHES=40000 make models; the run folders in $WORK must not hold a CPU run.
export NUMBA_NUM_THREADS=$THREADS
PY=("$BIN/python" -m)

for folder in "$MSD" "$IRCAD"; do
  [ -d "$folder/images" ] || { echo "recipe: real slices missing: $folder (see ../shared/data/README.md)" >&2; exit 3; }
done
mkdir -p "$WORK" "$MODELS"

# --- baseline: the models this run replaces, on the same real slices (before anything is overwritten; a model
# of this recipe's $VERSION is this run's own output, not a baseline)
model_version() {
  "$BIN/python" -c "import sys; from litseg.runtime import Model; print(Model(sys.argv[1], device='cpu').info.version)" "$1"
}
for task in liver-tumor liver; do
  [ -f "$MODELS/$task.onnx" ] || continue
  [ "$(model_version "$MODELS/$task.onnx")" = "$VERSION" ] && continue
  for source in msd ircad; do
    folder=$MSD; [ "$source" = ircad ] && folder=$IRCAD
    [ -f "$WORK/eval-$source-$task-baseline.json" ] || "${PY[@]}" litseg.train.evaluate.slices "$MODELS/$task.onnx" \
      "$source" "$folder" --split val --json "$WORK/eval-$source-$task-baseline.json" > /dev/null
  done
done

# --- data
[ -f "$WORK/train/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/train" --cases "$CASES" --seed 1000 --size "$SIZE" --region-mix "$REGION_MIX" \
    --hard-negatives
[ -f "$WORK/test/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/test" --cases "$TEST_CASES" --seed 9000 --size "$SIZE" --dicom
[ -f "$WORK/negatives/phantom-manifest.json" ] || \
  "$BIN/litseg-phantom" --out "$WORK/negatives" --cases "$NEG_CASES" --seed 9500 --size "$SIZE" \
    --region-mix "$NEG_REGION_MIX" --dicom
for task in liver-tumor liver; do
  [ -f "$WORK/$task.h5" ] || \
    "$BIN/litseg-prepare" "$WORK/train" --out "$WORK/$task.h5" --task "$task" --window-hu "$WINDOW" \
      --empty-fraction "$EMPTY_FRACTION"
  [ -f "$WORK/msd-$task.h5" ] || \
    "${PY[@]}" litseg.train.data.prepare_real msd "$MSD" --out "$WORK/msd-$task.h5" --task "$task" --window-hu "$WINDOW"
done

# --- training (first: this machine's speed, scaled to the run; the hour above was measured with native bf16)
if [ ! -d "$WORK/run-liver-tumor" ] && [ "${ESTIMATE:-1}" = 1 ]; then
  echo "recipe: training time on this machine (validation not counted):" >&2
  "${PY[@]}" litseg.train.fit.step_timing --base "$BASE" --threads "$THREADS" \
    --samples "$PATCH:$((PATCHES * EPOCHS_1 * MEMBERS + PATCHES_LIVER * EPOCHS_LIVER))" \
    --samples "256:$((SLICES_2 * MEMBERS))" >&2
fi
epochs_done() {  # run -> epochs in its log (0 without one)
  "$BIN/python" -c "import json,sys;print(len(json.load(open(sys.argv[1]))))" "$WORK/$1/log.json" 2>/dev/null \
    || echo 0
}
train() {  # run task base epochs samples-per-epoch [litseg-train flags]: one phase, resuming the previous one
  [ "$(epochs_done "$1")" -ge "$4" ] && return
  resume=()
  [ -f "$WORK/$1/checkpoint-last.pt" ] && resume=(--resume "$WORK/$1/checkpoint-last.pt")
  "$BIN/litseg-train" --data "$WORK/$2.h5" --data "$WORK/msd-$2.h5" --mix "$MIX" --out "$WORK/$1" --base "$3" \
    --epochs "$4" --slices-per-epoch "$5" --threads "$THREADS" --val-fraction "$VAL_FRACTION" "${resume[@]}" "${@:6}"
}
member_run() {  # task member -> run folder: run-<task> for the first member, run-<task>-<member> after it
  if [ "$2" -eq 1 ]; then echo "run-$1"; else echo "run-$1-$2"; fi
}
tumor=(--crop "$PATCH" --crop-foreground 0.67 --rare-class-boost 3 --weight-cap 5)
init=()
if [ -n "$INIT_FROM_REV" ]; then
  [ -f "$WORK/init-$INIT_FROM_REV.pt" ] || {
    git show "$INIT_FROM_REV:runtime/models/liver-tumor.onnx" > "$WORK/init-$INIT_FROM_REV.onnx"
    "${PY[@]}" litseg.export.init_checkpoint "$WORK/init-$INIT_FROM_REV.onnx" --out "$WORK/init-$INIT_FROM_REV.pt"
  }
  init=(--init "$WORK/init-$INIT_FROM_REV.pt")
fi
members=()
for m in $(seq 1 "$MEMBERS"); do
  run=$(member_run liver-tumor "$m")
  seed=(--seed $((m - 1)))  # its own validation split of the phantoms and initialisation
  first=("${init[@]}")
  [ -f "$WORK/$run/checkpoint-last.pt" ] && first=()  # a resumed phase has its weights already
  train "$run" liver-tumor "$BASE" "$EPOCHS_1" "$PATCHES" "${tumor[@]}" --lr "$LR_1" --lr-schedule poly "${seed[@]}" \
    "${first[@]}"
  train "$run" liver-tumor "$BASE" $((EPOCHS_1 + 1)) "$SLICES_2" --rare-class-boost 3 --weight-cap 5 --lr "$LR_2" \
    "${seed[@]}"
  members+=("$WORK/$run/checkpoint-best.pt")
done
# the liver model starts from the best checkpoint of the first liver-tumor member
train run-liver liver "$BASE" "$EPOCHS_LIVER" "$PATCHES_LIVER" --crop "$PATCH" --crop-foreground 0.5 --weight-cap 5 \
  --lr "$LR_LIVER" --lr-schedule poly --init "$WORK/run-liver-tumor/checkpoint-best.pt"

# --- export and evaluation (phantoms, phantoms without liver, MSD validation patients)
for task in liver-tumor liver; do
  checkpoints=("$WORK/run-$task/checkpoint-best.pt")
  calibrated=()
  if [ "$task" = liver-tumor ]; then
    checkpoints=("${members[@]}")
    calibrated=(--tumor-margin-mm "$TUMOR_MARGIN_MM" --min-tumor-ml "$MIN_TUMOR_ML")
    [ "$TTA_SHIFT_PX" -gt 0 ] && calibrated+=(--tta-shift-px "$TTA_SHIFT_PX")
  fi
  "$BIN/litseg-export" "${checkpoints[@]}" --out "$MODELS/$task.onnx" --version "$VERSION" \
    --name "litseg-$task" "${calibrated[@]}"
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
  reports=()
  for n in $(seq 0 $((NEG_CASES - 1))); do
    "$BIN/litseg-run" "$WORK/negatives/dicom/case-$n" --model "$MODELS/$task.onnx" \
      --out "$WORK/run-out/negative-$task-$n" --overwrite --formats json --quiet
    reports+=("$WORK/run-out/negative-$task-$n/report.json")
  done
  "${PY[@]}" litseg.train.evaluate.negatives "${reports[@]}" --manifest "$WORK/negatives/phantom-manifest.json" \
    --json "$WORK/eval-negatives-$task.json" > /dev/null
  "${PY[@]}" litseg.train.evaluate.slices "$MODELS/$task.onnx" msd "$MSD" --split val \
    --json "$WORK/eval-msd-$task.json" > /dev/null
done

# --- IRCAD, once, after every choice above is made; then the model cards
notes() {  # task
  if [ "$1" = liver ]; then
    echo "initialised from the best liver-tumor checkpoint of its first $((EPOCHS_1 + 1)) epochs (all layers but the head);" \
      "epochs 1-$EPOCHS_LIVER: ${PATCH}x${PATCH} patches (half centred on liver), phantoms and MSD at $MIX, lr" \
      "$LR_LIVER with poly decay to 0; the exported checkpoint is the best by validation score (mean over the sets)"
  else
    [ "$MEMBERS" -gt 1 ] && echo -n "each of the $MEMBERS members (seeds 0-$((MEMBERS - 1))): "
    echo "epochs 1-$EPOCHS_1: ${PATCH}x${PATCH} patches (2/3 centred on the rarest class in the slice), phantoms and" \
      "MSD at $MIX, lr $LR_1 with poly decay to 0; epoch $((EPOCHS_1 + 1)): whole slices at lr $LR_2; the exported" \
      "checkpoint is the best by validation score (mean over the sets of their mean foreground Dice)"
  fi
}
for task in liver-tumor liver; do
  "${PY[@]}" litseg.train.evaluate.slices "$MODELS/$task.onnx" ircad "$IRCAD" --json "$WORK/eval-ircad-$task.json" \
    > /dev/null
  "${PY[@]}" litseg.train.evaluate.model_card --task "$task" --work "$WORK" --model "$MODELS/$task.onnx" \
    --out "$MODELS/$task.md" --notes "$(notes "$task")"
done
echo "models and cards in $MODELS"
