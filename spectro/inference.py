"""The public API for new audio: `Predictor` (one checkpoint) and `EnsemblePredictor`, and
`load_predictor`, which gives whichever a checkpoint, a list or an ensemble file names.

Recordings go through the one preprocessing path (``spectro.audio``) and the scoring core
(``spectro.scoring``). Nothing here imports the trainer, TensorBoard, matplotlib or scikit-learn
(unless the checkpoint is a scikit-learn baseline), so predicting starts fast.

    >>> from spectro import Predictor
    >>> predictor = Predictor.load("checkpoints/demo/best.pt")
    >>> prediction = predictor.predict(samples, sample_rate)   # samples: (n,) or (n, channels)
    >>> prediction.label, prediction.probabilities, prediction.windows
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .allocator import keep_freed_memory
from .audio import Window, audio_windows, prepare_windows, to_mono
from .config import FeatureConfig, from_dict
from .data import as_model_input
from .ensemble_file import combine, read_ensemble
from .errors import ConfigError, SpectroError
from .features import feature_array
from .models import is_estimator, takes_lengths
from .normalise import relative_guard
from .scoring import resolve_device, scoring_autocast

log = logging.getLogger(__name__)


@dataclasses.dataclass
class WindowPrediction:
    start: float  # seconds in the recording's own clock
    end: float
    label: str
    probabilities: dict[str, float]


@dataclasses.dataclass
class Prediction:
    """One recording's result: the label, the class probabilities (the mean over its windows) and
    each window's own result; or, for an unreadable file, `error`."""

    path: str | None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    windows: list[WindowPrediction] | None = None
    error: str | None = None
    normalisation: dict | None = None  # which statistics normalised it (see Predictor.predict_files); None: none


@dataclasses.dataclass
class _Pending:
    """A recording whose windows are still being scored."""

    path: str | None
    windows: list[Window]
    probabilities: np.ndarray  # (windows, classes), filled as batches are scored
    error: str | None = None
    scored: int = 0
    statistics: dict | None = None  # per input: the band statistics that normalise its windows
    normalisation: dict | None = None  # how they were chosen, for the Prediction

    @property
    def done(self) -> bool:
        return self.error is not None or self.scored == len(self.windows)


class Predictor:
    """A trained model ready for new audio: loaded once, on one device, scoring windows in batches.

    Recordings go through the same path as training images (``spectro.audio.audio_windows``, then
    the checkpoint's feature settings), so predictions match what `spectro evaluate` reports.
    Memory stays bounded: at most `batch_size` windows are turned into features at a time, however
    long the recording.
    """

    def __init__(self, graph: nn.Module, checkpoint: dict, *, device: torch.device, batch_size: int = 8):
        """`graph` maps the inputs' tensors to probabilities: ``ProbabilityGraph(model, input_names)``, or
        its traced copy. `Predictor.load` builds both from a checkpoint file."""
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be a positive integer")
        keep_freed_memory()  # each window's spectrogram buffers are reused, not mapped afresh
        self.graph = graph.eval()
        self.checkpoint = checkpoint
        self.device = device
        self.batch_size = batch_size
        self.classes = tuple(checkpoint["classes"])
        training = checkpoint.get("normalisation", {})  # sets the guard's threshold, as evaluation does
        self.inputs = {name: relative_guard(from_dict(FeatureConfig, f), training.get(name, {}).values())
                       for name, f in checkpoint["inputs"].items()}
        self.audio = next(iter(self.inputs.values())).audio  # training checked that every input conditions alike
        self.reference: dict = {}
        self._reference_paths: list = []
        self.autocast = scoring_autocast(checkpoint, device)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto", batch_size: int = 8,
             cache: bool = True, reference: Iterable[str | os.PathLike] = ()) -> Predictor:
        """Read a checkpoint (full, or slim from `spectro export`) onto `device` (auto: CUDA, MPS, CPU).

        On the CPU, with `cache`, the model is kept as a traced copy under ``spectro.graph.cache_dir()``
        the first time, and later loads start from that copy without building the model (seconds faster).
        `reference`: recordings whose pooled band statistics normalise every input, for a model trained
        with ``normalise.mode`` speaker or corpus (say, a few minutes of the speaker to be heard); without
        them each recording is normalised with its own statistics.
        """
        from . import graph as traced
        from .checkpoint_file import build_model, load_checkpoint

        torch_device = resolve_device(device)
        state = load_checkpoint(path, map_location=torch_device)
        copy, where = traced.cached_graph(path) if cache and torch_device.type == "cpu" else (None, None)
        if copy is None:
            model = build_model(state, device=torch_device)
            copy = traced.ProbabilityGraph(model, list(state["inputs"]))
            if where is not None and not (is_estimator(model) or takes_lengths(model)):
                traced.store_graph(copy, {n: from_dict(FeatureConfig, f) for n, f in state["inputs"].items()}, where)
        predictor = cls(copy, state, device=torch_device, batch_size=batch_size)
        predictor.set_reference(list(reference))
        return predictor

    def set_reference(self, paths: list[str | os.PathLike]) -> None:
        """Normalise with the pooled statistics of these recordings (speaker or corpus modes)."""
        from .features import recording_statistics
        from .normalise import pooled

        self._reference_paths = list(paths)
        self.reference = {name: pooled(recording_statistics(prepare_windows(p, f.audio), f) for p in paths)
                          for name, f in self.inputs.items() if paths and f.normalise.grouped}
        per_file = [n for n, f in self.inputs.items()
                    if f.normalise.grouped and n not in self.reference]
        if per_file:
            log.warning("the model was trained with %s normalisation; without reference recordings each recording "
                        "is normalised with its own statistics", self.inputs[per_file[0]].normalise.mode)

    def _normalisation(self) -> dict | None:
        """The record of how a recording is normalised without grouping (speakers "files")."""
        grouped = [f for f in self.inputs.values() if f.normalise.grouped]
        if not grouped:
            return None
        return {"speakers": "files", "statistics": f"pooled over {len(self._reference_paths)} reference recording(s)"
                if self.reference else "the recording's own"}

    def statistics(self, windows: list[Window]) -> dict:
        """Per input, the statistics that normalise one recording's windows: the reference recordings' where
        given, else the recording's own (None where the input has no normalisation)."""
        from .features import recording_statistics

        return {name: None if f.normalise.mode == "none" else self.reference.get(name)
                or recording_statistics(windows, f) for name, f in self.inputs.items()}

    def window_inputs(self, window: Window, statistics: dict) -> dict[str, np.ndarray]:
        """What the model reads for one window, per input (`statistics`: the recording's, from `statistics`)."""
        return {name: feature_array(window.samples, features, statistics[name])
                for name, features in self.inputs.items()}

    @torch.no_grad()
    def score_inputs(self, inputs: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
        """One forward pass over windows of one shape (from `window_inputs`, of any recordings): their class
        probabilities, (windows, classes) float32. A window scores the same alone or in any batch."""
        tensors = [as_model_input(torch.from_numpy(np.stack([arrays[name] for arrays in inputs]))).to(self.device)
                   for name in self.inputs]
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            return self.graph(*tensors).float().cpu().numpy()

    def predict(self, samples, sample_rate: int | None = None) -> Prediction:
        """Score one recording: samples, shape (n,) or (n, channels), at `sample_rate` (any), or the path of
        an audio file (its own rate is used; `sample_rate` must then be left out).

        Raises ``spectro.errors.DataError`` for unreadable, empty, silent or non-finite audio.
        """
        if isinstance(samples, (str, os.PathLike)):
            if sample_rate is not None:
                raise ConfigError(f"predict({str(samples)!r}, {sample_rate}): a file is read at its own rate; leave "
                                  "out sample_rate, or pass samples")
            windows = prepare_windows(samples, self.audio)
            return next(self._score([(str(samples), lambda: windows)]))
        if sample_rate is None:
            raise ConfigError("predict(samples) needs their sample_rate")
        windows = audio_windows(to_mono(samples, orig_sr=sample_rate, sr=self.audio.sample_rate, source="samples"),
                                self.audio)
        return next(self._score([(None, lambda: windows)]))

    def predict_files(self, paths: Iterable[str | os.PathLike], *, speakers: str = "files") -> Iterator[Prediction]:
        """Yield one Prediction per file, in order; windows of several files share batches.

        `speakers` says who the files are, for a model trained with speaker or corpus normalisation:
        ``files`` (each recording normalised with its own statistics, or the reference's), ``one`` (one
        speaker or source: the pooled statistics of all the files), or ``pseudo`` (the speakers are unknown:
        pseudo-speakers clustered from a speaker encoder's embeddings, guarded, by the rule evaluation
        applies to corpora without speaker labels). The last two read every file before scoring any, and
        use the files' own audio (transductive); each Prediction's `normalisation` says what was done.
        A file that cannot be read or used gets `error`, and the others go on.
        """
        if speakers not in SPEAKER_RULES:
            raise ConfigError(f"speakers={speakers!r} must be one of {list(SPEAKER_RULES)}")
        if speakers == "files":
            return self._score((str(p), lambda p=p: prepare_windows(p, self.audio)) for p in paths)
        if self.reference:
            raise ConfigError(f"speakers={speakers!r} groups the inputs themselves; it cannot be combined with "
                              "reference recordings (--normalise-with)")
        paths = [str(p) for p in paths]
        return self._score(((p, lambda p=p: prepare_windows(p, self.audio)) for p in paths),
                           InputGroups.formed(paths, self.inputs, speakers))

    def _score(self, sources: Iterable[tuple[str | None, Callable[[], list[Window]]]],
               groups: InputGroups | None = None) -> Iterator[Prediction]:
        waiting: collections.deque[_Pending] = collections.deque()  # in input order
        batch: list[tuple[_Pending, int, dict[str, np.ndarray]]] = []
        for path, load in sources:
            try:
                windows, error = load(), None
            except SpectroError as failure:
                windows, error = [], str(failure)
            pending = _Pending(path, windows, np.empty((len(windows), len(self.classes)), np.float32), error=error)
            if windows:
                pending.statistics, pending.normalisation = (self.statistics(windows), self._normalisation()) \
                    if groups is None else groups.of(path, windows)
            waiting.append(pending)
            for index, window in enumerate(pending.windows):
                arrays = self.window_inputs(window, pending.statistics)
                if batch and any(a.shape != batch[0][2][n].shape for n, a in arrays.items()):
                    self._run(batch)  # never pad: a window scores the same alone or in any batch
                    batch = []
                batch.append((pending, index, arrays))
                if len(batch) == self.batch_size:
                    self._run(batch)
                    batch = []
                    yield from _finished(waiting, self.classes)
            yield from _finished(waiting, self.classes)
        self._run(batch)
        yield from _finished(waiting, self.classes)

    def _run(self, batch: list[tuple[_Pending, int, dict[str, np.ndarray]]]) -> None:
        if not batch:
            return
        probabilities = self.score_inputs([arrays for _, _, arrays in batch])
        for (pending, index, _), p in zip(batch, probabilities):
            pending.probabilities[index] = p
            pending.scored += 1


def _finished(waiting: collections.deque, classes: tuple[str, ...]) -> Iterator[Prediction]:
    """Predictions of the leading recordings whose windows are all scored, in input order."""
    while waiting and waiting[0].done:
        pending = waiting.popleft()
        if pending.error is not None:
            yield Prediction(pending.path, error=pending.error)
        else:
            yield recording_prediction(pending.path, pending.windows, pending.probabilities, classes,
                                       normalisation=pending.normalisation)


def recording_prediction(path: str | None, windows: Sequence[Window], probabilities: np.ndarray,
                         classes: Sequence[str], *, normalisation: dict | None = None) -> Prediction:
    """A recording's Prediction from its windows' probabilities, (windows, classes): their mean decides."""
    as_dict = lambda p: {c: float(v) for c, v in zip(classes, p)}  # noqa: E731
    mean = probabilities.mean(axis=0)
    return Prediction(path, label=classes[int(mean.argmax())], probabilities=as_dict(mean), windows=[
        WindowPrediction(w.start, w.end, classes[int(p.argmax())], as_dict(p)) for w, p in zip(windows, probabilities)],
        normalisation=normalisation)

SPEAKER_RULES = ("files", "one", "pseudo")


@dataclasses.dataclass
class InputGroups:
    """The groups of a batch of input files, per input of the model that normalises by speaker or corpus:
    one group of all the files (``one``) or encoder pseudo-speakers (``pseudo``), formed and guarded by
    ``spectro.normalise.GroupStatistics`` exactly as the image job forms a corpus's groups."""

    rule: str
    groups: dict[str, object]  # input name -> GroupStatistics over the files
    inputs: dict[str, FeatureConfig]

    @classmethod
    def formed(cls, paths: Sequence[str], inputs: dict[str, FeatureConfig], rule: str) -> InputGroups:
        """Read every file once for its statistics (and, for ``pseudo``, its speaker embedding); files that
        cannot be read are left out here and get their error when scored."""
        from .audio import load_audio
        from .corpora import Utterance
        from .features import recording_statistics
        from .normalise import GroupStatistics
        from .speakers import embed

        grouped = {n: f for n, f in inputs.items() if f.normalise.grouped}
        audio = next(iter(inputs.values())).audio  # one conditioning for every input (checked at training)
        found: dict[str, dict] = collections.defaultdict(dict)
        embeddings, readable = {}, []
        for path in paths if grouped else []:
            try:
                y = load_audio(path, sr=audio.sample_rate)
                windows = audio_windows(y, audio)
            except SpectroError:
                continue
            readable.append(path)
            for name, f in grouped.items():
                found[name][path] = recording_statistics(windows, f)
            if rule == "pseudo":
                embeddings[path] = embed(y, audio.sample_rate)
        utterances = [Utterance(p, "inputs", p if rule == "pseudo" else "inputs", "unknown", "und") for p in readable]
        groups = {}
        for name, f in grouped.items():
            settings = dataclasses.replace(f, normalise=dataclasses.replace(f.normalise, unknown_speakers="encoder"))
            groups[name] = GroupStatistics(f.normalise.mode, {}, {}).extended(utterances, found[name], settings,
                                                                             embeddings)
        return cls(rule, groups, inputs)

    def of(self, path: str, windows: list[Window]) -> tuple[dict, dict]:
        """Per input, the statistics that normalise the file at `path`, and the record of its group."""
        from .features import recording_statistics

        statistics, record = {}, {"speakers": self.rule, "inputs": {}}
        for name, f in self.inputs.items():
            if name in self.groups and path in self.groups[name].assignment:
                found = self.groups[name]
                statistics[name] = found.of_recording(path)
                record["inputs"][name] = {"group": found.assignment[path], "groups": len(found.groups),
                                          "recordings": len(found.assignment), "guard": found.guard.get("inputs")}
            else:  # no grouping for this input (normalise.mode none or utterance)
                statistics[name] = None if f.normalise.mode == "none" else recording_statistics(windows, f)
        return statistics, record


class EnsemblePredictor:
    """Several `Predictor`s, one per member; a recording's probabilities are their weighted mean.

    Members may read different features and windows, so an ensemble's predictions carry no
    per-window results.
    """

    def __init__(self, predictors: Sequence[Predictor], weights: Sequence[float]):
        classes = {p.classes for p in predictors}
        if len(classes) > 1:
            raise ConfigError(f"ensemble members decide among different classes: {sorted(classes)}")
        self.predictors, self.weights = list(predictors), list(weights)
        self.classes = predictors[0].classes
        corpora = {c for p in predictors for c in p.checkpoint.get("train_corpora", [])}
        self.checkpoint = {"train_corpora": sorted(corpora)}

    def predict(self, samples, sample_rate: int | None = None) -> Prediction:
        return self.combine([p.predict(samples, sample_rate) for p in self.predictors])

    def predict_files(self, paths: Iterable[str | os.PathLike], *, speakers: str = "files") -> Iterator[Prediction]:
        paths = list(paths)
        each = zip(*(p.predict_files(paths, speakers=speakers) for p in self.predictors))
        return map(lambda results: self.combine(list(results)), each)

    def combine(self, results: list[Prediction]) -> Prediction:
        """The members' predictions of one recording (in member order) as the ensemble's: the first error, or
        the weighted mean of their probabilities."""
        failed = next((r for r in results if r.error is not None), None)
        if failed is not None:
            return Prediction(failed.path, error=failed.error)
        mean = combine([np.array([r.probabilities[c] for c in self.classes]) for r in results], self.weights)
        normalisation = {f"member {i + 1}": r.normalisation for i, r in enumerate(results) if r.normalisation}
        return Prediction(results[0].path, label=self.classes[int(mean.argmax())],
                          probabilities={c: float(v) for c, v in zip(self.classes, mean)},
                          normalisation=normalisation or None)


def load_predictor(specs: Sequence[str | os.PathLike], **options) -> Predictor | EnsemblePredictor:
    """A `Predictor` for one checkpoint, or an `EnsemblePredictor` for several or for an ensemble file;
    `options` go to ``Predictor.load``."""
    ensemble = read_ensemble(specs)
    predictors = [Predictor.load(m.checkpoint, **options) for m in ensemble.members]
    ensemble.check_classes([p.classes for p in predictors], ", ".join(map(str, specs)))
    if len(predictors) == 1:
        return predictors[0]
    return EnsemblePredictor(predictors, [m.weight for m in ensemble.members])
