"""Inference: the device, the forward call, window probabilities, and `Predictor`, the public API.

Training (validation), evaluation and prediction all score through these functions: a model
scores windows, and a recording's probabilities are the mean of its windows' probabilities.
Nothing here imports the trainer, TensorBoard, matplotlib or scikit-learn, so predicting starts fast.

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
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .allocator import keep_freed_memory
from .audio import Window, audio_windows, prepare_windows, to_mono
from .config import FeatureConfig, from_dict
from .data import SINGLE_INPUT, as_model_input, batches
from .errors import ConfigError, SpectroError
from .features import feature_array

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a named device must exist."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available.get(name):
        raise ConfigError(f"device={name!r} is not available on this machine; choose one of "
                          f"{['auto', *(d for d, ok in available.items() if ok)]}")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of a `train.precision` on `device` (None: full float32)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def scoring_autocast(checkpoint: dict, device: torch.device) -> torch.dtype | None:
    """Autocast for scoring a checkpoint's model on `device`: its training precision on a GPU, full
    precision on other devices (where autocast is slower), the same for evaluate and predict."""
    if device.type != "cuda":
        return None
    return autocast_dtype(checkpoint["config"].get("train", {}).get("precision", "auto"), device)


def forward(model: nn.Module, inputs: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor]) -> torch.Tensor:
    """Call a multi-input model with the mapping, a single-input model with its one tensor (and its
    lengths in frames, for sequence models); through any DistributedDataParallel wrapper."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "input_names"):
        return model(inputs)
    if getattr(inner, "takes_lengths", False):
        return model(inputs[SINGLE_INPUT], lengths[SINGLE_INPUT].to(inputs[SINGLE_INPUT].device))
    return model(inputs[SINGLE_INPUT])


def check_lengths(model: nn.Module, images) -> None:
    """Refuse padded inputs of different lengths for a model that cannot mask the padding."""
    if getattr(model, "takes_lengths", False) or getattr(model, "is_estimator", False):
        return
    for name, lengths in images.lengths.items():
        if len(lengths) and lengths.min() != lengths.max():
            raise ConfigError(f"input {name!r} holds utterances of different lengths, which this model would read "
                              "with their padding; render it with a fixed audio.duration, or use a sequence model "
                              "(lstm, bilstm_attention, conv1d)")


@torch.no_grad()
def window_probabilities(model: nn.Module, images, *, device: torch.device, batch_size: int = 64,
                         channels_last: bool = False, autocast: torch.dtype | None = None,
                         windows: torch.Tensor | None = None) -> torch.Tensor:
    """Class probabilities (W, C) of the windows of an ``ImageSet`` (all, or `windows`), in order,
    `batch_size` at a time, under `autocast` if given."""
    check_lengths(model, images)
    model.eval()
    out = []
    for index in batches(torch.arange(images.n_windows) if windows is None else windows, batch_size):
        stored, lengths, _ = images.stored(index)
        inputs = {name: as_model_input(x.to(device, non_blocking=True)).contiguous(
            memory_format=torch.channels_last if channels_last and x.ndim == 4 else torch.contiguous_format)
            for name, x in stored.items()}
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            out.append(torch.softmax(forward(model, inputs, lengths).float(), dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0, len(images.classes))


@torch.no_grad()
def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adapt_batchnorm(model: nn.Module, images, *, device: torch.device, batch_size: int = 64) -> int:
    """AdaBN (Li et al. 2016): replace every BatchNorm layer's running statistics by those of `images`'
    windows (an unlabelled corpus), leaving every learnt weight alone. Returns the number of layers."""
    norms = batchnorm_layers(model)
    if not norms:
        raise ConfigError(f"{type(model).__name__} has no BatchNorm layer to adapt; leave out --adabn")
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not an exponential one
        m.train()
    for index in batches(torch.arange(images.n_windows), batch_size):
        inputs, lengths, _ = images.batch(index)
        forward(model, {name: x.to(device) for name, x in inputs.items()}, lengths)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return len(norms)


def utterance_means(values: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of the rows of `values` (W, C) per utterance: ``owner[i]`` is the utterance of row i."""
    sums = torch.zeros(n, values.shape[1], dtype=values.dtype).index_add_(0, owner, values)
    return sums / torch.bincount(owner, minlength=n).clamp_min(1)[:, None].to(values.dtype)


def predict_proba(model: nn.Module, images, *, device: torch.device, batch_size: int = 64,
                  channels_last: bool = False, autocast: torch.dtype | None = None) -> torch.Tensor:
    """Class probabilities (N, C) of every utterance of an ``ImageSet``: the mean over its windows."""
    windows = window_probabilities(model, images, device=device, batch_size=batch_size, channels_last=channels_last,
                                   autocast=autocast)
    return utterance_means(windows, images.owner, len(images))


class ProbabilityGraph(nn.Module):
    """A trained model as a function of its inputs' tensors (positional, in checkpoint order) that
    returns class probabilities: the form Predictor runs, and the one `spectro export` traces."""

    def __init__(self, model: nn.Module, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        lengths = {name: torch.full((x.shape[0],), x.shape[-1]) for name, x in zip(self.input_names, inputs)}
        return torch.softmax(forward(self.model, dict(zip(self.input_names, inputs)), lengths).float(), dim=1)


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


@dataclasses.dataclass
class _Pending:
    """A recording whose windows are still being scored."""

    path: str | None
    windows: list[Window]
    probabilities: np.ndarray  # (windows, classes), filled as batches are scored
    error: str | None = None
    scored: int = 0
    statistics: dict | None = None  # per input: the band statistics that normalise its windows

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
        self.inputs = {name: from_dict(FeatureConfig, f) for name, f in checkpoint["inputs"].items()}
        self.audio = next(iter(self.inputs.values())).audio  # training checked that every input conditions alike
        self.reference: dict = {}
        self.autocast = scoring_autocast(checkpoint, device)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto", batch_size: int = 8,
             cache: bool = True, reference: Iterable[str | os.PathLike] = ()) -> "Predictor":
        """Read a checkpoint (full, or slim from `spectro export`) onto `device` (auto: CUDA, MPS, CPU).

        On the CPU, with `cache`, the model is kept as a traced copy under ``spectro.graph.cache_dir()``
        the first time, and later loads start from that copy without building the model (seconds faster).
        `reference`: recordings whose pooled band statistics normalise every input, for a model trained
        with ``normalise.mode`` speaker or corpus (say, a few minutes of the speaker to be heard); without
        them each recording is normalised with its own statistics.
        """
        from . import graph as traced
        from .checkpoint import build_model, load_checkpoint

        torch_device = resolve_device(device)
        state = load_checkpoint(path, map_location=torch_device)
        copy, where = traced.cached_graph(path) if cache and torch_device.type == "cpu" else (None, None)
        if copy is None:
            model = build_model(state, device=torch_device)
            copy = ProbabilityGraph(model, list(state["inputs"]))
            if where is not None and not (getattr(model, "is_estimator", False) or getattr(model, "takes_lengths", False)):
                traced.store_graph(copy, {n: from_dict(FeatureConfig, f) for n, f in state["inputs"].items()}, where)
        predictor = cls(copy, state, device=torch_device, batch_size=batch_size)
        predictor.set_reference(list(reference))
        return predictor

    def set_reference(self, paths: list[str | os.PathLike]) -> None:
        """Normalise with the pooled statistics of these recordings (speaker or corpus modes)."""
        from .features import recording_statistics
        from .normalise import pooled

        self.reference = {name: pooled(recording_statistics(prepare_windows(p, f.audio), f) for p in paths)
                          for name, f in self.inputs.items() if paths and f.normalise.mode in ("speaker", "corpus")}
        per_file = [n for n, f in self.inputs.items() if f.normalise.mode in ("speaker", "corpus") and n not in self.reference]
        if per_file:
            log.warning("the model was trained with %s normalisation; without reference recordings each recording "
                        "is normalised with its own statistics", self.inputs[per_file[0]].normalise.mode)

    def _statistics(self, windows: list[Window]) -> dict:
        """Per input, the statistics that normalise these windows (None where the input has no normalisation)."""
        from .features import recording_statistics

        return {name: None if f.normalise.mode == "none" else self.reference.get(name)
                or recording_statistics(windows, f) for name, f in self.inputs.items()}

    def predict(self, samples, sample_rate: int) -> Prediction:
        """Score one recording given as samples, shape (n,) or (n, channels), at any sample rate.

        Raises ``spectro.errors.DataError`` for empty, silent or non-finite audio.
        """
        windows = audio_windows(to_mono(samples, orig_sr=sample_rate, sr=self.audio.sample_rate, source="samples"),
                                self.audio)
        return next(self._score([(None, lambda: windows)]))

    def predict_files(self, paths: Iterable[str | os.PathLike]) -> Iterator[Prediction]:
        """Yield one Prediction per file, in order; windows of several files share batches.

        A file that cannot be read or used gets `error`, and the others go on.
        """
        return self._score((str(p), lambda p=p: prepare_windows(p, self.audio)) for p in paths)

    def _score(self, sources: Iterable[tuple[str | None, Callable[[], list[Window]]]]) -> Iterator[Prediction]:
        waiting: collections.deque[_Pending] = collections.deque()  # in input order
        batch: list[tuple[_Pending, int, dict[str, np.ndarray]]] = []
        for path, load in sources:
            try:
                windows, error = load(), None
            except SpectroError as failure:
                windows, error = [], str(failure)
            pending = _Pending(path, windows, np.empty((len(windows), len(self.classes)), np.float32), error=error,
                               statistics=self._statistics(windows) if windows else None)
            waiting.append(pending)
            for index, window in enumerate(pending.windows):
                arrays = {name: feature_array(window.samples, features, pending.statistics[name])
                          for name, features in self.inputs.items()}
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

    @torch.no_grad()
    def _run(self, batch: list[tuple[_Pending, int, dict[str, np.ndarray]]]) -> None:
        if not batch:
            return
        inputs = [as_model_input(torch.from_numpy(np.stack([arrays[name] for _, _, arrays in batch]))).to(self.device)
                  for name in self.inputs]
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            probabilities = self.graph(*inputs).float().cpu().numpy()
        for (pending, index, _), p in zip(batch, probabilities):
            pending.probabilities[index] = p
            pending.scored += 1


def _finished(waiting: collections.deque, classes: tuple[str, ...]) -> Iterator[Prediction]:
    """Predictions of the leading recordings whose windows are all scored, in input order."""
    while waiting and waiting[0].done:
        pending = waiting.popleft()
        if pending.error is not None:
            yield Prediction(pending.path, error=pending.error)
            continue
        as_dict = lambda p: {c: float(v) for c, v in zip(classes, p)}  # noqa: E731
        mean = pending.probabilities.mean(axis=0)
        yield Prediction(pending.path, label=classes[int(mean.argmax())], probabilities=as_dict(mean), windows=[
            WindowPrediction(w.start, w.end, classes[int(p.argmax())], as_dict(p))
            for w, p in zip(pending.windows, pending.probabilities)])
