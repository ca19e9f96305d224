"""The data of a run: training, validation and test sets from image trees, never sharing a speaker or a
recording, and the record of who and what the model learns from."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

from ..config import ExperimentConfig, FeatureConfig, to_dict
from ..corpora import class_names
from ..data import ImageSet, as_sources, read_sources, speaker_split, tree_digests
from ..errors import ConfigError
from ..fileio import describe_path
from ..image_tree import (
    MANIFEST_FILE,
    SETTINGS_FILE,
    read_augmentation,
    read_feature_settings,
    read_image_manifest,
    read_normalisation,
)
from ..leakage import TrainingRecord
from ..manifest import read_pseudo_labels
from ..models import SINGLE_INPUT

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Splits:
    classes: tuple[str, ...]
    features: dict[str, FeatureConfig]  # input name -> the settings its trees were made with
    train: ImageSet
    val: ImageSet
    tests: dict[str, list]  # test corpus -> rows (inputs -> files, utterance), scored after training
    record: TrainingRecord
    train_corpora: list[str]
    train_trees: list
    pseudo: dict = dataclasses.field(default_factory=dict)  # self-training: corpus -> pseudo-labelled count
    normalisation: dict[str, dict] = dataclasses.field(default_factory=dict)  # input -> tree -> its groups, guard

    @classmethod
    def normalisation_of(cls, entries: list[dict[str, str]]) -> dict[str, dict[str, dict]]:
        """Per input, each training tree's record of how its groups were formed (``read_normalisation``),
        for the checkpoint: evaluation sets the guard's threshold from them. A guard that fired on a training
        corpus is said in the log too."""
        records: dict[str, dict[str, dict]] = {}
        for name, tree in ((n, t) for e in entries for n, t in e.items()):
            record = read_normalisation(tree)
            if record is None:
                continue
            records.setdefault(name, {})[str(tree)] = record
            for corpus, guard in record["guard"].items():
                if guard["fired"]:
                    log.warning("%s: the normalisation guard fired on corpus %s (%.3f > %.3f): its recordings were "
                                "rendered with corpus statistics", tree, corpus, guard["value"], guard["threshold"])
        return records

    @property
    def feature_label(self) -> str:
        """"mel" for one input; "mel,gd" (the inputs' features, in order) for several."""
        return ",".join(f.feature for f in self.features.values())


def build_splits(config: ExperimentConfig, *, progress: bool = True) -> Splits:
    """Read the training trees, hold out validation speakers (or a corpus), add augmented copies of the
    training recordings, read the test trees, and check that no held-out set shares a speaker or audio
    with training."""
    data, classes = config.data, class_names(config.data.classes)
    present = _present_entries(config)
    augmented = [as_sources(e) for e in data.train_augmented]
    _check_augmentation(present, "data.train", expected=False)
    _check_augmentation(augmented, "data.train_augmented", expected=True)
    _check_augmentation([as_sources(t) for t in data.test.values()], "data.test", expected=False)
    rows, features = read_sources(present, data.classes, config.labels.map)
    if len({json.dumps(to_dict(f.audio), sort_keys=True) for f in features.values()}) > 1:
        raise ConfigError("the inputs were rendered with different audio settings; one recording must be "
                          "conditioned one way for all inputs")
    utterances = [u for _, u in rows]
    train_idx, val_idx = split_indices(config, utterances)
    tests = {}
    for name, tree in data.test.items():
        tests[name], test_features = read_sources([as_sources(tree)], data.classes, config.labels.map)
        if test_features != features:
            raise ConfigError(f"data.test.{name}: {tree!r} was made with other feature settings (or inputs) than "
                              "the training images; render it with the training settings")
    train_utts, val_utts = [utterances[i] for i in train_idx], [utterances[i] for i in val_idx]
    digests = tree_digests(present)
    record = TrainingRecord.of(train_utts, val_utts, (digests.get(u.path) for u in train_utts))
    record.check("the validation data", val_utts, digests, against_validation=False)
    for name, tree in data.test.items():
        record.check(f"test {name}", [u for _, u in tests[name]], tree_digests([as_sources(tree)]))
    copies = _augmented_copies(config, augmented, features, {u.path for u in train_utts})
    copies += (pseudo := _pseudo_labelled(config, features, classes))
    train = ImageSet([rows[i][0] for i in train_idx] + [p for p, _ in copies], train_utts + [u for _, u in copies],
                     classes, desc="train images", progress=progress)
    val = ImageSet([rows[i][0] for i in val_idx], val_utts, classes, desc="validation images", progress=progress)
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"the split left {len(train)} training and {len(val)} validation utterances; both need some")
    log.info("train: %d utterances from %d speakers; validation: %d from %d speakers (%s)", len(train),
             len({u.speaker for u in train.utterances}), len(val), len({u.speaker for u in val.utterances}),
             ", ".join(sorted({u.speaker for u in val.utterances})))
    return Splits(classes, features, train, val, tests, record, sorted({u.corpus for u in train_utts}),
                  [next(iter(e.values())) if len(e) == 1 else e for e in present],
                  dict(Counter(u.corpus for _, u in pseudo)), Splits.normalisation_of(present))


def _present_entries(config: ExperimentConfig) -> list[dict[str, str]]:
    data = config.data
    entries = [as_sources(e) for e in data.train]
    present = [e for e in entries
               if data.missing_train == "error" or all((Path(t) / MANIFEST_FILE).is_file() for t in e.values())]
    skipped = [e for e in entries if e not in present]
    if skipped:
        log.warning("data.missing_train=skip: no image tree at %s; training without them", skipped)
    if not present:
        trees = ", ".join(describe_path(t) for e in entries for t in e.values())
        raise ConfigError(f"none of the data.train image trees exist: {trees}; make them with `spectro images`")
    return present


def split_indices(config: ExperimentConfig, utterances: list) -> tuple[list[int], list[int]]:
    """Training and validation indices: held-out speakers, or a whole held-out corpus (data.val_corpus)."""
    data = config.data
    if data.val_corpus is None:
        return speaker_split(utterances, val_speakers=data.val_speakers, val_fraction=data.val_fraction,
                             seed=config.train.seed)
    corpora = sorted({u.corpus for u in utterances})
    if data.val_corpus not in corpora or len(corpora) < 2:
        raise ConfigError(f"data.val_corpus={data.val_corpus!r} must be one of several training corpora {corpora}")
    held_out = {i for i, u in enumerate(utterances) if u.corpus == data.val_corpus}
    return [i for i in range(len(utterances)) if i not in held_out], sorted(held_out)


def _augmented_copies(config: ExperimentConfig, entries: list[dict[str, str]], features: dict[str, FeatureConfig],
                      train_recordings: set[str]) -> list:
    """Augmented copies of the training split's recordings; copies of any other recording are left out."""
    if not entries:
        return []
    rows, copy_features = read_sources(entries, config.data.classes, config.labels.map)
    if copy_features != features:
        raise ConfigError("data.train_augmented trees were made with other feature settings (or inputs) than "
                          "data.train; render them with the same settings and --augment")
    kept = [row for row in rows if row[1].path in train_recordings]
    if rows and not kept:
        raise ConfigError(f"none of the {len(rows)} augmented copies in data.train_augmented is a copy of a training "
                          "recording; render them from the same corpus paths as data.train")
    log.info("%d augmented copies of training recordings added; %d copies of recordings outside the training "
             "split (validation speakers, other corpora) left out", len(kept), len(rows) - len(kept))
    return kept


def _pseudo_labelled(config: ExperimentConfig, features: dict[str, FeatureConfig], classes: tuple[str, ...]) -> list:
    """The recordings of data.pseudo trees that their CSV keeps, labelled by it: the trees' own labels are
    replaced unread. They train only; a test corpus among them is scored transductively."""
    rows = []
    for entry in config.data.pseudo:
        if list(features) != [SINGLE_INPUT] or read_feature_settings(entry["tree"]) != features[SINGLE_INPUT]:
            raise ConfigError(f"data.pseudo: {entry['tree']!r} must be one tree made with the training settings")
        labels = read_pseudo_labels(entry["labels"])
        unknown = sorted(set(labels.values()) - set(classes))
        if unknown:
            raise ConfigError(f"data.pseudo: {entry['labels']} labels recordings {unknown}, not classes "
                              f"{list(classes)}")
        found = [(path, dataclasses.replace(u, emotion=labels[u.path]))
                 for path, u in read_image_manifest(entry["tree"]) if u.path in labels]
        if len(found) < len(labels):
            log.warning("data.pseudo: %d of the %d recordings of %s are not in %s", len(labels) - len(found),
                        len(labels), entry["labels"], entry["tree"])
        rows += [({SINGLE_INPUT: path}, u) for path, u in found]
    if rows:
        log.info("self-training: %d pseudo-labelled recording(s) of %s", len(rows), sorted({u.corpus for _, u in rows}))
    return rows


def _check_augmentation(entries: list[dict[str, str]], key: str, *, expected: bool) -> None:
    """Trees of augmented copies belong in data.train_augmented and nowhere else."""
    for entry in entries:
        for tree in entry.values():
            if (Path(tree) / SETTINGS_FILE).is_file() and (read_augmentation(tree) is not None) != expected:
                raise ConfigError(f"{key}: {tree!r} " + ("holds no augmented copies; make it with `spectro images "
                                                         "--augment`"
                                                          if expected else "holds augmented copies, which may only "
                                                                           "train: "
                                                          "list it under data.train_augmented"))
