#!/usr/bin/env bash
# Reproduce the published comparison table and the baselines from corpus folders: images, every config, evaluation
# on EMO-DB, and the comparison report. Every stage resumes, so rerun the same command after an
# interruption; finished images, runs and reports are not redone.
#
#   scripts/reproduce_table.sh ravdess=/data/RAVDESS tess=/data/TESS emodb=/data/EMO-DB \
#       [savee=/data/SAVEE] [cremad=/data/CREMA-D] [iemocap=/data/IEMOCAP]
#
# Outputs: images/<feature>/<corpus>, checkpoints/<run>, runs/<run> (TensorBoard), reports/<run>,
# reports/comparison/comparison.{md,csv}. ImageNet rows need their weights in the torchvision/timm
# cache (offline, the error names the file to place). A config that fails is reported and skipped;
# the others still run, and the script exits 1 naming the failed ones. EXTRA_SET="train.epochs=2 ..."
# passes --set overrides to every run; CONFIGS="configs/a.yaml ..." picks the configs.
set -euo pipefail
cd "$(dirname "$0")/.."
SPECTRO=${SPECTRO:-.venv/bin/spectro}
CONFIGS=${CONFIGS:-$(ls configs/*.yaml | grep -Ev '/(base|features|crosscorpus)_')}
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-4000000000}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-4000000000}

usage() { sed -n '2,12p' "$0"; exit "$1"; }
[ $# -gt 0 ] || usage 2
for spec in "$@"; do
  case $spec in
    -h|--help) usage 0 ;;
    *=*) ;;
    *) echo "reproduce_table.sh: $spec is not NAME=PATH (e.g. emodb=/data/EMO-DB); see --help" >&2; exit 2 ;;
  esac
done
emodb=""
for spec in "$@"; do
  name=${spec%%=*}
  # the CNN rows' pictures and matrices (3 s), then the baselines' whole-utterance features
  for feature in mel gd mel+gd mfcc; do
    echo "== images: $feature $name"
    "$SPECTRO" images --corpus "$spec" --feature "$feature" --out "images/$feature/$name" --quiet
  done
  for pair in stats:stats frames:frames mfcc:mfcc_var; do
    echo "== images: ${pair#*:} $name"
    "$SPECTRO" images --corpus "$spec" --feature "${pair%%:*}" --set audio.duration=null --out "images/${pair#*:}/$name" --quiet
  done
  if [ "$name" = emodb ]; then
    emodb=${spec#*=}
  else  # augmented training copies, used for training speakers only
    "$SPECTRO" images --corpus "$spec" --feature stats --set audio.duration=null --augment --set augment.copies=2 \
      --out "images/stats_aug/$name" --quiet
  fi
done
[ -n "$emodb" ] || { echo "emodb=PATH is required: it is the test corpus" >&2; exit 2; }

sets=()
for item in ${EXTRA_SET:-}; do sets+=(--set "$item"); done
reports=()
failed=()
for config in $CONFIGS; do
  run=$(basename "$config" .yaml)
  echo "== train: $run"
  if ! "$SPECTRO" train "$config" --resume --quiet "${sets[@]}"; then
    echo "== skipped: $run (see the error above)" >&2
    failed+=("$run")
    continue
  fi
  echo "== evaluate: $run"
  if [ ! -f "reports/$run/report.json" ] || [ "checkpoints/$run/best.pt" -nt "reports/$run/report.json" ]; then
    "$SPECTRO" evaluate "checkpoints/$run/best.pt" --corpus "emodb=$emodb" --out "reports/$run" --quiet
  fi
  reports+=("reports/$run")
done
if [ ${#reports[@]} -gt 0 ]; then
  echo "== report"
  "$SPECTRO" report "${reports[@]}" --out reports/comparison
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed (fix and rerun the same command; finished runs are not redone): ${failed[*]}" >&2
  exit 1
fi
