"""`spectro export`: a checkpoint as a slim checkpoint, an ONNX graph, or a TorchScript module.

The graphs take what the model reads: for each input, a float32 batch of windows as
``spectro.features.feature_array`` makes them, uint8 pictures scaled to [0, 1] (N, 3, H, W) or
matrices (N, F, T); they return class probabilities (N, classes) per window. A recording's
probabilities are the mean over its windows. The feature settings, classes and input names travel
inside the file (ONNX metadata ``spectro``, TorchScript extra file ``spectro.json``), so the
preprocessing can be reproduced without the checkpoint.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint, load_trained_model, save_checkpoint, slim_state
from .config import FeatureConfig, from_dict
from .errors import ConfigError
from .fileio import atomic_open

FORMATS = ("slim", "onnx", "torchscript")


class ProbabilityGraph(nn.Module):
    """A trained model as a function of positional input tensors, returning softmax probabilities."""

    def __init__(self, model: nn.Module, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        from .inference import forward

        lengths = {name: torch.full((x.shape[0],), x.shape[-1]) for name, x in zip(self.input_names, inputs)}
        return torch.softmax(forward(self.model, dict(zip(self.input_names, inputs)), lengths), dim=1)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, format: str) -> Path:
    """Write `checkpoint` to `out` as ``slim``, ``onnx`` or ``torchscript``; returns `out`."""
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} must be one of {list(FORMATS)}")
    out = Path(out)
    if format == "slim":
        save_checkpoint(slim_state(load_checkpoint(checkpoint)), out)
        return out
    model, state = load_trained_model(checkpoint)
    _check_exportable(model, state["model_name"], format)
    inputs = {name: from_dict(FeatureConfig, f) for name, f in state["inputs"].items()}
    graph = ProbabilityGraph(model.eval(), list(inputs))
    examples = tuple(torch.from_numpy(_example_input(f)) for f in inputs.values())
    metadata = json.dumps({"classes": state["classes"], "model": state["model_name"],
                           "inputs": state["inputs"], "output": "probabilities per window"})
    if format == "onnx":
        _export_onnx(graph, examples, out, metadata)
    else:
        _export_torchscript(graph, examples, out, metadata)
    return out


def _check_exportable(model: nn.Module, name: str, format: str) -> None:
    if getattr(model, "is_estimator", False):
        raise ConfigError(f"model {name!r} is a scikit-learn pipeline, which has no {format} graph here; use the "
                          "checkpoint (or `--format slim`) with spectro predict or spectro.Predictor")
    if getattr(model, "takes_lengths", False):
        raise ConfigError(f"model {name!r} reads packed sequences of any length, which {format} cannot trace; use the "
                          "checkpoint (or `--format slim`) with spectro predict or spectro.Predictor")


def _example_input(features: FeatureConfig) -> np.ndarray:
    """Two windows of the shape this input takes, in the model's float layout."""
    from .data import as_model_input
    from .features import feature_array

    if features.audio.duration is None and features.feature in ("mfcc", "frames", "stats"):
        raise ConfigError(f"input feature {features.feature!r} was rendered with audio.duration=null (any length); "
                          "an exported graph needs fixed-length windows")
    seconds = features.audio.duration or 3.0
    noise = np.random.default_rng(0).standard_normal(int(seconds * features.audio.sample_rate)).astype(np.float32)
    window = feature_array(0.1 * noise, features)
    return as_model_input(torch.from_numpy(np.stack([window, window]))).numpy()  # a batch of 1 would fix the size


def _export_onnx(graph: ProbabilityGraph, examples: tuple[torch.Tensor, ...], out: Path, metadata: str) -> None:
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx and onnxscript packages: pip install 'spectro[export]'") from None
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, examples, dynamo=True, input_names=graph.input_names,
                                    output_names=["probabilities"],
                                    dynamic_shapes=(tuple({0: batch} for _ in examples),), verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "spectro", metadata
    with atomic_open(out, "wb") as handle:
        handle.write(proto.SerializeToString())


def _export_torchscript(graph: ProbabilityGraph, examples: tuple[torch.Tensor, ...], out: Path, metadata: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream, but still the most portable format
        traced = torch.jit.trace(graph, examples)
        with atomic_open(out, "wb") as handle:
            torch.jit.save(traced, handle, _extra_files={"spectro.json": metadata})
