#!/usr/bin/env python
"""The CNN's transfer levers, each measured by leave-one-corpus-out validation, then the kept ones on EMO-DB.

Builds on a finished `scripts/crosscorpus.sh CLASSES` work folder (its pictures, its members and their
stand-ins). Every lever is tried on a stand-in of the recipe's CNN (trained on the training corpora but
the last, validated on all of the last: LOCO-T), beside the recipe's own stand-in:
  - LP-FT (train.lp_ft), and WiSE-FT on it (alpha and BatchNorm handling chosen on the held-out corpus);
  - acoustic randomisation: augmented copies of the training recordings (speed, rooms, channels, beside
    noise, pitch, tempo and gain) and VTLP on the pictures;
  - self-training: the recipe's stand-in ensemble labels the held-out corpus's audio (its labels unread),
    the confident recordings, class-balanced, train a new stand-in; the share kept chosen there (one round).
A lever whose stand-in validates better than the recipe's is then trained on every training corpus
(adversary and self-training on the test corpus's unlabelled audio, as the recipe does) and scored on the
test corpus; nothing is chosen on it. Resumable: every step is skipped when its output exists.

    python scripts/transfer_study.py --work crosscorpus/4 --train ravdess=PATH tess=PATH --test emodb=PATH \
        --out transfer/4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECTRO = os.environ.get("SPECTRO", f"{sys.executable} -m spectro").split()
# Self-training keeps the most confident share of the recordings the teacher gives each class (--fractions): the
# recipe's ensemble is far from calibrated under a change of corpus (its top probability on TESS: 0.25-0.35), so
# no absolute threshold would keep anything.
FRACTIONS = (0.25, 0.5)
WISE_STEP = 0.2  # alphas 0, 0.2, ..., 1, each scored with both BatchNorm choices on all of the held-out corpus
RANDOMISATION = ["--set", "augment.copies=1", "--set", "augment.speed_p=0.5", "--set", "augment.reverb_p=0.3",
                 "--set", "augment.channel_p=0.3"]


def spectro(*args) -> None:
    print("$ spectro", " ".join(map(str, args)), flush=True)
    subprocess.run([*SPECTRO, *map(str, args), "--quiet"], check=True)


def trees(work: Path, feature: str, names) -> str:
    return "[" + ",".join(str(work / "images" / feature / n) for n in names) + "]"


def train_cnn(study: Path, work: Path, run: str, *, names, classes: str, target: str, held: str | None,
              extra: list[str]) -> dict:
    """A CNN of the recipe (configs/crosscorpus_cnn.yaml) with `extra` settings: a stand-in when `held`."""
    summary = study / "checkpoints" / run / "summary.json"
    if not summary.is_file():
        sets = ["--set", f"data.train={trees(work, 'mel', names)}", "--set", f"data.classes={classes}",
                "--set", f"adversarial.target=[{target}]", "--set", f"run.checkpoint_dir={study / 'checkpoints'}",
                "--set", f"run.log_dir={study / 'runs'}", *extra]
        if held:
            sets += ["--set", f"data.val_corpus={held}", "--set", "data.val_speakers=[]"]
        spectro("train", ROOT / "configs" / "crosscorpus_cnn.yaml", "--run-name", run, "--resume", *sets)
    return json.loads(summary.read_text())


def augmented_tree(study: Path, specs, classes: str) -> list[str]:
    """Augmented copies of every training corpus's recordings, with the recipe's picture settings."""
    out = []
    for name, path in specs:
        tree = study / "images" / "mel_aug" / name
        if not (tree / "manifest.csv").is_file():
            spectro("images", "--corpus", f"{name}={path}", "--config",
                    ROOT / "configs" / "features_crosscorpus_mel.yaml", "--classes", classes, "--augment",
                    *RANDOMISATION, "--out", tree)
        out.append(str(tree))
    return out


def recipe_ensemble(folder: Path, prefix: str = "ensemble") -> tuple[Path, bool]:
    """The ensemble file the recipe evaluated, and whether with AdaBN (as crosscorpus.sh chooses)."""
    plain, adabn = folder / f"{prefix}.json", folder / f"{prefix}_adabn.json"
    uar = [json.loads(f.read_text())["chosen_by"]["uar"] for f in (plain, adabn)]
    return (adabn, True) if uar[1] > uar[0] else (plain, False)


def self_training(study: Path, work: Path, *, teacher: Path, adabn: bool, corpus: tuple[str, str],
                  target_tree: Path, fraction: float, run: str, **train) -> dict:
    labels = study / "pseudo" / f"{run}.csv"
    if not labels.is_file():
        spectro("pseudo-label", teacher, "--corpus", f"{corpus[0]}={corpus[1]}", "--fraction", fraction,
                "--out", labels, *(["--adabn"] if adabn else []))
    pseudo = f"data.pseudo=[{{tree: {target_tree}, labels: {labels}}}]"
    return train_cnn(study, work, run, extra=[*train.pop("extra", []), "--set", pseudo], **train)


def teacher_stand_in(study: Path, work: Path, held: tuple[str, str]) -> tuple[Path, bool]:
    """The recipe's stand-in ensemble (its CNN and SVM stand-ins), weights chosen on the held-out corpus as
    crosscorpus.sh chooses them, without and with AdaBN; the better of the two, and whether with AdaBN."""
    members = [work / "checkpoints" / f"{m}_stand_in" / "best.pt" for m in ("cnn", "svm")]
    for adabn in ("", "_adabn"):
        out = study / f"teacher_stand_in{adabn}.json"
        if not out.is_file():
            spectro("ensemble", *members, "--validation", f"{held[0]}={held[1]}", *(["--adabn"] if adabn else []),
                    "--out", out)
    return recipe_ensemble(study, prefix="teacher_stand_in")


def evaluate(study: Path, checkpoint: Path, name: str, test: tuple[str, str], *extra) -> dict:
    out = study / "reports" / name
    if not (out / "report.json").is_file():
        spectro("evaluate", checkpoint, "--corpus", f"{test[0]}={test[1]}", "--out", out, *extra)
    return json.loads((out / "report.json").read_text())["corpora"][test[0]]


def finals(study: Path, work: Path, rows: dict, *, specs, test: tuple[str, str], classes: str) -> None:
    """Every lever whose stand-in validated better than the recipe's, trained on every training corpus (the
    adversary on the test corpus's unlabelled audio), and scored on the test corpus, alone and with AdaBN."""
    names, baseline = [n for n, _ in specs], rows["recipe CNN (DANN)"]
    final = dict(names=names, classes=classes, target=work / "images" / "mel" / test[0], held=None)
    results = {}
    if rows["+ LP-FT"] > baseline or rows["+ LP-FT + WiSE-FT"] > baseline:
        train_cnn(study, work, "lpft", extra=["--set", "train.lp_ft=true"], **final)
        results["LP-FT"] = study / "checkpoints" / "lpft" / "best.pt"
        wise = study / "wise.pt"
        if not wise.is_file():
            spectro("interpolate", study / "checkpoints" / "lpft_stand_in" / "best.pt", "--validation",
                    f"{specs[-1][0]}={specs[-1][1]}", "--bn", "interpolate", "reestimate", "--step", WISE_STEP,
                    "--apply-to", study / "checkpoints" / "lpft" / "best.pt", "--out", wise)
        results["LP-FT + WiSE-FT"] = wise
    if rows["+ randomisation (copies + VTLP)"] > baseline:
        all_copies = augmented_tree(study, specs, classes)
        train_cnn(study, work, "random", extra=["--set", f"data.train_augmented=[{','.join(all_copies)}]",
                                                "--set", "augment.vtlp_p=0.5"], **final)
        results["randomisation"] = study / "checkpoints" / "random" / "best.pt"
    self_rows = {k: v for k, v in rows.items() if k.startswith("+ self-training")}
    best_self = max(self_rows, key=self_rows.get)
    if self_rows[best_self] > baseline:
        fraction = float(best_self.rsplit(" ", 1)[1])
        teacher, adabn = recipe_ensemble(work)
        self_training(study, work, teacher=teacher, adabn=adabn, corpus=test,
                      target_tree=work / "images" / "mel" / test[0], fraction=fraction, run="self", **final)
        results[f"self-training ({fraction})"] = study / "checkpoints" / "self" / "best.pt"
    table = {"recipe CNN (DANN)": work / "checkpoints" / "cnn" / "best.pt", **results}
    scores = {}
    for name, checkpoint in table.items():
        slug = name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "and")
        scores[name] = {"plain": evaluate(study, checkpoint, slug, test),
                        "adabn": evaluate(study, checkpoint, slug + "_adabn", test, "--adabn")}
    (study / "finals.json").write_text(json.dumps(scores, indent=2))
    print(f"\n{test[0]} (accuracy / UAR / macro-F1), as trained and with AdaBN:")
    for name, s in scores.items():
        print(f"  {name:<28} " + "   ".join(f"{m['accuracy']:.3f} / {m['uar']:.3f} / {m['macro_f1']:.3f}"
                                           for m in (s["plain"], s["adabn"])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a finished scripts/crosscorpus.sh work folder")
    parser.add_argument("--train", nargs="+", required=True, metavar="NAME=PATH")
    parser.add_argument("--test", required=True, metavar="NAME=PATH")
    parser.add_argument("--classes", default="4")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS,
                        help="self-training: shares of each class's most confident recordings to try (the best on "
                             "the held-out corpus is kept)")
    parser.add_argument("--loco-only", action="store_true",
                        help="stop after the LOCO-T rows (they need only the recipe's stand-ins)")
    args = parser.parse_args()
    specs = [tuple(s.split("=", 1)) for s in args.train]
    names, held = [n for n, _ in specs], specs[-1]
    work, study = args.work.resolve(), args.out.resolve()
    rows = {}
    stand = dict(names=names[:-1] + [held[0]], classes=args.classes, target=work / "images" / "mel" / held[0],
                 held=held[0])
    rows["+ LP-FT"] = train_cnn(study, work, "lpft_stand_in", extra=["--set", "train.lp_ft=true"], **stand)[
        "validation"]["uar"]
    wise = study / "wise_stand_in.pt"
    if not wise.is_file():
        spectro("interpolate", study / "checkpoints" / "lpft_stand_in" / "best.pt", "--validation",
                f"{held[0]}={held[1]}", "--bn", "interpolate", "reestimate", "--step", WISE_STEP, "--out", wise)
    import torch

    rows["+ LP-FT + WiSE-FT"] = torch.load(wise, weights_only=True)["wise_ft"]["chosen_by"]["uar"]
    baseline = json.loads((work / "checkpoints" / "cnn_stand_in" / "summary.json").read_text())
    rows["recipe CNN (DANN)"] = baseline["validation"]["uar"]
    teacher, adabn = teacher_stand_in(study, work, held)
    for fraction in args.fractions:
        rows[f"+ self-training, fraction {fraction}"] = self_training(
            study, work, teacher=teacher, adabn=adabn, corpus=held, target_tree=work / "images" / "mel" / held[0],
            fraction=fraction, run=f"self{fraction}_stand_in", **stand)["validation"]["uar"]
    copies = augmented_tree(study, specs[:-1], args.classes)
    rows["+ randomisation (copies + VTLP)"] = train_cnn(
        study, work, "random_stand_in", extra=["--set", f"data.train_augmented=[{','.join(copies)}]", "--set",
                                               "augment.vtlp_p=0.5"], **stand)["validation"]["uar"]
    print("\nLOCO-T (validation UAR on all of", held[0], "):")
    for name, uar in rows.items():
        print(f"  {name:<40} {uar:.3f}")
    (study / "loco_t.json").write_text(json.dumps(rows, indent=2))
    if args.loco_only:
        return 0
    finals(study, work, rows, specs=specs, test=tuple(args.test.split("=", 1)), classes=args.classes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
