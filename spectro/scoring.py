"""The scoring core: the device, autocast, the forward call, window probabilities, embeddings and AdaBN.

A model scores windows, and a recording's probabilities are the mean of its windows'. Training
(validation and test scores), evaluation, ensembles, prediction and export all score through these
functions, so they agree. Nothing here imports the trainer, TensorBoard, matplotlib or scikit-learn.
"""

from __future__ import annotations

import torch
from torch import nn

from .data import SINGLE_INPUT, as_model_input, batches
from .errors import ConfigError
from .models import has_pooled_features, is_estimator, reads_mapping, takes_lengths


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
    if reads_mapping(model):
        return model(inputs)
    if takes_lengths(model):
        return model(inputs[SINGLE_INPUT], lengths[SINGLE_INPUT].to(inputs[SINGLE_INPUT].device))
    return model(inputs[SINGLE_INPUT])


def check_lengths(model: nn.Module, images) -> None:
    """Refuse padded inputs of different lengths for a model that cannot mask the padding."""
    if takes_lengths(model) or is_estimator(model):
        return
    for name, lengths in images.lengths.items():
        if len(lengths) and lengths.min() != lengths.max():
            raise ConfigError(f"input {name!r} holds utterances of different lengths, which this model would read "
                              "with their padding; render it with a fixed audio.duration, or use a sequence model "
                              "(lstm, bilstm_attention, conv1d)")


def _device_batches(images, windows: torch.Tensor, *, device: torch.device, batch_size: int, channels_last: bool):
    """Model inputs (by input name, on `device`) and lengths of `windows` of an ``ImageSet``, `batch_size`
    at a time: the one way scoring and embedding read windows."""
    for index in batches(windows, batch_size):
        stored, lengths, _ = images.stored(index)
        yield {name: as_model_input(x.to(device, non_blocking=True)).contiguous(
            memory_format=torch.channels_last if channels_last and x.ndim == 4 else torch.contiguous_format)
            for name, x in stored.items()}, lengths


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@torch.no_grad()
def window_probabilities(model: nn.Module, images, *, device: torch.device, batch_size: int = 64,
                         channels_last: bool = False, autocast: torch.dtype | None = None,
                         windows: torch.Tensor | None = None) -> torch.Tensor:
    """Class probabilities (W, C) of the windows of an ``ImageSet`` (all, or `windows`), in order,
    `batch_size` at a time, under `autocast` if given."""
    check_lengths(model, images)
    model.eval()
    out = []
    for inputs, lengths in _device_batches(images, torch.arange(images.n_windows) if windows is None else windows,
                                           device=device, batch_size=batch_size, channels_last=channels_last):
        with _autocast(device, autocast):
            out.append(torch.softmax(forward(model, inputs, lengths).float(), dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0, len(images.classes))


@torch.no_grad()
def recording_embeddings(model: nn.Module, images, *, device: torch.device, batch_size: int = 64,
                         autocast: torch.dtype | None = None) -> torch.Tensor:
    """Each recording's embedding (N, F): the mean over its windows of the pooled features the
    classifier reads, in eval mode.

    A recording is scored as the mean of its windows' probabilities, so the mean of its windows'
    features is the point of it that the classifier sees; it depends on the model, not on any labels.
    Only single-input ImageNet CNNs pool their features for a linear classifier (``pooled_and_logits``);
    other models are refused, not given some other layer's activations.
    """
    if not has_pooled_features(model):
        raise ConfigError(f"{type(model).__name__} has no pooled features to embed: embeddings come from "
                          "single-input ImageNet CNNs (not scikit-learn baselines, sequence or multi-input models)")
    model.eval()
    out = []
    for inputs, _ in _device_batches(images, torch.arange(images.n_windows), device=device, batch_size=batch_size,
                                     channels_last=False):
        with _autocast(device, autocast):
            out.append(model.pooled_and_logits(inputs[SINGLE_INPUT])[0].float().cpu())
    windows = torch.cat(out) if out else torch.empty(0, model.num_features)
    return utterance_means(windows, images.owner, len(images))


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


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
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
