"""1-D CNNs over time on MFCC matrices: the "CNN model 1/2" baselines of SER notebooks.

Input (batch, n_mfcc, frames). Model 1: convolution, ReLU, dropout 0.1 and max-pooling blocks,
flatten, dense softmax. Model 2: batch normalisation, more filters, and a hidden dense layer.
An adaptive max-pool before flattening lets any fixed utterance length through.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .registry import register_model

N_MFCC = 40


class MfccCnn(nn.Module):
    def __init__(self, num_classes: int, *, channels: tuple[int, ...], batch_norm: bool, hidden: int = 0,
                 drop_rate: float = 0.1, kernel_size: int = 5, pool: int = 4, n_mfcc: int = N_MFCC):
        super().__init__()
        layers, width = [], n_mfcc
        for out in channels:
            layers += [nn.Conv1d(width, out, kernel_size, padding=kernel_size // 2)]
            layers += [nn.BatchNorm1d(out)] if batch_norm else []
            layers += [nn.ReLU(), nn.Dropout(drop_rate), nn.MaxPool1d(pool, ceil_mode=True)]
            width = out
        layers += [nn.AdaptiveMaxPool1d(8), nn.Flatten()]
        if hidden:
            layers += [nn.Linear(width * 8, hidden), nn.ReLU(), nn.Dropout(drop_rate)]
        self.features = nn.Sequential(*layers)
        self.n_mfcc = n_mfcc
        self.num_features = hidden or width * 8
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.n_mfcc:
            raise ConfigError(f"MFCC CNN input shape {tuple(x.shape)} must be (batch, {self.n_mfcc}, frames); "
                              "train it on trees made with --feature mfcc")
        return self.classifier(self.features(x))

    def new_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())  # no pretraining: everything starts untrained


def _create(name: str, num_classes: int, *, pretrained: bool, weights: str | Path | None, drop_rate: float,
            in_channels: int | None = None, **architecture) -> MfccCnn:
    if pretrained or weights is not None:
        raise ConfigError(f"model {name!r} has no ImageNet pretraining; set model.pretrained=false")
    return MfccCnn(num_classes, drop_rate=drop_rate, n_mfcc=in_channels or N_MFCC, **architecture)


@register_model
def mfcc_cnn1(num_classes: int, **kwargs) -> MfccCnn:
    return _create("mfcc_cnn1", num_classes, channels=(64, 128), batch_norm=False, **kwargs)


@register_model
def mfcc_cnn2(num_classes: int, **kwargs) -> MfccCnn:
    return _create("mfcc_cnn2", num_classes, channels=(128, 256, 256), batch_norm=True, hidden=256, **kwargs)
