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

import torch

from .checkpoint_file import load_trained_model, save_checkpoint, slim_state
from .config import FeatureConfig, from_dict
from .ensemble_file import is_ensemble_file
from .errors import ConfigError
from .fileio import atomic_open
from .graph import ProbabilityGraph, check_traceable, example_inputs, save_traced, trace
from .scoring import resolve_device

FORMATS = ("slim", "onnx", "torchscript")


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, format: str, device: str = "cpu") -> Path:
    """Write `checkpoint` to `out` as ``slim``, ``onnx`` or ``torchscript``; returns `out`.

    Every format first builds the model from the checkpoint, so what cannot be loaded later (damaged
    weights, a scikit-learn part holding a type spectro does not trust) is refused now, not written.
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} must be one of {list(FORMATS)}")
    if is_ensemble_file(checkpoint):
        raise ConfigError(f"{checkpoint} is an ensemble file, and export takes one checkpoint: export each member "
                          "named in its 'members' list, and give the ensemble file itself to spectro evaluate or "
                          "predict")
    out = Path(out)
    torch_device = resolve_device(device)
    model, state = load_trained_model(checkpoint, device=torch_device)
    if format == "slim":
        save_checkpoint(slim_state(state), out)
        return out
    check_traceable(model, state["model_name"], f"{format} graph")
    inputs = {name: from_dict(FeatureConfig, f) for name, f in state["inputs"].items()}
    graph = ProbabilityGraph(model, list(inputs))
    examples = tuple(x.to(torch_device) for x in example_inputs(inputs))
    metadata = json.dumps({"classes": state["classes"], "model": state["model_name"],
                           "inputs": state["inputs"], "output": "probabilities per window"})
    if format == "onnx":
        _export_onnx(graph, examples, out, metadata)
    else:
        save_traced(trace(graph, examples), out, extra_files={"spectro.json": metadata})
    return out


def _export_onnx(graph: ProbabilityGraph, examples: tuple[torch.Tensor, ...], out: Path, metadata: str) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it, and onnxscript)
    except ImportError:
        raise ConfigError("ONNX export needs the onnx and onnxscript packages: pip install 'spectro-ser[export]' (or, "
                          "in a checkout of spectro, pip install -e '.[export]')") from None
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
