"""A trained model as a graph from its inputs' tensors to class probabilities: what `Predictor` runs,
what `spectro export` traces, and a cache of traced copies that lets prediction start without
building the model.

Building an ImageNet model imports timm, whose torchvision dependency imports ``torch._dynamo``:
about two seconds before the first window is scored. The first time a checkpoint is used on the
CPU, `Predictor.load` traces it into TorchScript and keeps that copy under the cache folder,
named by the checkpoint's content; later loads read the copy (a tenth of a second) and never
import timm. The copy computes the same operations (tested to 1e-6) and is rebuilt whenever the
checkpoint, torch or spectro changes. Anything that goes wrong with the cache falls back to
building the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .config import FeatureConfig
from .errors import ConfigError
from .models import is_estimator, takes_lengths
from .scoring import forward

log = logging.getLogger(__name__)


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


def check_traceable(model: nn.Module, name: str, purpose: str) -> None:
    """Refuse models that have no fixed graph: scikit-learn pipelines and packed sequences."""
    if is_estimator(model):
        raise ConfigError(f"model {name!r} is a scikit-learn pipeline, which has no {purpose} here; use the "
                          "checkpoint (or `--format slim`) with spectro predict or spectro.Predictor")
    if takes_lengths(model):
        raise ConfigError(f"model {name!r} reads packed sequences of any length, which {purpose} cannot trace; use "
                          "the checkpoint (or `--format slim`) with spectro predict or spectro.Predictor")


def example_inputs(inputs: dict[str, FeatureConfig]) -> tuple[torch.Tensor, ...]:
    """Two windows per input, of the shape and float layout the model reads (a batch of one would
    let a tracer fix the batch size)."""
    from .data import as_model_input
    from .features import feature_array, feature_kind

    examples = []
    for features in inputs.values():
        if features.audio.duration is None and feature_kind(features.feature) == "matrix":
            raise ConfigError(f"input feature {features.feature!r} was rendered with audio.duration=null (any "
                              "length); a traced graph needs fixed-length windows")
        seconds = features.audio.duration or 3.0
        noise = np.random.default_rng(0).standard_normal(int(seconds * features.audio.sample_rate))
        window = feature_array((0.1 * noise).astype(np.float32), features)
        examples.append(as_model_input(torch.from_numpy(np.stack([window, window]))))
    return tuple(examples)


def trace(graph: nn.Module, examples: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream, but still the most portable format
        return torch.jit.trace(graph, examples, check_trace=False)


def save_traced(traced: torch.jit.ScriptModule, path: Path, *, extra_files: dict[str, str] | None = None) -> None:
    from .fileio import atomic_open

    with warnings.catch_warnings(), atomic_open(path, "wb", durable=False) as handle:
        warnings.simplefilter("ignore")
        torch.jit.save(traced, handle, _extra_files=extra_files or {})


def _load_traced(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")


def cache_dir() -> Path:
    """``$SPECTRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/spectro``, else ``~/.cache/spectro``."""
    if os.environ.get("SPECTRO_CACHE_DIR"):
        return Path(os.environ["SPECTRO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spectro"


def _cache_path(checkpoint: str | os.PathLike) -> Path:
    digest = hashlib.blake2b(f"{torch.__version__} {__version__}".encode(), digest_size=20)
    with open(checkpoint, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return cache_dir() / "traced" / f"{digest.hexdigest()}.pt"


def cached_graph(checkpoint: str | os.PathLike) -> tuple[torch.jit.ScriptModule | None, Path | None]:
    """The traced copy of `checkpoint` if one is cached, and where it is (or would be) kept."""
    path = _cache_path(checkpoint)
    try:
        return (_load_traced(path) if path.is_file() else None), path
    except Exception as error:  # a broken cache file: build the model, and keep a good copy in its place
        log.debug("traced copy %s unusable: %s", path, error)
        return None, path


def store_graph(graph: nn.Module, inputs: dict[str, FeatureConfig], path: Path) -> None:
    """Trace `graph` and keep it at `path`; silently skipped where that cannot be done."""
    try:
        save_traced(trace(graph, example_inputs(inputs)), path)
    except Exception as error:  # read-only home, a model the tracer cannot follow: predict without a cache
        log.debug("not caching a traced copy at %s: %s", path, error)
