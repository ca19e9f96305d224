"""The model registry and factory: ``create_model(name, num_classes, pretrained=..., weights=...)``.

Adding a model is one decorated constructor in the file of its family (timm's ``_registry.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

MODELS = Registry("model")


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Decorator registering a constructor under its function name, or under `name`."""
    return MODELS.register(name)(fn) if fn is not None else MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def create_model(name: str, num_classes: int, *, pretrained: bool = False,
                 weights: str | Path | dict[str, str] | None = None, drop_rate: float = 0.0,
                 in_channels: int | None = None) -> nn.Module:
    """Build a registered model with a fresh `num_classes`-way classifier.

    Parameters
    ----------
    name : str
        A registered name, see ``list_models()``.
    num_classes : int >= 2
    pretrained : bool
        Start from ImageNet weights (packaged, cached, or downloaded); an error if none can be had.
    weights : path or dict, optional
        A torchvision or timm state dict to start from instead; implies pretrained. Multi-input
        models take one per branch: ``{"mel": path, "gd": path}``.
    drop_rate : float in [0, 1)
        Dropout before the classifier.
    in_channels : int, optional
        Features per frame of a sequence or matrix input (e.g. 15 for ``frames``); image models
        read RGB and take none.
    """
    constructor = MODELS.get(name)
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} must be at least 2")
    if not 0 <= drop_rate < 1:
        raise ConfigError(f"drop_rate={drop_rate} must be in [0, 1)")
    extra = {} if in_channels is None else {"in_channels": in_channels}
    return constructor(num_classes, pretrained=pretrained, weights=weights, drop_rate=drop_rate, **extra)
