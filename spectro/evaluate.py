"""`spectro evaluate`: score checkpoints on test corpora, each with its own feature settings.

Recordings are scored as `spectro predict` scores them: every window through the model, and a
recording's probabilities the mean of its windows'. Several checkpoints, or an ensemble file, are
scored member by member and their probabilities averaged with the ensemble's weights.

Writes ``report.json`` and ``report.md`` (accuracy, UAR, macro-F1, kappa, MCC, per-class scores,
confusion matrices, speaker-bootstrap intervals), ``confusion_<corpus>.png`` and
``predictions_<corpus>.csv``, from which every number can be recomputed.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .checkpoint_file import load_trained_model
from .config import FeatureConfig, apply_overrides, from_dict, to_dict
from .corpora import LabelSelection, Utterance, select_labels
from .data import SINGLE_INPUT, ImageSet, as_sources, tree_digests
from .ensemble_file import Member, combine, read_ensemble
from .errors import ConfigError
from .fileio import atomic_open
from .image_tree import (
    MANIFEST_FILE,
    read_augmentation,
    read_feature_settings,
    read_image_manifest,
    read_normalisation,
    read_tree_digests,
    recording_key,
)
from .images import build_image_dataset
from .leakage import TrainingRecord
from .locks import job_lock
from .manifest import scan_corpora
from .metrics import confusion_figure, score_recordings
from .normalise import relative_guard
from .scoring import adapt_batchnorm, batchnorm_layers, predict_proba, resolve_device, scoring_autocast

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TestSet:
    """One corpus to score: its rows (inputs -> files, utterance), what was left out, and the digests of
    its recordings' audio (source path -> digest) for the leakage check."""

    rows: list[tuple[dict[str, Path], Utterance]]
    dropped: dict[str, int]
    skipped: dict[str, int]
    digests: dict[str, str]
    normalisation: dict[str, dict] = dataclasses.field(default_factory=dict)  # input -> its tree's groups and guard


@dataclasses.dataclass
class Options:
    """How test corpora are read and scored; the transductive ones are recorded in the report."""

    corpora: Sequence[tuple[str, str]] = ()
    image_trees: dict[str, str] = dataclasses.field(default_factory=dict)
    corpus_options: dict | None = None
    speakers: Sequence[str] = ()  # score only these speakers' recordings (ensemble weights: validation speakers)
    workers: int | None = None
    device: str = "auto"
    adabn: bool = False  # re-estimate BatchNorm statistics on each test corpus (transductive)
    present_classes: bool = False  # decide among the classes each test corpus has
    normalise: Sequence[str] = ()  # "normalise.KEY=VALUE" overrides of every input's settings for the test corpora
    progress: bool = True


@dataclasses.dataclass
class MemberScores:
    state: dict
    warnings: list[str]
    tests: dict[str, TestSet]
    probabilities: dict[str, np.ndarray]  # corpus -> (recordings, classes), in the order of tests[corpus].rows
    adapted: bool = False  # BatchNorm statistics re-estimated on each corpus (AdaBN)
    features: dict[str, FeatureConfig] = dataclasses.field(default_factory=dict)  # per input, as tests were rendered


def evaluate_checkpoint(checkpoint: str | Path | Sequence[str | Path], out_dir: str | Path, *,
                        n_bootstrap: int = 1000, **options) -> dict:
    """Score a checkpoint, several (equal weights) or an ensemble file on each corpus (rendered into
    ``out_dir/images``) and each existing tree; `options` are the fields of `Options`."""
    opts = Options(**options)
    out_dir = Path(out_dir)
    specs = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    ensemble = read_ensemble(specs)
    members = ensemble.members
    with job_lock(out_dir, "spectro evaluate"):
        scored = [score_member(m.checkpoint, out_dir / "images" / (f"member{i + 1}" if len(members) > 1 else ""),
                               opts) for i, m in enumerate(members)]
        require_adapted(scored, opts)
        ensemble.check_classes([s.state["classes"] for s in scored], ", ".join(map(str, specs)))
        classes = list(scored[0].state["classes"])
        report = _report_header(members, scored, opts)
        for name in scored[0].tests:
            test, probabilities = combined(name, members, scored)
            report["corpora"][name] = _score(test, probabilities, name, classes, out_dir, title=report["run"],
                                             present_classes=opts.present_classes, n_bootstrap=n_bootstrap)
            report["corpora"][name]["normalisation"] = {(f"member {i + 1} " if len(scored) > 1 else "") + n: r
                                                        for i, s in enumerate(scored)
                                                        for n, r in s.tests[name].normalisation.items()}
        report["transductive"] += grouping_steps(report["corpora"])
        with atomic_open(out_dir / "report.json") as handle:
            json.dump(report, handle, indent=2)
        from .report import render_evaluation

        with atomic_open(out_dir / "report.md") as handle:
            handle.write(render_evaluation(report))
    return report


def score_member(checkpoint: str | Path, image_dir: Path, opts: Options) -> MemberScores:
    """One checkpoint's probabilities on every test corpus, after the leakage check."""
    device = resolve_device(opts.device)
    model, state = load_trained_model(checkpoint, device=device)
    inputs = member_inputs(state, opts)
    classes = list(state["classes"])
    tests = read_test_sets(checkpoint, state, image_dir, opts)
    if opts.speakers:  # validation recordings for ensemble weights; corpora without such speakers drop out
        tests = {n: dataclasses.replace(t, rows=[r for r in t.rows if r[1].speaker in set(opts.speakers)])
                 for n, t in tests.items()}
        tests = {n: t for n, t in tests.items() if t.rows}
    if not tests:
        raise ConfigError("nothing to evaluate: pass --corpus NAME=PATH or --images NAME=DIR")
    warnings = check_held_out(state, tests, against_validation=not opts.speakers)
    batch_size = 2 * state["config"]["train"]["batch_size"]
    adapt = opts.adabn and bool(batchnorm_layers(model))  # an ensemble's members without BatchNorm score as trained
    probabilities = {}
    for name, test in tests.items():
        if not test.rows:
            raise ConfigError(f"corpus {name}: no utterance of the classes {classes}")
        images = ImageSet([p for p, _ in test.rows], [u for _, u in test.rows], classes, desc=f"{name} images",
                          progress=opts.progress)
        scorer = model
        if adapt:
            scorer = copy.deepcopy(model)
            adapt_batchnorm(scorer, images, device=device, batch_size=batch_size)
        probabilities[name] = predict_proba(scorer, images, device=device, batch_size=batch_size,
                                            autocast=scoring_autocast(state, device)).numpy()
    return MemberScores(state, warnings, tests, probabilities, adapted=adapt, features=inputs)


def with_normalisation(features: FeatureConfig, overrides: Sequence[str]) -> FeatureConfig:
    """`features` with ``normalise.KEY=VALUE`` `overrides`: to score a checkpoint on test corpora grouped
    by another rule (``normalise.unknown_speakers=encoder``, ``normalise.guard=none``) without retraining.
    Only normalisation settings may change; everything else must stay what the model learnt from."""
    wrong = [o for o in overrides if not o.startswith("normalise.")]
    if wrong:
        raise ConfigError(f"--set {wrong[0]!r}: evaluate changes normalise.* settings of the test corpora only")
    return from_dict(FeatureConfig, apply_overrides(to_dict(features), list(overrides))) if overrides else features


def require_adapted(scored: Sequence[MemberScores], opts: Options) -> None:
    """AdaBN adapts every member that has BatchNorm layers; with none to adapt, --adabn is a mistake."""
    if opts.adabn and not any(s.adapted for s in scored):
        names = sorted({s.state["model_name"] for s in scored})
        raise ConfigError(f"{', '.join(names)}: no BatchNorm layer to adapt; leave out --adabn")


def combined(name: str, members: Sequence[Member], scored: Sequence[MemberScores], *, separate: bool = False):
    """The recordings of corpus `name` that every member scored, with the members' weighted mean
    probabilities for them (or, with `separate`, each member's own, aligned)."""
    first = scored[0].tests[name]
    order = [{u.path: i for i, (_, u) in enumerate(s.tests[name].rows)} for s in scored]
    common = [(files, u) for files, u in first.rows if all(u.path in o for o in order)]
    if len(common) < len(first.rows):
        log.warning("%s: %d recording(s) not scored by every member are left out", name, len(first.rows) - len(common))
    parts = [s.probabilities[name][[o[u.path] for _, u in common]] for s, o in zip(scored, order)]
    test = dataclasses.replace(first, rows=common)
    return (test, parts) if separate else (test, combine(parts, [m.weight for m in members]))


def read_test_sets(checkpoint: str | Path, state: dict, image_dir: Path, opts: Options) -> dict[str, TestSet]:
    """The recordings a checkpoint is to read, by corpus name: each of `opts.corpora` rendered with the
    checkpoint's own feature settings under `image_dir` (resumable), and each of `opts.image_trees`,
    which must have been made with them. Only recordings of the checkpoint's classes, after its label
    mapping, are kept (the others are counted in each set's `dropped`), so a corpus is read as the model
    was taught to read it."""
    inputs = member_inputs(state, opts)
    classes = list(state["classes"])
    mapping = state["config"].get("labels", {}).get("map", {})  # the training's relabelling, e.g. valence
    tests = _render_corpora(inputs, classes, mapping, image_dir, opts)
    return tests | _read_trees(opts.image_trees, inputs, classes, mapping, checkpoint)


def member_inputs(state: dict, opts: Options) -> dict[str, FeatureConfig]:
    """A checkpoint's feature settings per input, with the `normalise.*` overrides of `opts`, and the guard's
    threshold set from the checkpoint's own training corpora where it recorded them."""
    training = state.get("normalisation", {})
    return {name: relative_guard(with_normalisation(from_dict(FeatureConfig, f), opts.normalise),
                                 training.get(name, {}).values()) for name, f in state["inputs"].items()}


def _render_corpora(inputs: dict[str, FeatureConfig], classes: list[str], mapping: dict, image_dir: Path,
                    opts: Options) -> dict[str, TestSet]:
    """Each corpus rendered with every input's settings under `image_dir` (resumable). Where statistics pool a
    speaker's or a corpus's recordings, all of its recordings are rendered, as `spectro images` renders a tree:
    pooling only those of the model's classes would let the test labels choose the statistics."""
    single = list(inputs) == [SINGLE_INPUT]
    scans = scan_corpora(list(opts.corpora), opts.corpus_options)
    names = [scan.corpus for scan in scans] + list(opts.image_trees)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"corpus name(s) {twice} given more than once (--corpus or --images): each set needs a name "
                          "of its own; render one with `spectro images` and pass it as --images NAME=DIR")
    sets = {}
    for scan in scans:
        kept, dropped = select_labels(scan.utterances, classes, mapping)
        rejected, paths, digests, normalisation = set(), {}, {}, {}
        for name, features in inputs.items():
            tree = image_dir / scan.corpus if single else image_dir / name / scan.corpus
            result = build_image_dataset(scan.utterances if features.normalise.grouped else kept, tree, features,
                                         workers=opts.workers, progress=opts.progress)
            rejected |= {u.path for u, _ in result.rejected} & {u.path for u in kept}
            paths[name] = {u.path: tree / recording_key(u) for u in kept}
            digests |= read_tree_digests(tree)
            normalisation[name] = read_normalisation(tree)
        rows = [({name: paths[name][u.path] for name in inputs}, u) for u in kept if u.path not in rejected]
        sets[scan.corpus] = TestSet(rows, {e: n for (_, e), n in dropped.items()},
                                    {"unmatched": len(scan.unmatched), "rejected": len(rejected)}, digests,
                                    {n: r for n, r in normalisation.items() if r is not None})
    return sets


def _read_trees(image_trees: dict[str, str], inputs: dict[str, FeatureConfig], classes: list[str], mapping: dict,
                checkpoint) -> dict[str, TestSet]:
    """Existing image trees made with the checkpoint's settings (single-input models only)."""
    sets = {}
    for name, tree in image_trees.items():
        if list(inputs) != [SINGLE_INPUT]:
            raise ConfigError(f"{checkpoint} reads several inputs {list(inputs)}; pass the corpus itself (--corpus) "
                              "so each input is rendered with its settings")
        if read_augmentation(tree) is not None:
            raise ConfigError(f"image tree {tree!r} holds augmented training copies; test on the recordings themselves")
        if read_feature_settings(tree) != inputs[SINGLE_INPUT]:
            raise ConfigError(f"image tree {tree!r} was made with other feature settings than {checkpoint}; "
                              f"pass the corpus itself (--corpus) so it is rendered with the checkpoint's settings")
        selection = LabelSelection(classes, mapping)
        kept = [(path, utt) for path, utt in ((p, selection(u)) for p, u in read_image_manifest(tree))
                if utt is not None]
        normalisation = read_normalisation(tree)
        sets[name] = TestSet([({SINGLE_INPUT: path}, u) for path, u in kept],
                             {e: n for (_, e), n in selection.dropped.items()}, {"unmatched": 0, "rejected": 0},
                             read_tree_digests(tree), {SINGLE_INPUT: normalisation} if normalisation else {})
    return sets


def check_held_out(state: dict, sets: dict[str, TestSet], *, against_validation: bool = True) -> list[str]:
    """Refuse test sets that share speakers or audio with the checkpoint's training (its record);
    returns warnings for what could not be checked."""
    record = TrainingRecord.from_checkpoint(state)
    warnings = []
    if record is None:
        record, found = _record_from_training_trees(state)
        warnings.append("LEAKAGE NOT CHECKED IN FULL: this checkpoint predates spectro's record of training speakers "
                        "and recordings; " + ("its training trees were found and their speakers checked, but not "
                                              "validation speakers or the audio itself" if found else
                                              "its training image trees are not on this machine, so nothing was "
                                              "checked") + ". Retrain to get a checked evaluation.")
        log.warning(warnings[-1])
    for name, test in sets.items():
        record.check(f"test {name}", [u for _, u in test.rows], test.digests, against_validation=against_validation)
    return warnings


def _record_from_training_trees(state: dict) -> tuple[TrainingRecord, bool]:
    """For checkpoints without a record: the speakers and audio of the training trees still on this machine."""
    trees = [as_sources(entry) for entry in state["config"]["data"]["train"]]
    found = [e for e in trees if (Path(next(iter(e.values()))) / MANIFEST_FILE).is_file()]
    utterances = [u for e in found for _, u in read_image_manifest(next(iter(e.values())))]
    return TrainingRecord.of(utterances, [], tree_digests(found).values()), bool(found)


def _report_header(members: Sequence[Member], scored: Sequence[MemberScores], opts: Options) -> dict:
    """What was scored and how: the model (or ensemble), its training, and every transductive step."""
    state = scored[0].state
    inputs = [f for s in scored for f in s.features.values()]
    best, history = state.get("best", {}), {h["epoch"]: h for h in state.get("history", [])}
    audio = inputs[0].audio
    single = len(members) == 1
    transductive = [f"{f.normalise.mode} normalisation with statistics from each test corpus's own unlabelled audio"
                    for f in inputs if f.normalise.grouped]
    if opts.adabn:
        transductive.append("AdaBN: BatchNorm statistics re-estimated on each test corpus's unlabelled audio")
    transductive += [t for s in scored for t in s.state.get("transductive", [])]  # recorded at training
    return {
        "checkpoint": members[0].checkpoint if single else [m.checkpoint for m in members],
        "run": state["config"]["run"]["name"] if single else f"ensemble of {len(members)}",
        "model": state["model_name"] if single else "+".join(s.state["model_name"] for s in scored),
        "classes": list(state["classes"]), "feature": ",".join(dict.fromkeys(f.feature for f in inputs)),
        "channels": inputs[0].image.channels,
        "train_corpora": sorted({c for s in scored for c in s.state.get("train_corpora", [])}),
        "epoch": state["epoch"] if single else None,
        "validation": history.get(best.get("epoch"), {}).get("val") if single else None,
        "members": [{"checkpoint": m.checkpoint, "weight": m.weight, "model": s.state["model_name"]}
                    for m, s in zip(members, scored)] if not single else [],
        "windows": {"duration": audio.duration, "hop": audio.window_hop, "scoring": "mean of window probabilities"},
        "normalisation": sorted({f.normalise.mode for f in inputs}), "transductive": list(dict.fromkeys(transductive)),
        "decision": "among the classes present in each test corpus" if opts.present_classes else "among all classes",
        "normalisation_overrides": list(opts.normalise),
        "training_guard_fired": sorted({f"{corpus} ({Path(tree).name})" for s in scored
                                        for trees in s.state.get("normalisation", {}).values()
                                        for tree, r in trees.items() for corpus, g in r["guard"].items()
                                        if g["fired"]}),
        "warnings": [w for s in scored for w in s.warnings], "corpora": {},
    }


def grouping_steps(corpora: dict) -> list[str]:
    """The transductive steps of forming groups on test corpora: pseudo-speakers or clusters found in their
    unlabelled audio, and the guard's judgement of whether each corpus's groups carry one emotion each."""
    records = [r for m in corpora.values() for r in m.get("normalisation", {}).values()]
    steps = []
    if any(r["found_without_labels"] for r in records):
        rules = sorted({r["unknown_speakers"] for r in records if r["found_without_labels"]})
        steps.append(f"speaker groups of corpora without speaker labels found in their unlabelled audio "
                     f"({', '.join(rules)})")
    if any(r["guard"] for r in records):
        fired = sorted({c for r in records for c, g in r["guard"].items() if g["fired"]})
        steps.append("normalisation guard judged from each test corpus's unlabelled audio; "
                     + (f"it fired on {', '.join(fired)} (corpus statistics used)" if fired else "it did not fire"))
    return steps


def _score(test: TestSet, probabilities: np.ndarray, name: str, classes: list[str], out_dir: Path, *, title: str,
           present_classes: bool, n_bootstrap: int) -> dict:
    """Metrics of one test set; writes its per-file predictions and confusion figure."""
    import matplotlib.pyplot as plt

    utterances = [u for _, u in test.rows]
    metrics, probabilities = score_recordings(probabilities, utterances, classes, present_classes=present_classes,
                                              n_bootstrap=n_bootstrap)
    predicted = probabilities.argmax(1)
    _write_predictions(out_dir / f"predictions_{name}.csv", utterances, predicted, probabilities.tolist(), classes)
    figure = confusion_figure(metrics["confusion"], classes, title=f"{title} on {name}")
    with atomic_open(out_dir / f"confusion_{name}.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)
    log.info("%s: accuracy %.3f, UAR %.3f (n=%d)", name, metrics["accuracy"], metrics["uar"], metrics["n"])
    return {**metrics, "dropped": test.dropped, **test.skipped}


def _write_predictions(path: Path, utterances, predicted, probs, classes) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "corpus", "speaker", "emotion", "predicted", *(f"p_{c}" for c in classes)])
        for utt, pred, p in zip(utterances, predicted, probs):
            writer.writerow([utt.path, utt.corpus, utt.speaker, utt.emotion, classes[pred], *(f"{v:.6f}" for v in p)])
