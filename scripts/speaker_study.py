#!/usr/bin/env python
"""Issue 27's study: pseudo-speakers from a speaker encoder, and the guard against speakers who each show
one emotion. Calibrates both on the training corpora and generated ones, builds the test-corpus
variants, scores the ablation rows and prints the README's tables.

    python scripts/speaker_study.py --data ../shared/data --work /tmp/speakers            # everything
    python scripts/speaker_study.py --data ../shared/data --work /tmp/speakers --steps calibrate
    python scripts/speaker_study.py ... --recipe crosscorpus/4/ensemble.json             # + the recipe's rows

Steps:
  calibrate  every recording of RAVDESS, TESS and a generated corpus (12 synthetic voices) is embedded by
             the speaker encoder and summarised by its band means (the 184 statistics, the log-mel bands);
             prints the adjusted Rand index of encoder clusters against the true speakers for each cut
             (speaker labels hidden from the clustering, read only to score), the cut with the best mean
             over RAVDESS and TESS, and the guard's statistic (intraclass correlation of band means between
             groups) for true speakers, "confounded" speakers (each keeps the recordings of one emotion)
             and encoder pseudo-speakers, with the threshold midway between balanced and confounded.
             EMO-DB is not read.
  table      EMO-DB variants as symlink folders under WORK/corpora: as distributed, "confounded" (each
             speaker keeps one of the 4 classes' emotions, round robin over its emotions in class order),
             and both with speaker labels hidden (a folder corpus without speaker folders); two SVM members
             (the recipe's, speaker normalisation; and one without normalisation) trained on RAVDESS + TESS;
             each row evaluated with its normalisation rule (``spectro evaluate --set normalise.*``). EMO-DB's
             labels are read only to score; intervals resample its 10 true speakers, also where they were
             hidden from the pipeline.

Timing on the project's 2-core machine: see README (Corpora without speaker labels).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("neutral", "happy", "sad", "angry")
CUTS = np.round(np.arange(0.20, 0.6001, 0.025), 3)


# --- calibration ------------------------------------------------------------------------------------------

def _profile(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(184 statistics, 128 log-mel band means, speaker embedding) of one recording, as the image job's
    statistics pass computes them with the recipe's settings."""
    from spectro.audio import audio_windows, load_audio
    from spectro.features import recording_statistics
    from spectro.speakers import embed

    stats, mel = _recipe_features()
    y = load_audio(path, sr=stats.audio.sample_rate)
    windows = audio_windows(y, stats.audio)
    return (recording_statistics(windows, stats).mean, recording_statistics(windows, mel).mean,
            embed(y, stats.audio.sample_rate))


@functools.lru_cache(maxsize=1)
def _recipe_features():
    from spectro.config import FeatureConfig, from_dict, load_yaml

    return tuple(from_dict(FeatureConfig, load_yaml(ROOT / f"configs/features_crosscorpus_{kind}.yaml"))
                 for kind in ("stats", "mel"))


def _init_worker() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def corpus_profiles(name: str, root: Path, cache: Path, workers: int) -> dict:
    """Paths, speakers, emotions and the three profiles of every recording of a corpus (cached)."""
    from spectro.corpora import scan_corpus

    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        return {k: saved[k] for k in saved.files}
    utterances = sorted(scan_corpus(name, root).utterances, key=lambda u: u.path)
    with multiprocessing.get_context("fork").Pool(workers, _init_worker) as pool:
        found = pool.map(_profile, [u.path for u in utterances], chunksize=8)
    data = {"path": np.array([u.path for u in utterances]), "speaker": np.array([u.speaker for u in utterances]),
            "emotion": np.array([u.emotion for u in utterances]),
            **{kind: np.stack([f[i] for f in found]) for i, kind in enumerate(("stats", "mel", "embedding"))}}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **data)
    return data


def confounded(speakers, emotions, order=CLASSES) -> np.ndarray:
    """Indices of the recordings kept when each speaker (in sorted order, the i-th) keeps only the recordings
    of its i-th emotion (round robin over the emotions it has, in `order`, then any others sorted)."""
    speakers, emotions = np.asarray(speakers), np.asarray(emotions)
    rank = {e: i for i, e in enumerate(order)}
    keep = {}
    for i, speaker in enumerate(sorted(set(speakers.tolist()))):
        have = sorted(set(emotions[speakers == speaker].tolist()), key=lambda e: (rank.get(e, len(rank)), e))
        keep[speaker] = have[i % len(have)]
    return np.array([i for i, (s, e) in enumerate(zip(speakers, emotions)) if keep[s] == e])


def calibrate(args) -> dict:
    """The encoder's cut and the guard's thresholds, from RAVDESS, TESS and generated corpora only."""
    from sklearn.metrics import adjusted_rand_score

    from spectro.speakers import cluster
    from spectro.synth import generate_corpus

    generate_corpus(args.work / "corpora/synth", speakers_per_language=6, utterances_per_emotion=8, seed=27)
    sources = {"ravdess": ("ravdess", args.data / "RAVDESS"), "tess": ("tess", args.data / "TESS"),
               "synth": ("synth", args.work / "corpora/synth")}
    loaded = {n: corpus_profiles(kind, root, args.work / f"calibration/{n}.npz", args.workers)
              for n, (kind, root) in sources.items()}
    corpora = {"ravdess": loaded["ravdess"], "tess": loaded["tess"]}
    for language in ("synth-a", "synth-b"):  # the generated corpus's two languages, as two corpora of 6 voices
        keep = np.char.startswith(loaded["synth"]["speaker"], language)
        corpora[language] = {k: v[keep] for k, v in loaded["synth"].items()}
    print("\n## Encoder clusters against the true speakers (adjusted Rand index; labels hidden from clustering)\n")
    ari = {n: [adjusted_rand_score(c["speaker"], cluster(c["embedding"], cut)) for cut in CUTS]
           for n, c in corpora.items()}
    counts = {n: [len(set(cluster(c["embedding"], cut))) for cut in CUTS] for n, c in corpora.items()}
    print("| cut | " + " | ".join(f"{n} ARI (groups)" for n in corpora) + " | mean RAVDESS, TESS |")
    print("|---" * (len(corpora) + 2) + "|")
    for i, cut in enumerate(CUTS):
        cells = " | ".join(f"{ari[n][i]:.3f} ({counts[n][i]})" for n in corpora)
        print(f"| {cut:.3f} | {cells} | {(ari['ravdess'][i] + ari['tess'][i]) / 2:.3f} |")
    best = int(np.argmax([(a + b) / 2 for a, b in zip(ari["ravdess"], ari["tess"])]))
    cut = float(CUTS[best])
    mean = (ari["ravdess"][best] + ari["tess"][best]) / 2
    print(f"\nchosen cut {cut:.3f}: mean ARI {mean:.3f} over RAVDESS and TESS; "
          f"{', '.join(f'{n} {ari[n][best]:.3f} ({counts[n][best]} groups)' for n in corpora)}")
    values = _guard_values(corpora, cut)
    return {"encoder_threshold": cut, **_guard_rules(values)}


def _guard_values(corpora: dict, cut: float) -> dict:
    """The guard's statistic for every corpus, recording set and grouping, per feature; printed as a table."""
    from sklearn.metrics import adjusted_rand_score

    from spectro.normalise import intraclass_correlation
    from spectro.speakers import cluster

    values = {}
    for name, c in corpora.items():
        subsets = {"all emotions": np.arange(len(c["path"])),
                   "4 classes": np.flatnonzero(np.isin(c["emotion"], CLASSES))}
        for subset, index in subsets.items():
            if subset == "4 classes" and len(index) == len(c["path"]):
                continue  # the generated corpora have the 4 classes only
            kept = {k: v[index] for k, v in c.items()}
            mixed = confounded(kept["speaker"], kept["emotion"])
            for grouping, rows_of, groups in (
                    ("true speakers", slice(None), kept["speaker"]),
                    ("confounded speakers", mixed, kept["speaker"][mixed]),
                    ("encoder, labels hidden", slice(None), cluster(kept["embedding"], cut)),
                    ("encoder on confounded, labels hidden", mixed, cluster(kept["embedding"][mixed], cut))):
                ari = adjusted_rand_score(kept["speaker"][rows_of], groups)
                values[(name, subset, grouping)] = (len(set(groups.tolist())), ari, {
                    f: intraclass_correlation(kept[f][rows_of], groups) for f in ("stats", "mel")})
    print("\n## The guard's statistic: intraclass correlation of band means between groups (median over bands)\n")
    print("| corpus | recordings | grouping | groups (ARI) | stats | mel |\n|---|---|---|---|---|---|")
    for (name, subset, grouping), (k, ari, v) in values.items():
        cells = " | ".join("undefined" if v[f] is None else f"{v[f]:.3f}" for f in ("stats", "mel"))
        print(f"| {name} | {subset} | {grouping} | {k} ({ari:.2f}) | {cells} |")
    return values


def _guard_rules(values: dict) -> dict:
    """Per feature, the absolute threshold (midway between the highest balanced and the lowest confounded
    value); and the ratios to the training corpus's value, over leave-one-corpus-out pairs (RAVDESS <-> TESS,
    synth-a <-> synth-b), each the geometric midpoint between the highest ratio that must stay quiet and the
    lowest that must fire: for groups given by labels, balanced against confounded speakers; for encoder
    groups, those that recover the speakers of a balanced corpus (ARI >= 0.9) against the others."""
    pairs = (("ravdess", "tess"), ("tess", "ravdess"), ("synth-a", "synth-b"), ("synth-b", "synth-a"))
    absolute, quiet, fire = {}, defaultdict(list), defaultdict(list)
    for f in ("stats", "mel"):
        balanced = [v[f] for (_, _, g), (_, _, v) in values.items() if g == "true speakers"]
        mixed = [v[f] for (_, _, g), (_, _, v) in values.items() if g == "confounded speakers"]
        absolute[f] = round((max(balanced) + min(mixed)) / 2, 3)
        for test, train in pairs:
            reference = values[(train, "all emotions", "true speakers")][2][f]
            for (name, _, grouping), (_, ari, v) in values.items():
                if name != test or v[f] is None:
                    continue
                kind = "labels" if grouping in ("true speakers", "confounded speakers") else "found"
                stays = grouping == "true speakers" or (grouping == "encoder, labels hidden" and ari >= 0.9)
                (quiet if stays else fire)[kind].append(v[f] / reference)
        print(f"\n{f}: balanced max {max(balanced):.3f}, confounded min {min(mixed):.3f} -> absolute threshold "
              f"{absolute[f]:.3f}")
    ratios = {kind: float(np.sqrt(max(quiet[kind]) * min(fire[kind]))) for kind in ("labels", "found")}
    for kind in ("labels", "found"):
        print(f"ratio to the training corpus, groups {kind}: quiet max {max(quiet[kind]):.2f}, fire min "
              f"{min(fire[kind]):.2f} -> {ratios[kind]:.2f}")
    return {"guard_thresholds": absolute, "guard_ratio": round(ratios["labels"], 2),
            "guard_ratio_found": round(ratios["found"], 2)}


# --- the ablation table --------------------------------------------------------------------------------------

ROWS = [  # name, which variant of the test corpus, which member, evaluate --set overrides
    ("none", "labelled", "none", []),
    ("corpus statistics (speakers hidden)", "hidden", "speaker", ["normalise.unknown_speakers=corpus"]),
    ("true speakers, no guard", "labelled", "speaker", ["normalise.guard=none"]),
    ("k-means clusters (speakers hidden), no guard", "hidden", "speaker",
     ["normalise.unknown_speakers=clusters", "normalise.guard=none"]),
    ("encoder pseudo-speakers (speakers hidden), no guard", "hidden", "speaker",
     ["normalise.unknown_speakers=encoder", "normalise.guard=none"]),
    ("true speakers, guarded (default)", "labelled", "speaker", []),
    ("encoder pseudo-speakers (speakers hidden), guarded", "hidden", "speaker", ["normalise.unknown_speakers=encoder"]),
]


def emodb_variants(data: Path, work: Path) -> dict[str, tuple[str, Path]]:
    """(corpus parser, folder) of EMO-DB as distributed, confounded, and both with speakers hidden: symlinks."""
    from spectro.corpora import scan_corpus

    utterances = sorted(scan_corpus("emodb", data / "EMO-DB").utterances, key=lambda u: u.path)
    four = [u for u in utterances if u.emotion in CLASSES]
    mixed = [four[i] for i in confounded([u.speaker for u in four], [u.emotion for u in four])]
    variants = {}
    for subset, chosen in (("normal", utterances), ("confounded", mixed)):
        labelled, hidden = work / f"corpora/emodb-{subset}", work / f"corpora/emodb-{subset}-hidden"
        for u in chosen:
            for link in (labelled / Path(u.path).name, hidden / u.emotion / Path(u.path).name):
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(u.path)
        variants[(subset, "labelled")] = ("emodb", labelled)
        variants[(subset, "hidden")] = ("folder", hidden)
    return variants


def train_members(args) -> dict[str, Path]:
    """The SVM member with the recipe's speaker normalisation, and one without, on RAVDESS + TESS."""
    from spectro.config import FeatureConfig, apply_overrides, from_dict, load_experiment, load_yaml
    from spectro.corpora import scan_corpus
    from spectro.images import build_image_dataset
    from spectro.training import Trainer

    stats = load_yaml(ROOT / "configs/features_crosscorpus_stats.yaml")
    members = {}
    for member, overrides in (("speaker", []), ("none", ["normalise.mode=none"])):
        features = from_dict(FeatureConfig, apply_overrides(stats, overrides))
        trees = []
        for name, folder in (("ravdess", "RAVDESS"), ("tess", "TESS")):
            tree = args.work / f"images/stats-{member}/{name}"
            build_image_dataset(scan_corpus(name, args.data / folder).utterances, tree, features,
                                workers=args.workers, progress=False)
            trees.append(str(tree))
        config = load_experiment(ROOT / "configs/crosscorpus_svm.yaml", [
            f"data.train=[{','.join(trees)}]", "data.classes=4", f"run.name=svm-{member}",
            f"run.checkpoint_dir={args.work / 'checkpoints'}", f"run.log_dir={args.work / 'runs'}"])
        Trainer(config, progress=False).fit(resume=True)  # a finished run is not redone
        members[member] = args.work / f"checkpoints/svm-{member}/best.pt"
    return members


def score_row(checkpoint, corpus: tuple[str, Path], overrides: list[str], out: Path, args) -> dict:
    """Evaluate one row and score it again with EMO-DB's true speakers (a hidden variant's pipeline saw
    each file as its own speaker; the intervals must still resample speakers)."""
    from spectro.corpora import Utterance
    from spectro.evaluate import evaluate_checkpoint
    from spectro.metrics import score_recordings

    parser, folder = corpus
    options = {"folder": {"name": "emodb-hidden"}} if parser == "folder" else None
    report = evaluate_checkpoint(checkpoint, out, corpora=[(parser, str(folder))], corpus_options=options,
                                 normalise=overrides, workers=args.workers, progress=False)
    name = next(iter(report["corpora"]))
    classes = report["classes"]
    with open(out / f"predictions_{name}.csv", newline="") as handle:
        import csv

        rows = list(csv.DictReader(handle))
    speakers = [f"emodb-{Path(os.path.realpath(r['path'])).name[:2]}" for r in rows]
    utterances = [Utterance(path=r["path"], corpus="emodb", speaker=s, emotion=r["emotion"], language="de")
                  for r, s in zip(rows, speakers)]
    metrics, _ = score_recordings(np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]), utterances, classes)
    groups = next(iter(report["corpora"][name]["normalisation"].values()), None)
    return {"metrics": metrics, "normalisation": groups, "ari": _ari(out, rows, speakers)}


def _ari(out: Path, rows: list[dict], speakers: list[str]) -> float | None:
    """ARI of the groups the tree formed against EMO-DB's true speakers (scoring only)."""
    from sklearn.metrics import adjusted_rand_score

    found = list(out.glob("images/**/normalisation.json"))
    if not found:
        return None
    assignment = json.loads(found[0].read_text())["assignment"]
    by_real = {os.path.realpath(p): g for p, g in assignment.items()}
    return float(adjusted_rand_score(speakers, [by_real[os.path.realpath(r["path"])] for r in rows]))


def table(args, calibration: dict | None) -> None:
    variants = emodb_variants(args.data, args.work)
    members = {"speaker": args.svm_speaker, "none": args.svm_none}
    if not (members["speaker"] and members["none"]):
        members = train_members(args)
    models = [("SVM", members)] + ([("recipe", {"speaker": args.recipe, "none": None})] if args.recipe else [])
    results = {}
    for model, checkpoints in models:
        for subset in ("normal", "confounded"):
            for row, variant, member, overrides in ROWS:
                if checkpoints[member] is None:
                    continue
                out = args.work / f"eval/{model}/{subset}/{ROWS.index((row, variant, member, overrides))}"
                results[(model, subset, row)] = score_row(checkpoints[member], variants[(subset, variant)], overrides,
                                                          out, args)
    _print_table(results, models)


def _print_table(results: dict, models) -> None:
    def cell(m, key):
        low, high = m["ci95"][key]
        return f"{m[key]:.3f} ({low:.3f}-{high:.3f})"

    print("\n## EMO-DB, 4 classes: accuracy / UAR / macro-F1 (95% intervals resample the 10 true speakers)\n")
    print("| model | subset | row | n | groups (ARI vs true speakers) | guard | accuracy | UAR | macro-F1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (model, subset, row), r in results.items():
        m, g = r["metrics"], r["normalisation"]
        record = next(iter(g["guard"].values()), None) if g else None
        groups = "-" if g is None else f"{g['groups']}" + ("" if r["ari"] is None else f" ({r['ari']:.2f})")
        guard = "-" if record is None else "n/a (one group)" if record["value"] is None else (
            f"{record['value']:.3f} {'>' if record['fired'] else '<='} {record['threshold']:.3f}: "
            + ("fired" if record["fired"] else "quiet"))
        if record and record["fired"]:
            groups = f"{record['groups']} -> 1"  # the groups the guard saw, then the corpus
        print(f"| {model} | {subset} | {row} | {m['n']} | {groups} | {guard} | {cell(m, 'accuracy')} | "
              f"{cell(m, 'uar')} | {cell(m, 'macro_f1')} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding RAVDESS/, TESS/ and EMO-DB/")
    parser.add_argument("--work", type=Path, required=True, help="where corpora variants, trees and reports go")
    parser.add_argument("--steps", default="calibrate,table", help="comma list of: calibrate, table")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--svm-speaker", type=Path, help="reuse this speaker-normalised SVM member instead of training")
    parser.add_argument("--svm-none", type=Path, help="reuse this SVM member without normalisation")
    parser.add_argument("--recipe", type=Path, help="also score the recipe's ensemble file (or a checkpoint)")
    args = parser.parse_args()
    args.data, args.work = args.data.resolve(), args.work.resolve()
    steps = set(args.steps.split(","))
    calibration = calibrate(args) if "calibrate" in steps else None
    if calibration:
        print(f"\ncalibration: {json.dumps(calibration)}")
    if "table" in steps:
        table(args, calibration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
