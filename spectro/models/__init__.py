"""Models: a registry with one file per family, and the capability protocol the rest of spectro relies on.

Every model is an ``nn.Module`` built by ``create_model(name, num_classes, ...)``. Beyond ``forward``,
the code outside this package asks a model only what this protocol says, through the functions below
(never with ``getattr`` of its own):

- ``input_names`` (tuple of str, multi-input models only): ``forward`` takes a mapping from input name
  to tensor; a single-input model takes one tensor, read from the input ``SINGLE_INPUT``.
- ``takes_lengths`` (bool, sequence models): ``forward(x, lengths)`` with each row's true frame count,
  so that padding never reaches the output.
- ``is_estimator`` (bool, scikit-learn baselines): fitted in one go by ``fit(X, y, sample_weight)``, not by
  gradient descent.
- ``new_parameters()``: the parameters that start untrained (they learn at the full rate, never frozen).
- ``pooled_and_logits(x)`` and ``num_features`` (single-input ImageNet CNNs): the pooled features the
  classifier reads, for domain-adversarial training and embeddings.
"""

from __future__ import annotations

from torch import nn

from .registry import MODELS, create_model, list_models, register_model

SINGLE_INPUT = "image"  # the input of single-input models (a plain data entry's tree feeds it)


def _inner(model: nn.Module) -> nn.Module:
    """The model itself inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)


def input_names(model: nn.Module) -> tuple[str, ...]:
    """The names of the inputs `model` reads: several for a multi-input model, else ``(SINGLE_INPUT,)``."""
    return tuple(getattr(_inner(model), "input_names", (SINGLE_INPUT,)))


def reads_mapping(model: nn.Module) -> bool:
    """A multi-input model: ``forward`` takes a mapping from input name to tensor."""
    return hasattr(_inner(model), "input_names")


def takes_lengths(model: nn.Module) -> bool:
    """A sequence model: ``forward(x, lengths)``."""
    return bool(getattr(_inner(model), "takes_lengths", False))


def is_estimator(model: nn.Module) -> bool:
    """A scikit-learn baseline, fitted in one go instead of by gradient descent."""
    return bool(getattr(_inner(model), "is_estimator", False))


def has_pooled_features(model: nn.Module) -> bool:
    """A single-input ImageNet CNN with ``pooled_and_logits`` and ``num_features``."""
    return hasattr(_inner(model), "pooled_and_logits")


from . import backbones, classical, fusion, mfcc_cnn, sequence  # noqa: E402,F401  (registration)

__all__ = ["MODELS", "SINGLE_INPUT", "create_model", "has_pooled_features", "input_names", "is_estimator",
           "list_models", "reads_mapping", "register_model", "takes_lengths"]
