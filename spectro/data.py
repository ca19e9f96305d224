"""Training data from image trees: the windows of each split read from the trees' packed copies, speaker-independent
splits, and the epoch sampler and loader."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .config import FeatureConfig
from .corpora import LabelSelection, Utterance, describe_drops
from .errors import ConfigError, DataError
from .image_tree import read_feature_settings, read_image_manifest, read_tree_digests
from .models import SINGLE_INPUT

log = logging.getLogger(__name__)


class ImageSet:
    """The inputs of one split: every window of every utterance, kept together, read on demand from the
    trees' packed copies (``spectro.packed``), so memory does not grow with the split.

    Each input gives, per window, a uint8 picture (3, H, W) or a float16 matrix (F, T); matrices of
    different lengths (features rendered with ``audio.duration: null``) are padded per batch to its
    longest, and `lengths` keeps each window's frame count. `owner[i]` is the utterance of window i:
    models score windows, and an utterance's score is the mean over its windows. `paths` holds one
    path per utterance (a single-input set) or a mapping input name -> path (multi-input); with
    `classes` None the audio is unlabelled and labels are never read.
    """

    def __init__(self, paths: Sequence[Path] | Sequence[dict[str, Path]], utterances: Sequence[Utterance],
                 classes: Sequence[str] | None, *, desc: str = "loading", progress: bool = True):
        sources = [p if isinstance(p, dict) else {SINGLE_INPUT: p} for p in paths]
        names = list(sources[0]) if sources else [SINGLE_INPUT]
        self.utterances = list(utterances)
        self.classes = tuple(classes or ())
        index = {name: i for i, name in enumerate(self.classes)}
        self.labels = torch.tensor([index[u.emotion] if classes else 0 for u in utterances], dtype=torch.long)
        self.windows = {name: WindowTable([Path(s[name]) for s in sources]) for name in names}
        counts = {name: table.counts for name, table in self.windows.items()}
        first = counts[names[0]]
        if any(not torch.equal(c, first) for c in counts.values()):
            raise DataError(f"the inputs {names} hold different numbers of windows for one recording; render every "
                            "input with the same audio settings")
        self.owner = torch.repeat_interleave(torch.arange(len(self.utterances)), first)
        self.window_labels = self.labels[self.owner]
        self.lengths = {name: table.lengths for name, table in self.windows.items()}

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def n_windows(self) -> int:
        return len(self.owner)

    def stored(self, windows: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """These windows as stored (uint8 pictures, float16 matrices cut to the batch's longest), their
        lengths in frames and their labels: what a loader hands over, to be made float on the device."""
        order = windows.tolist()
        inputs = {name: torch.from_numpy(table.gather(order)) for name, table in self.windows.items()}
        return inputs, {name: n[windows] for name, n in self.lengths.items()}, self.window_labels[windows]

    def batch(self, windows: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """Model inputs of these windows by name (pictures scaled to [0, 1]), their lengths and labels."""
        inputs, lengths, labels = self.stored(windows)
        return {name: as_model_input(x) for name, x in inputs.items()}, lengths, labels

    def window_shape(self, name: str = SINGLE_INPUT) -> tuple[int, ...]:
        """One window's shape: (3, H, W) for pictures, (F,) for matrices (any length)."""
        return self.windows[name].shape

    def class_counts(self) -> torch.Tensor:
        """Windows per class: what the training loss sees."""
        return torch.bincount(self.window_labels, minlength=len(self.classes))


class WindowTable:
    """Where each window of a list of files lies in the packed copies of their trees."""

    def __init__(self, paths: list[Path]):
        from .packed import packed_tree

        trees, tree_ids, rows, counts = {}, [], [], []
        for path in paths:
            root = path.parent.parent  # <tree>/<label>/<recording>
            if root not in trees:
                trees[root] = packed_tree(root)
            tree = trees[root]
            rel = path.relative_to(root).as_posix()
            if rel not in tree.windows:
                raise DataError(f"{path} is not a recording of its tree's packed store; rerun `spectro images` to "
                                "restore it")
            start, count = tree.windows[rel]
            tree_ids.append(np.full(count, list(trees).index(root)))
            rows.append(np.arange(start, start + count))
            counts.append(count)
        self.trees = list(trees.values())
        self.tree_of = np.concatenate(tree_ids) if tree_ids else np.zeros(0, dtype=np.int64)
        self.row_of = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        self.counts = torch.tensor(counts, dtype=torch.long)
        self.matrices = bool(self.trees) and self.trees[0].matrices
        if any(t.matrices != self.matrices for t in self.trees) or len({t.item_shape for t in self.trees}) > 1:
            raise DataError(f"inputs of different kinds or sizes in one split: {[t.root for t in self.trees]}")
        self.lengths = torch.from_numpy(self._lengths())

    def _lengths(self) -> np.ndarray:
        if not self.trees:
            return np.zeros(0, dtype=np.int64)
        if self.matrices:
            return np.array([self.trees[t].spans[r, 1] for t, r in zip(self.tree_of, self.row_of)], dtype=np.int64)
        return np.full(len(self.row_of), self.shape[-1], dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        """One window's: (3, H, W) for pictures, (features,) for matrices (of any length)."""
        return self.trees[0].item_shape

    def gather(self, windows: list[int]) -> np.ndarray:
        """The stored arrays of these windows, in this order; matrices padded to the longest of them."""
        if not self.matrices:
            out = np.empty((len(windows), *self.shape), dtype=np.uint8)
            for i, w in enumerate(windows):
                self.trees[self.tree_of[w]].read_into(int(self.row_of[w]), out[i])
            return out
        lengths = [int(self.lengths[w]) for w in windows]
        out = np.zeros((len(windows), self.shape[0], max(lengths, default=1)), dtype=np.float16)
        for i, w in enumerate(windows):
            tree = self.trees[self.tree_of[w]]
            frames = np.empty((lengths[i], self.shape[0]), dtype=np.float16)
            tree.read_into(int(tree.spans[self.row_of[w], 0]), frames)
            out[i, :, :lengths[i]] = frames.T
        return out


def as_model_input(stored: torch.Tensor) -> torch.Tensor:
    """Float model input from stored arrays: uint8 pictures scaled to [0, 1], matrices as they are."""
    return stored.float().div_(255) if stored.dtype == torch.uint8 else stored.float()


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
            per_input[name] = {path.relative_to(tree).as_posix(): (path, utt) for path, utt in found}
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
        digests.update(read_tree_digests(next(iter(entry.values()))))  # each input of an entry: the same recordings
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


class EpochSampler(torch.utils.data.Sampler):
    """The windows of each batch of one epoch, in order: weighted draws with replacement (the balanced
    samplers) or each window once, fixed by `seed`, so that a resumed epoch draws what it drew before
    and starts at `start_batch`. Under DistributedDataParallel every process draws the same order
    and takes its share of each batch, so the processes together see what one process would."""

    def __init__(self, n_windows: int, batch_size: int, *, seed: int, weights: torch.Tensor | None = None,
                 start_batch: int = 0, rank: int = 0, world: int = 1):
        generator = torch.Generator().manual_seed(seed)
        order = (torch.multinomial(weights, n_windows, replacement=True, generator=generator) if weights is not None
                 else torch.randperm(n_windows, generator=generator))
        self.batches = batches(order, batch_size)
        self.start_batch, self.rank, self.world = start_batch, rank, world

    def __len__(self) -> int:
        return len(self.batches) - self.start_batch

    def __iter__(self):
        for batch in self.batches[self.start_batch:]:
            yield torch.tensor_split(batch, self.world)[self.rank]


class StoredBatches(torch.utils.data.Dataset):
    """Batches of an ImageSet as stored (uint8 pictures, float16 matrices) for a DataLoader whose sampler
    yields whole batches of window indices: float conversion and augmentation happen on the device."""

    def __init__(self, images: ImageSet):
        self.images = images

    def __getitem__(self, windows: torch.Tensor):
        return (windows, *self.images.stored(windows))


def window_loader(images: ImageSet, sampler: torch.utils.data.Sampler, *, workers: int, pin_memory: bool):
    """A DataLoader of stored batches; `workers` processes read them from the packed trees ahead of the step."""
    # its own generator: the loader's seed draw must not move the global one, which dropout replays on resume
    return torch.utils.data.DataLoader(StoredBatches(images), sampler=sampler, batch_size=None, num_workers=workers,
                                       pin_memory=pin_memory, prefetch_factor=4 if workers else None,
                                       generator=torch.Generator().manual_seed(0))
