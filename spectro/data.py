"""Training data from image trees: speaker-independent splits and an in-memory uint8 cache of every window."""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import FeatureConfig
from .corpora import LabelSelection, Utterance, describe_drops
from .errors import ConfigError, DataError
from .images import load_array, read_feature_settings, read_image_manifest, read_tree_digests

log = logging.getLogger(__name__)


SINGLE_INPUT = "image"  # the input name of single-input models


class ImageSet:
    """The inputs of one split, decoded once: every window of every utterance, kept together.

    Each input is a tensor over windows: uint8 images (W, 3, H, W) or float16 matrices (W, F, T).
    Matrices of different lengths (features rendered with ``audio.duration: null``) are zero-padded
    to the longest, and `lengths` keeps each one's frame count. `owner[i]` is the utterance of
    window i: models score windows, and an utterance's score is the mean over its windows. `paths`
    holds one path per utterance (a single-input set) or a mapping input name -> path (multi-input).
    """

    def __init__(self, paths: Sequence[Path] | Sequence[dict[str, Path]], utterances: Sequence[Utterance],
                 classes: Sequence[str] | None, *, desc: str = "loading", progress: bool = True):
        sources = [p if isinstance(p, dict) else {SINGLE_INPUT: p} for p in paths]
        names = list(sources[0]) if sources else [SINGLE_INPUT]
        self.utterances = list(utterances)
        self.classes = tuple(classes or ())
        index = {name: i for i, name in enumerate(self.classes)}  # no classes: unlabelled audio, labels never read
        self.labels = torch.tensor([index[u.emotion] if classes else 0 for u in utterances], dtype=torch.long)
        self.inputs, self.lengths, counts = {}, {}, {}
        for name in names:
            self.inputs[name], self.lengths[name], counts[name] = _decode_all(
                [s[name] for s in sources], desc=desc if len(names) == 1 else f"{desc}: {name}", progress=progress)
        first = counts[names[0]]
        if any(not torch.equal(c, first) for c in counts.values()):
            raise DataError(f"the inputs {names} hold different numbers of windows for one recording; render every "
                            "input with the same audio settings")
        self.owner = torch.repeat_interleave(torch.arange(len(self.utterances)), first)
        self.window_labels = self.labels[self.owner]

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def n_windows(self) -> int:
        return len(self.owner)

    def batch(self, windows: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """Model inputs of these windows by name (images scaled to [0, 1]; sequences cut to the batch's
        longest), their lengths in frames, and their labels."""
        inputs, lengths = {}, {}
        for name, stored in self.inputs.items():
            lengths[name] = self.lengths[name][windows]
            longest = int(lengths[name].max()) if len(windows) and stored.ndim == 3 else stored.shape[-1]
            inputs[name] = as_model_input(stored[windows][..., :longest])
        return inputs, lengths, self.window_labels[windows]

    def class_counts(self) -> torch.Tensor:
        """Windows per class: what the training loss sees."""
        return torch.bincount(self.window_labels, minlength=len(self.classes))


def as_model_input(stored: torch.Tensor) -> torch.Tensor:
    """Float model input from stored arrays: uint8 pictures scaled to [0, 1], matrices as they are."""
    return stored.float().div_(255) if stored.dtype == torch.uint8 else stored.float()


def _decode_all(paths: list[Path], *, desc: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every window of every file, with each window's length and each file's window count."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) listed in a manifest are missing, e.g. {missing[0]}; "
                        "rerun `spectro images` to restore them")
    with ThreadPoolExecutor() as pool:  # PNG decoding releases the GIL
        arrays = list(tqdm(pool.map(_read, paths), total=len(paths), desc=desc, unit="img",
                           disable=not progress, leave=False))
    if not arrays:
        return (torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.long),
                torch.empty(0, dtype=torch.long))
    counts = torch.tensor([len(a) for a in arrays])
    lengths = torch.tensor([a.shape[-1] for a in arrays]).repeat_interleave(counts)
    shapes = {a.shape[1:-1] if a.ndim == 3 else a.shape[1:] for a in arrays}  # matrices may differ in length only
    if len(shapes) > 1:
        raise DataError(f"inputs of different sizes in one split: {sorted(shapes)}")
    stacked = np.zeros((int(counts.sum()), *arrays[0].shape[1:-1], int(lengths.max())), dtype=arrays[0].dtype)
    row = 0
    for a in arrays:
        stacked[row:row + len(a), ..., : a.shape[-1]] = a
        row += len(a)
    return torch.from_numpy(stacked), lengths, counts


def _read(path: Path) -> np.ndarray:
    try:
        return load_array(path)
    except Exception as error:  # truncated PNG, damaged .npy: PIL and numpy raise many kinds
        raise DataError(f"cannot read {path} ({type(error).__name__}: {error}); repair the tree with the same "
                        "`spectro images ...` command plus --verify") from None


def read_image_trees(dirs: Sequence[str | Path], labels: LabelSelection
                     ) -> tuple[list[tuple[Path, Utterance]], FeatureConfig]:
    """Rows of the chosen classes (relabelled by `labels`) from image trees that share feature settings."""
    rows, settings = [], None
    for directory in dirs:
        tree_settings = read_feature_settings(directory)
        if settings is not None and tree_settings != settings:
            raise ConfigError(f"image tree {str(directory)!r} was made with other feature settings than "
                              f"{str(dirs[0])!r}; render them with the same settings")
        settings = tree_settings
        rows += read_image_manifest(directory)
    kept = [(path, utt) for path, utt in ((p, labels(u)) for p, u in rows) if utt is not None]
    return kept, settings


def as_sources(entry: str | dict[str, str]) -> dict[str, str]:
    """A data entry as input name -> tree: a plain tree feeds the single input."""
    return {SINGLE_INPUT: entry} if isinstance(entry, str) else dict(entry)


def read_sources(entries: Sequence[dict[str, str]], classes: int | Sequence[str], mapping: dict[str, str] | None = None
                 ) -> tuple[list[tuple[dict[str, Path], Utterance]], dict[str, FeatureConfig]]:
    """Utterances of the chosen classes (after `mapping`) found in every input's tree, with their
    per-input files and each input's settings; what is left out is counted in the log, per corpus.

    Every entry must name the same inputs, and one input must have one set of feature settings.
    """
    names = list(entries[0])
    features: dict[str, FeatureConfig] = {}
    rows = []
    for entry in entries:
        if sorted(entry) != sorted(names):
            raise ConfigError(f"data entries name different inputs: {sorted(entry)} and {sorted(names)}")
        per_input = {}
        for name, tree in entry.items():
            labels = LabelSelection(classes, mapping)
            found, settings = read_image_trees([tree], labels)
            if labels.dropped:
                log.info("%s: %d utterance(s) outside the classes left out (%s)", tree, sum(labels.dropped.values()),
                         describe_drops(labels.dropped))
            if features.setdefault(name, settings) != settings:
                raise ConfigError(f"input {name!r}: {tree!r} was made with other feature settings than the other "
                                  f"{name!r} trees; render them with the same settings")
            per_input[name] = {path.relative_to(tree).with_suffix("").as_posix(): (path, utt) for path, utt in found}
        common = set.intersection(*(set(found) for found in per_input.values()))
        lost = max(len(found) for found in per_input.values()) - len(common)
        if lost:
            log.warning("%d utterance(s) of %s lack one of the inputs %s and are left out", lost, entry, names)
        first = per_input[names[0]]
        rows += [({name: per_input[name][key][0] for name in names}, first[key][1]) for key in first if key in common]
    return rows, features


def speaker_split(utterances: Sequence[Utterance], *, val_speakers: Sequence[str] = (), val_fraction: float = 0.2,
                  seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of training and validation utterances, never sharing a speaker.

    Named `val_speakers` win; otherwise, within each corpus and gender, ``round(val_fraction * n)``
    speakers are drawn with `seed` (at least one speaker overall).
    """
    speakers = sorted({u.speaker for u in utterances})
    if val_speakers:
        unknown = sorted(set(val_speakers) - set(speakers))
        if unknown:
            raise ConfigError(f"data.val_speakers names speaker(s) {unknown} not in the training data")
        chosen = set(val_speakers)
    else:
        if not 0 < val_fraction < 1:
            raise ConfigError(f"data.val_fraction={val_fraction} must be in (0, 1)")
        groups: dict[tuple[str, str], set[str]] = defaultdict(set)
        for u in utterances:
            groups[(u.corpus, u.gender)].add(u.speaker)
        rng = np.random.default_rng(seed)
        chosen = set()
        for key in sorted(groups):
            group = sorted(groups[key])
            chosen.update(rng.permutation(group)[: int(round(val_fraction * len(group)))].tolist())
        if not chosen:
            largest = max(sorted(groups), key=lambda k: len(groups[k]))
            chosen = {sorted(groups[largest])[int(rng.integers(len(groups[largest])))]}
    if len(chosen) == len(speakers):
        raise ConfigError("every training speaker would be a validation speaker; lower data.val_fraction")
    train = [i for i, u in enumerate(utterances) if u.speaker not in chosen]
    val = [i for i, u in enumerate(utterances) if u.speaker in chosen]
    return train, val


def tree_digests(entries: Sequence[dict[str, str]]) -> dict[str, str]:
    """Recording (source path) -> audio digest, from the manifests of the data entries' trees."""
    digests: dict[str, str] = {}
    for entry in entries:
        digests.update(read_tree_digests(next(iter(entry.values()))))  # every input of an entry holds the same recordings
    return digests


def class_weights(counts: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights averaging 1 over present classes (absent classes get 0)."""
    counts = counts.float()
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
