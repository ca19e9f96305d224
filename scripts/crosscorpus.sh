#!/usr/bin/env bash
# The recommended cross-corpus recipe, from corpus folders to a report, for one class setup:
#
#   scripts/crosscorpus.sh CLASSES --train NAME=PATH [NAME=PATH ...] --test NAME=PATH [NAME=PATH ...] \
#       [--corpus-option NAME.OPTION=VALUE ...] [--set KEY=VALUE ...] [--cnn-set KEY=VALUE ...] [--work DIR]
#
#   scripts/crosscorpus.sh 4 --train ravdess=/data/RAVDESS tess=/data/TESS --test emodb=/data/EMO-DB
#
# CLASSES is a numbered setup (4, 5, 6, ...) or a comma list such as neutral,happy,sad,angry,boredom.
# Any corpus the catalogue reads works, `folder=PATH` included (with --corpus-option folder.name=...).
# --set overrides a training setting of both members, e.g. train.epochs=4; --cnn-set one of the CNN's only,
# e.g. model.name=efficientnet_lite1 or model.weights=FILE.
# Steps (each resumes; rerun the same command after an interruption, nothing finished is redone):
#   1. pictures (configs/features_crosscorpus_mel.yaml) and utterance statistics
#      (configs/features_crosscorpus_stats.yaml) of every corpus, each speaker's recordings standardised
#      with that speaker's statistics (for test corpora: their own unlabelled audio, transductive);
#   2. the CNN (configs/crosscorpus_cnn.yaml) and the SVM (configs/crosscorpus_svm.yaml), both choosing
#      epochs and hyper-parameters on held-out speakers of the training corpora, and their stand-ins
#      trained with the last --train corpus held out whole (leave-one-corpus-out); the CNN's
#      domain-adversarial branch sees the unlabelled audio of the test corpora (the stand-in's: the
#      held-out corpus), which is transductive and recorded;
#   3. ensemble weights chosen by UAR on that held-out corpus for the stand-ins, written for the members
#      (spectro ensemble --apply-to; with one training corpus, on the held-out speakers);
#   4. the ensemble evaluated on every test corpus.
# Steps 3 and 4 re-estimate the CNN's BatchNorm statistics on the corpus scored (AdaBN: transductive,
# its unlabelled audio only; reported) if that gives the better validation UAR in step 3.
# The last line says where the report is. Outputs go to DIR (default: crosscorpus/CLASSES, under the current folder).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
SPECTRO=${SPECTRO:-$root/.venv/bin/spectro}

usage() { sed -n '2,27p' "$0"; exit 2; }
[ $# -ge 1 ] || usage
classes=$1; shift
train=(); test=(); options=(); sets=(); cnn_sets=(); work=""; list=""
while [ $# -gt 0 ]; do
  case $1 in
    --train) list=train ;;
    --test) list=test ;;
    --corpus-option) options+=(--corpus-option "$2"); shift ;;
    --set) sets+=(--set "$2"); shift ;;
    --cnn-set) cnn_sets+=(--set "$2"); shift ;;
    --work) work=$2; shift ;;
    -h|--help) usage ;;
    *=*) [ "$list" = train ] && train+=("$1") || { [ "$list" = test ] && test+=("$1") || usage; } ;;
    *) usage ;;
  esac
  shift
done
[ ${#train[@]} -gt 0 ] && [ ${#test[@]} -gt 0 ] || usage
work=${work:-crosscorpus/${classes//,/_}}
# progress bars on a terminal; in a log, only the epoch lines and results
quiet=(); [ -t 1 ] || quiet=(--quiet)
case $classes in *,*) class_setting="[$classes]" ;; *) class_setting=$classes ;; esac

# 1. pictures and statistics of every corpus: the training corpora first, since the normalisation guard
#    judges a test corpus's speakers against theirs (normalise.guard_reference: the highest value of the
#    training corpora's speakers, as evaluate and predict take it from the model)
render() {  # SPEC FEATURE [--set ...]
  local spec=$1 feature=$2; shift 2
  "$SPECTRO" images --corpus "$spec" "${options[@]}" --config $root/configs/features_crosscorpus_$feature.yaml \
    --out "$work/images/$feature/${spec%%=*}" "${quiet[@]}" "$@"
}
guard_reference() {  # FEATURE: the training trees' highest guard value, or nothing where they recorded none
  local trees=(); for spec in "${train[@]}"; do trees+=("$work/images/$1/${spec%%=*}/normalisation.json"); done
  python3 -c 'import json, sys
values = [g["value"] for path in sys.argv[1:] for g in json.load(open(path)).get("guard", {}).values()
          if g["value"] is not None and not g["fired"]]
print(f"{max(values):.4f}" if values else "")' "${trees[@]}"
}
for feature in mel stats; do
  for spec in "${train[@]}"; do render "$spec" $feature; done
  reference=$(guard_reference $feature)
  for spec in "${test[@]}"; do render "$spec" $feature ${reference:+--set normalise.guard_reference=$reference}; done
done
trees() { local out=""; for spec in "${train[@]}"; do out+="$work/images/$1/${spec%%=*},"; done; echo "[${out%,}]"; }

# 2. the two members, validated on held-out speakers of the training corpora; with two or more training
#    corpora, also their stand-ins: the same recipes with the last training corpus held out whole
held=""; [ ${#train[@]} -gt 1 ] && held=${train[${#train[@]}-1]}
held_name=${held%%=*}
if [ "$held_name" = folder ]; then  # a folder corpus is named by its folder.name option
  for ((i = 1; i < ${#options[@]}; i += 2)); do
    case ${options[i]} in folder.name=*) held_name=${options[i]#folder.name=} ;; esac
  done
fi
targets=""; for spec in "${test[@]}"; do targets+="$work/images/mel/${spec%%=*},"; done
for member in cnn svm; do
  tree=$([ $member = cnn ] && echo mel || echo stats)
  common=(--set "data.train=$(trees $tree)" --set "data.classes=$class_setting"
          --set "run.checkpoint_dir=$work/checkpoints" --set "run.log_dir=$work/runs" "${sets[@]}")
  # the CNN's adversary learns from the unlabelled audio of the corpora it will be scored on (transductive)
  own=(); stand_in=()
  [ $member = svm ] || common+=("${cnn_sets[@]}")
  [ $member = svm ] || own=(--set "adversarial.target=[${targets%,}]")
  [ $member = svm ] || stand_in=(--set "adversarial.target=[$work/images/mel/${held%%=*}]")
  "$SPECTRO" train "$root/configs/crosscorpus_$member.yaml" --run-name "$member" --resume "${quiet[@]}" "${common[@]}" "${own[@]}"
  [ -z "$held" ] || "$SPECTRO" train "$root/configs/crosscorpus_$member.yaml" --run-name "${member}_stand_in" --resume \
    "${quiet[@]}" "${common[@]}" --set "data.val_corpus=$held_name" --set "data.val_speakers=[]" "${stand_in[@]}"
done

# 3. ensemble weights by UAR on the held-out corpus, chosen for the stand-ins and given to the members
#    (one training corpus: on the members' shared held-out speakers), without and with AdaBN
members=("$work/checkpoints/cnn/best.pt" "$work/checkpoints/svm/best.pt")
for adabn in "" --adabn; do
  out="$work/ensemble${adabn:+_adabn}.json"
  [ ! -f "$out" ] || continue
  if [ -n "$held" ]; then
    "$SPECTRO" ensemble "$work/checkpoints/cnn_stand_in/best.pt" "$work/checkpoints/svm_stand_in/best.pt" \
      --validation "$held" "${options[@]}" --apply-to "${members[@]}" $adabn --out "$out" "${quiet[@]}"
  else
    "$SPECTRO" ensemble "${members[@]}" --validation "${train[0]}" "${options[@]}" $adabn --out "$out" "${quiet[@]}"
  fi
done
adabn=$(python3 -c 'import json, sys; a, b = (json.load(open(p))["chosen_by"]["uar"] for p in sys.argv[1:])
print("--adabn" if b > a else "")' "$work/ensemble.json" "$work/ensemble_adabn.json")

# 4. every test corpus, scored by the ensemble that validated better
corpora=(); for spec in "${test[@]}"; do corpora+=(--corpus "$spec"); done
"$SPECTRO" evaluate "$work/ensemble${adabn:+_adabn}.json" "${corpora[@]}" "${options[@]}" $adabn --out "$work/report" \
  "${quiet[@]}"
